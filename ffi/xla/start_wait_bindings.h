// The operands, results and attributes of all_reduce_start, wait_bind and
// wait (python: ops/all_reduce_async.py) after whatever context a platform's
// handler binds first (CPU: none; CUDA: its stream), so that the CPU and
// CUDA handlers take exactly the same calls (all_reduce_async_handler.h).
#pragma once
#include <cstdint>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace pccl {

// token, leaves... -> token, tickets int32[2L+1]; comm, op, quant.
template <typename Binding>
auto bind_start_call(Binding binding) {
  return std::move(binding)
      .template Arg<xla::ffi::Token>()
      .RemainingArgs()
      .template Ret<xla::ffi::Token>()
      .template Ret<xla::ffi::Buffer<xla::ffi::S32>>()
      .template Attr<int64_t>("comm")
      .template Attr<int32_t>("op")
      .template Attr<int32_t>("quant");
}

// token, tickets -> token; comm, site.
template <typename Binding>
auto bind_wait_bind_call(Binding binding) {
  return std::move(binding)
      .template Arg<xla::ffi::Token>()
      .template Arg<xla::ffi::Buffer<xla::ffi::S32>>()
      .template Ret<xla::ffi::Token>()
      .template Attr<int64_t>("comm")
      .template Attr<int64_t>("site");
}

// token -> token, results...; comm, site.
template <typename Binding>
auto bind_wait_call(Binding binding) {
  return std::move(binding)
      .template Arg<xla::ffi::Token>()
      .template Ret<xla::ffi::Token>()
      .RemainingRets()
      .template Attr<int64_t>("comm")
      .template Attr<int64_t>("site");
}

}  // namespace pccl
