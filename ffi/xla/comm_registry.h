// Integer handles for live communicators. A compiled XLA program refers to
// its communicator by handle (a custom-call attribute), never by pointer, so
// a program run after close() gets a clear error instead of a dangling pointer.
// Each communicator is registered with the executor that completes its
// all_reduce_wait futures (see completion_executor.h).
#pragma once
#include <cstdint>
#include <memory>

#include "peer/communicator.h"
#include "xla/completion_executor.h"

namespace pccl {

int64_t register_communicator(std::shared_ptr<Communicator> comm,
                              std::shared_ptr<CompletionExecutor> completions);
void unregister_communicator(int64_t handle);
std::shared_ptr<Communicator> find_communicator(int64_t handle);  // nullptr if gone
std::shared_ptr<CompletionExecutor> find_completions(int64_t handle);  // nullptr if gone

}  // namespace pccl
