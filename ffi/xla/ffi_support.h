// Pieces every jax_pccl FFI handler needs: dtype mapping, error conversion
// (type name first, so Python can classify JaxRuntimeErrors), leaf shapes.
#pragma once
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <utility>

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

// The attributes of a jax_pccl_collective custom call (python: ops/collective.py).
struct CollectiveAttrs {
  int64_t comm = 0;    // communicator handle (comm_registry.h)
  int32_t kind = 0;    // CollectiveKind
  int32_t op = 0;      // ReduceOp, for the kinds that reduce
  int32_t root = 0;    // broadcast
  int32_t world = 0;   // the group size the result shapes were traced for (0: any)
  int32_t quant = 0;   // Quantization (all_reduce)
};

// The operands, results and attributes of a collective call after whatever
// context a platform's handler binds first (CPU: none; CUDA: its stream):
// token, leaves -> token, results; the attributes of CollectiveAttrs.
template <typename Binding>
auto bind_collective_call(Binding binding) {
  return std::move(binding)
      .template Arg<xla::ffi::Token>()
      .RemainingArgs()
      .template Ret<xla::ffi::Token>()
      .RemainingRets()
      .template Attr<int64_t>("comm")
      .template Attr<int32_t>("kind")
      .template Attr<int32_t>("op")
      .template Attr<int32_t>("root")
      .template Attr<int32_t>("world")
      .template Attr<int32_t>("quant");
}

// What every collective handler (CPU, CUDA) checks before it touches a
// buffer: the communicator the function was traced with (set in *comm), the
// kind, op, root, world and format, one result per operand plus the world size.
xla::ffi::Error check_collective_call(const CollectiveAttrs& attrs, size_t operands,
                                      size_t results, std::shared_ptr<Communicator>* comm);
// Writes the trailing result of a collective call: int32 world, or int32[2]
// (world, rank), whichever the caller traced.
xla::ffi::Error write_group_facts(xla::ffi::AnyBuffer facts, int world, int rank);
// Leaf i of a collective as the engine's call, reading `in` and writing
// `out_data` (host memory the engine may use); an error for a bad dtype.
xla::ffi::Error collective_leaf(const CollectiveAttrs& attrs, const xla::ffi::AnyBuffer& in,
                                const void* in_data, void* out_data, size_t index, size_t count,
                                CollectiveCall* call);

// What every all_reduce_start handler (CPU, CUDA) checks before it touches
// a buffer: the communicator (set in *comm), op, quantization, and a tickets
// buffer of `ticket_elements` int32 for `leaves` operands (ticket_words.h).
xla::ffi::Error check_start_call(int64_t comm_handle, int32_t op, int32_t quantization,
                                 size_t leaves, size_t ticket_elements,
                                 std::shared_ptr<Communicator>* comm);
// Leaf i of an all_reduce_start as the engine's call, reading `in_data`.
xla::ffi::Error start_leaf(const xla::ffi::AnyBuffer& in, const void* in_data, size_t index,
                           size_t count, int32_t op, int32_t quantization, CollectiveCall* call);
// An all_reduce_wait whose communicator was closed after its start.
xla::ffi::Error closed_before_wait();

}  // namespace pccl
