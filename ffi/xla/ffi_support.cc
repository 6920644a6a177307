#include "xla/ffi_support.h"

#include <optional>
#include <string>

#include "collectives/quantization.h"
#include "xla/comm_registry.h"
#include "xla/ticket_words.h"

namespace ffi = xla::ffi;

namespace pccl {

std::optional<DType> to_engine_dtype(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F32: return DType::kFloat32;
    case ffi::DataType::F64: return DType::kFloat64;
    case ffi::DataType::F16: return DType::kFloat16;
    case ffi::DataType::BF16: return DType::kBFloat16;
    case ffi::DataType::S8: return DType::kInt8;
    case ffi::DataType::S16: return DType::kInt16;
    case ffi::DataType::S32: return DType::kInt32;
    case ffi::DataType::S64: return DType::kInt64;
    case ffi::DataType::U8: return DType::kUInt8;
    case ffi::DataType::U16: return DType::kUInt16;
    case ffi::DataType::U32: return DType::kUInt32;
    case ffi::DataType::U64: return DType::kUInt64;
    default: return std::nullopt;
  }
}

ffi::Error to_ffi_error(const PcclError& e) {
  auto code = e.kind() == ErrorKind::kMismatch ? ffi::ErrorCode::kInvalidArgument
                                               : ffi::ErrorCode::kUnavailable;
  return ffi::Error(code, std::string(error_kind_name(e.kind())) + ": " + e.what());
}

ffi::Error precondition(const char* message) {
  return ffi::Error(ffi::ErrorCode::kFailedPrecondition, std::string("PcclError: ") + message);
}

ffi::Error current_exception_error() noexcept {
  try {
    try {
      throw;
    } catch (const PcclError& e) {
      return to_ffi_error(e);
    } catch (const std::exception& e) {
      return ffi::Error::Internal(std::string("PcclError: ") + e.what());
    } catch (...) {
      return ffi::Error::Internal("PcclError: unknown exception");
    }
  } catch (...) {
    // Building the message failed too (out of memory): a bare code, no text.
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, "");
  }
}

ffi::Error exception_error(std::exception_ptr failure) noexcept {
  try {
    std::rethrow_exception(failure);
  } catch (...) {
    return current_exception_error();
  }
}

LeafDescriptor describe_leaf(const ffi::AnyBuffer& buffer, size_t index, size_t count) {
  LeafDescriptor leaf;
  auto dims = buffer.dimensions();
  leaf.dims.assign(dims.begin(), dims.end());
  leaf.leaf_index = static_cast<uint32_t>(index);
  leaf.leaf_count = static_cast<uint32_t>(count);
  return leaf;
}

xla::ffi::Error check_collective_call(const CollectiveAttrs& attrs, size_t operands,
                                      size_t results, std::shared_ptr<Communicator>* comm) {
  *comm = find_communicator(attrs.comm);
  if (!*comm) return precondition("the communicator this compiled function was traced with is closed: re-jit the function with the new Communicator (jitted functions keep the communicator they captured)");
  auto kind = static_cast<CollectiveKind>(attrs.kind);
  if (attrs.kind < 0 || attrs.kind > 255 || kind == CollectiveKind::kTopologyCheck ||
      attrs.kind > static_cast<int32_t>(CollectiveKind::kReduceScatter)) {
    return xla::ffi::Error::InvalidArgument("PcclError: invalid collective kind");
  }
  if (attrs.op < 0 || !reduce_op_valid(static_cast<uint8_t>(attrs.op))) {
    return xla::ffi::Error::InvalidArgument("PcclError: invalid reduce op");
  }
  if (attrs.quant < 0 || !quantization_valid(static_cast<uint8_t>(attrs.quant))) {
    return xla::ffi::Error::InvalidArgument("PcclError: invalid quantization");
  }
  if (attrs.root < 0 || attrs.world < 0) {
    return xla::ffi::Error::InvalidArgument("PcclError: invalid root or world size");
  }
  if (results != operands + 1) {
    return xla::ffi::Error::InvalidArgument("PcclError: result count does not match operands");
  }
  return xla::ffi::Error::Success();
}

xla::ffi::Error write_group_facts(xla::ffi::AnyBuffer facts, int world, int rank) {
  auto* words = static_cast<int32_t*>(facts.untyped_data());
  if (facts.size_bytes() == sizeof(int32_t)) {
    words[0] = world;
  } else if (facts.size_bytes() == 2 * sizeof(int32_t)) {
    words[0] = world;
    words[1] = rank;
  } else {
    return xla::ffi::Error::InvalidArgument("PcclError: the world size result has the wrong size");
  }
  return xla::ffi::Error::Success();
}

xla::ffi::Error collective_leaf(const CollectiveAttrs& attrs, const xla::ffi::AnyBuffer& in,
                                const void* in_data, void* out_data, size_t index, size_t count,
                                CollectiveCall* call) {
  std::optional<DType> dtype = to_engine_dtype(in.element_type());
  if (!dtype) return xla::ffi::Error::InvalidArgument("PcclError: unsupported dtype");
  // Quantization is a per-call choice, applied to the floating leaves only.
  auto q = static_cast<Quantization>(attrs.quant);
  if (!quantization_applies(q, *dtype)) q = Quantization::kNone;
  *call = CollectiveCall{};
  call->kind = static_cast<CollectiveKind>(attrs.kind);
  call->in = in_data;
  call->out = out_data;
  call->count = in.element_count();
  call->dtype = *dtype;
  call->op = static_cast<ReduceOp>(attrs.op);
  call->root = static_cast<uint32_t>(attrs.root);
  call->world = static_cast<uint32_t>(attrs.world);
  call->leaf = describe_leaf(in, index, count);
  call->quantization = q;
  return xla::ffi::Error::Success();
}

xla::ffi::Error check_start_call(int64_t comm_handle, int32_t op, int32_t quantization,
                                 size_t leaves, size_t ticket_elements,
                                 std::shared_ptr<Communicator>* comm) {
  *comm = find_communicator(comm_handle);
  if (!*comm) return precondition("the communicator this compiled function was traced with is closed: re-jit the function with the new Communicator (jitted functions keep the communicator they captured)");
  if (op < 0 || !reduce_op_valid(static_cast<uint8_t>(op)) || quantization < 0 ||
      !quantization_valid(static_cast<uint8_t>(quantization))) {
    return xla::ffi::Error::InvalidArgument("PcclError: invalid op or quantization");
  }
  if (leaves == 0 || ticket_leaves(ticket_elements) != leaves) {
    return xla::ffi::Error::InvalidArgument("PcclError: ticket count does not match operands");
  }
  return xla::ffi::Error::Success();
}

xla::ffi::Error start_leaf(const xla::ffi::AnyBuffer& in, const void* in_data, size_t index,
                           size_t count, int32_t op, int32_t quantization, CollectiveCall* call) {
  auto dtype = to_engine_dtype(in.element_type());
  if (!dtype) return xla::ffi::Error::InvalidArgument("PcclError: unsupported dtype");
  auto q = static_cast<Quantization>(quantization);
  if (!quantization_applies(q, *dtype)) q = Quantization::kNone;
  *call = CollectiveCall{};
  call->in = in_data;
  call->count = in.element_count();
  call->dtype = *dtype;
  call->op = static_cast<ReduceOp>(op);
  call->leaf = describe_leaf(in, index, count);
  call->quantization = q;
  return xla::ffi::Error::Success();
}

xla::ffi::Error closed_before_wait() {
  // Its start ran on this communicator (a start on a closed one fails
  // first), so close() came in between and cancelled the collective. The
  // start's "re-jit the function" message misled here: an eager start and
  // wait have no jitted function to re-jit.
  return xla::ffi::Error(xla::ffi::ErrorCode::kCancelled,
                         "CancelledError: communicator closed: close() cancelled this "
                         "all_reduce_start before its all_reduce_wait");
}

}  // namespace pccl
