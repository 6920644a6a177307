// Pieces every jax_pccl FFI handler needs: dtype mapping, error conversion
// (type name first, so Python can classify JaxRuntimeErrors), leaf shapes.
#pragma once
#include <cstdint>
#include <exception>
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

}  // namespace pccl
