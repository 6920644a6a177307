// Pieces every jax_pccl FFI handler needs: dtype mapping, error conversion
// (type name first, so Python can classify JaxRuntimeErrors), leaf shapes.
#pragma once
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>

#include "common/dtype.h"
#include "common/errors.h"
#include "peer/communicator.h"
#include "xla/ffi/api/ffi.h"

namespace pccl {

std::optional<DType> to_engine_dtype(xla::ffi::DataType t);
xla::ffi::Error to_ffi_error(const PcclError& e);
xla::ffi::Error precondition(const char* message);  // "PcclError: message"
// The exception being handled (call inside a catch block) as an FFI error.
// Handlers return it: no exception may cross the FFI boundary, a C ABI.
xla::ffi::Error current_exception_error() noexcept;
// The same for an exception caught earlier.
xla::ffi::Error exception_error(std::exception_ptr failure) noexcept;
LeafDescriptor describe_leaf(const xla::ffi::AnyBuffer& buffer, size_t index, size_t count);

// What every all_reduce handler (CPU, CUDA) checks before it touches a
// buffer: the communicator the function was traced with (set in *comm), the
// op and the format, one result per operand plus the world size.
xla::ffi::Error check_all_reduce_call(int64_t comm_handle, int32_t op, int32_t quantization,
                                      size_t operands, size_t results,
                                      std::shared_ptr<Communicator>* comm);
// Leaf i of an all_reduce as the engine's call, reading `in` and writing
// `out_data` (host memory the engine may use); an error for a bad dtype.
xla::ffi::Error all_reduce_leaf(const xla::ffi::AnyBuffer& in, void* in_data, void* out_data,
                                size_t index, size_t count, int32_t op, int32_t quantization,
                                AllReduceCall* call);

}  // namespace pccl
