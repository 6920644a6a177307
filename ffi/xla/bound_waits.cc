#include "xla/bound_waits.h"

#include <map>
#include <mutex>
#include <utility>

namespace pccl {
namespace {

using Key = std::pair<int64_t, int64_t>;  // (communicator handle, call site)

std::mutex bound_mu;
std::map<Key, std::vector<uint64_t>>& bound() {
  static auto* b = new std::map<Key, std::vector<uint64_t>>();  // never destroyed:
  return *b;  // handlers may run during interpreter teardown
}

}  // namespace

void bind_wait(int64_t comm_handle, int64_t site, std::vector<uint64_t> tickets) {
  std::lock_guard<std::mutex> lock(bound_mu);
  bound()[{comm_handle, site}] = std::move(tickets);
}

std::optional<std::vector<uint64_t>> take_bound_wait(int64_t comm_handle, int64_t site) {
  std::lock_guard<std::mutex> lock(bound_mu);
  auto it = bound().find({comm_handle, site});
  if (it == bound().end()) return std::nullopt;
  std::vector<uint64_t> tickets = std::move(it->second);
  bound().erase(it);
  return tickets;
}

void forget_bound_waits(int64_t comm_handle) {
  std::lock_guard<std::mutex> lock(bound_mu);
  auto& b = bound();
  b.erase(b.lower_bound({comm_handle, INT64_MIN}), b.upper_bound({comm_handle, INT64_MAX}));
}

}  // namespace pccl
