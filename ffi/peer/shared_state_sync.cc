#include "peer/shared_state_sync.h"

#include <exception>
#include <string>

#include "common/errors.h"
#include "common/stopwatch.h"
#include "common/log.h"
#include "protocol/wire.h"
#include "state/leaf_hashes.h"
#include "state/state_fetcher.h"
#include "transport/frame.h"

namespace pccl {
namespace {

// Keeps our leaves published exactly as long as the sync runs.
class Publication {
 public:
  Publication(StateServer* server, const std::vector<SharedStateLeaf>& leaves) : server_(server) {
    std::vector<ConstSpan> spans;
    for (const auto& l : leaves) spans.push_back({static_cast<const uint8_t*>(l.data), l.nbytes});
    server_->publish(std::move(spans));
  }
  ~Publication() { end(); }
  uint64_t end() {
    if (ended_) return 0;
    ended_ = true;
    return server_->unpublish();
  }

 private:
  StateServer* server_;
  bool ended_ = false;
};

SyncRequestMsg make_request(const SyncContext& ctx, const std::vector<SharedStateLeaf>& leaves,
                            uint64_t revision, SyncStrategy strategy, uint64_t structure) {
  if (leaves.size() > kMaxSharedStateLeaves) {
    throw PcclError("shared state has " + std::to_string(leaves.size()) + " leaves; at most " +
                    std::to_string(kMaxSharedStateLeaves) + " are supported");
  }
  SyncRequestMsg req;
  req.request_id = ctx.request_id;
  req.revision = revision;
  req.strategy = static_cast<uint8_t>(strategy);
  req.structure = structure;
  std::vector<ConstSpan> spans;
  for (const auto& l : leaves) {
    if (l.dims.size() > kMaxDims) throw PcclError("shared-state leaf has too many dimensions");
    spans.push_back({static_cast<const uint8_t*>(l.data), l.nbytes});
  }
  std::vector<uint64_t> hashes = hash_leaves(spans);
  for (size_t i = 0; i < leaves.size(); ++i) {
    const auto& l = leaves[i];
    req.leaves.push_back({hashes[i], l.nbytes, static_cast<uint8_t>(l.dtype), l.dims});
  }
  return req;
}

SyncPlanMsg await_plan(const SyncContext& ctx) {
  SyncPlanMsg plan;
  if (ctx.master->wait_sync_plan(ctx.request_id, ctx.registration,
                                 Deadline::after(2 * ctx.timeout_s), &plan)) {
    return plan;
  }
  try {  // let the others go on without us
    ctx.master->send_sync(MsgType::kSyncDone, SyncDoneMsg{0, 0, "gave up waiting"}.encode(),
                          ctx.registration, Deadline::after(ctx.timeout_s));
  } catch (const PcclError&) {
    // the master is gone too: our caller learns that on its next call
  }
  throw PeerFailure("shared-state sync: not every peer of the group called sync_shared_state() "
                    "within " + std::to_string(2 * ctx.timeout_s) + " s");
}

// Throws the error the plan holds for this peer, if any.
void check_plan(const SyncContext& ctx, const SyncPlanMsg& plan, size_t leaves) {
  for (const SyncRefusal& f : plan.refusals) {
    if (f.peer_id == ctx.peer_id) {
      throw PcclError(static_cast<ErrorKind>(f.kind), "shared-state sync refused: " + f.message);
    }
  }
  if (plan.failed != 0) {
    throw PcclError(static_cast<ErrorKind>(plan.error_kind), "shared-state sync failed: " + plan.message);
  }
  if (plan.leaf_hash.size() != leaves) throw ProtocolViolation("shared-state plan for another pytree");
}

std::vector<FetchTarget> plan_fetches(const SyncPlanMsg& plan, const SyncRequestMsg& mine,
                                      std::vector<ReceivedLeaf>* buffers) {
  std::vector<FetchTarget> targets;
  for (uint32_t i = 0; i < plan.leaf_hash.size(); ++i) {
    if (plan.leaf_hash[i] == mine.leaves[i].hash) continue;
    ReceivedLeaf r{i, allocate_host_buffer(mine.leaves[i].nbytes)};
    FetchTarget t{i, r.bytes.data.get(), mine.leaves[i].nbytes, plan.leaf_hash[i], {}};
    for (uint16_t h : plan.holder_sets[plan.leaf_holder_set[i]]) t.holders.push_back(plan.holders[h]);
    buffers->push_back(std::move(r));
    targets.push_back(std::move(t));
  }
  return targets;
}

}  // namespace

SyncOutcome run_shared_state_sync(const SyncContext& ctx, const std::vector<SharedStateLeaf>& leaves,
                                  uint64_t revision, SyncStrategy strategy, uint64_t structure) {
  Stopwatch clock;
  SyncRequestMsg mine = make_request(ctx, leaves, revision, strategy, structure);
  double hash_s = clock.lap();
  std::vector<uint8_t> request = mine.encode();
  if (request.size() > kMaxControlPayload) {
    throw PcclError("shared-state description too large for one frame: too many leaves or dimensions");
  }
  Publication publication(ctx.server, leaves);
  ctx.master->send_sync(MsgType::kSyncRequest, request, ctx.registration,
                        Deadline::after(ctx.timeout_s));
  SyncPlanMsg plan = await_plan(ctx);
  check_plan(ctx, plan, leaves.size());

  SyncOutcome out;
  out.revision = plan.revision;
  out.refused_peers = static_cast<uint32_t>(plan.refusals.size());
  out.hash_s = hash_s;
  out.plan_s = clock.lap();
  if (plan.settled != 0) return out;  // every participant already holds the winner
  // From here on the others count on our report: whatever fails (even
  // allocating the buffers) is reported as done-with-failure, never skipped.
  std::exception_ptr failure;
  std::string failure_text;
  try {
    std::vector<FetchTarget> targets = plan_fetches(plan, mine, &out.received);
    if (strategy == SyncStrategy::kSendOnly && !targets.empty()) {
      throw PcclError("send_only peer would have to receive (the master should have refused it)");
    }
    FetchSettings settings;
    settings.connect = [&](const RingMember& holder, const Deadline& d) {
      return ctx.links->open_state_link(ctx.peer_id, holder, d, ctx.cancel);
    };
    settings.stall_timeout_s = ctx.timeout_s;
    settings.cancel = ctx.cancel;
    FetchReport report = fetch_shared_state(targets, settings);
    out.rx_bytes = report.rx_bytes;
    out.refetched_leaves = report.refetched_leaves;
    out.fetch_s = report.fetch_s;
    out.verify_s = report.verify_s;
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kCancelled) throw;
    failure = std::current_exception();
    failure_text = e.what();
  } catch (const std::exception& e) {  // e.g. std::bad_alloc
    failure_text = std::string("shared-state transfer failed: ") + e.what();
    failure = std::make_exception_ptr(PcclError(failure_text));
  }
  SyncDoneMsg done{plan.round, static_cast<uint8_t>(failure ? 0 : 1),
                   failure_text.substr(0, kMaxWireString)};
  ctx.master->send_sync(MsgType::kSyncDone, done.encode(), ctx.registration,
                        Deadline::after(ctx.timeout_s));
  // Others may still be fetching from us: stay published until all are done.
  // No deadline of its own (a large state takes as long as it takes); the
  // wait ends with the master (silent for timeout, lost, or restarted,
  // see MasterLink::wait_sync_complete) or close().
  SyncCompleteMsg complete;
  ctx.master->wait_sync_complete(plan.round, ctx.registration, Deadline::never(), &complete);
  out.tx_bytes = publication.end();
  clock.lap();
  out.finish_s = clock.total() - out.hash_s - out.plan_s - out.fetch_s - out.verify_s;
  if (failure) std::rethrow_exception(failure);
  if (complete.ok == 0) throw PeerFailure("shared-state sync failed on another peer: " + complete.message);
  return out;
}

}  // namespace pccl
