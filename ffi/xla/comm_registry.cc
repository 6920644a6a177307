#include "xla/comm_registry.h"

#include "xla/bound_waits.h"

#include <map>
#include <mutex>

namespace pccl {
namespace {

struct Registered {
  std::shared_ptr<Communicator> comm;
  std::shared_ptr<CompletionExecutor> completions;
};

std::mutex registry_mu;
std::map<int64_t, Registered>& registry() {
  static auto* r = new std::map<int64_t, Registered>();  // never destroyed:
  return *r;  // handlers may run during interpreter teardown
}
int64_t next_handle = 1;

}  // namespace

int64_t register_communicator(std::shared_ptr<Communicator> comm,
                              std::shared_ptr<CompletionExecutor> completions) {
  std::lock_guard<std::mutex> lock(registry_mu);
  int64_t h = next_handle++;
  registry()[h] = Registered{std::move(comm), std::move(completions)};
  return h;
}

void unregister_communicator(int64_t handle) {
  {
    std::lock_guard<std::mutex> lock(registry_mu);
    registry().erase(handle);
  }
  forget_bound_waits(handle);
}

std::shared_ptr<Communicator> find_communicator(int64_t handle) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = registry().find(handle);
  return it == registry().end() ? nullptr : it->second.comm;
}

std::shared_ptr<CompletionExecutor> find_completions(int64_t handle) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = registry().find(handle);
  return it == registry().end() ? nullptr : it->second.completions;
}

}  // namespace pccl
