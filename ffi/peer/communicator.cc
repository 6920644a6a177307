#include "peer/communicator.h"

#include <algorithm>
#include <exception>
#include <sstream>
#include <thread>

#include "collectives/inline_allreduce.h"
#include "collectives/ring_allreduce.h"
#include "collectives/ring_quantized.h"
#include "common/errors.h"
#include "common/log.h"
#include "transport/frame.h"

namespace pccl {
namespace {

constexpr uint32_t kMaxHeaderFrame = 512;

// The name of a header's kind; a hostile or newer peer may send any byte.
const char* kind_name(uint8_t raw) {
  switch (static_cast<CollectiveKind>(raw)) {
    case CollectiveKind::kTopologyCheck: return "update_topology";
    case CollectiveKind::kAllReduce:
    case CollectiveKind::kAllGather:
    case CollectiveKind::kBroadcast:
    case CollectiveKind::kReduceScatter:
      return collective_kind(static_cast<CollectiveKind>(raw)).name;
  }
  return "an unknown collective";
}

std::string describe(const CollectiveHeader& h) {
  if (h.kind == static_cast<uint8_t>(CollectiveKind::kTopologyCheck)) return "update_topology()";
  std::ostringstream os;
  os << kind_name(h.kind) << "(";
  if (h.kind == static_cast<uint8_t>(CollectiveKind::kAllReduce) ||
      h.kind == static_cast<uint8_t>(CollectiveKind::kReduceScatter)) {
    os << "op=" << reduce_op_name(static_cast<ReduceOp>(h.op)) << " ";
  }
  if (h.kind == static_cast<uint8_t>(CollectiveKind::kBroadcast)) os << "root=" << h.root << " ";
  os << "dtype=" << dtype_name(static_cast<DType>(h.dtype)) << " shape=(";
  for (size_t i = 0; i < h.dims.size(); ++i) os << (i ? "," : "") << h.dims[i];
  if (h.dims.size() == 1) os << ",";
  os << ")";
  if (h.quantization != 0) {
    os << " quantization=" << quantization_name(static_cast<Quantization>(h.quantization));
  }
  if (h.leaf_count > 1) os << " leaf=" << h.leaf_index << "/" << h.leaf_count;
  if (h.world != 0) os << " world=" << h.world;
  os << ")";
  return os.str();
}

// Names the fields in which two headers disagree ("" when they agree).
std::string differing_fields(const CollectiveHeader& a, const CollectiveHeader& b) {
  std::vector<std::string> diffs;
  if (a.kind != b.kind) return "operation";
  if (a.op != b.op) diffs.push_back("op");
  if (a.root != b.root) diffs.push_back("root");
  if (a.dtype != b.dtype) diffs.push_back("dtype");
  if (a.count != b.count || a.dims != b.dims) diffs.push_back("shape");
  if (a.quantization != b.quantization) diffs.push_back("quantization");
  if (a.leaf_count != b.leaf_count || a.leaf_index != b.leaf_index) diffs.push_back("pytree structure");
  if (a.world != b.world) diffs.push_back("group size traced for (world)");
  std::string out;
  for (const auto& d : diffs) out += (out.empty() ? "" : ", ") + d;
  return out;
}

}  // namespace

Communicator::Communicator(CommunicatorConfig config)
    : config_(std::move(config)),
      server_(config_.timeout_s),
      probes_(config_.timeout_s),
      slots_(config_.concurrency) {
  if (config_.connections < 1 || config_.connections > kMaxRingConnections) {
    throw PcclError("connections must be between 1 and " + std::to_string(kMaxRingConnections) +
                    ", got " + std::to_string(config_.connections));
  }
  if (config_.concurrency < 1 || config_.concurrency > kConcurrentSlots) {
    throw PcclError("concurrency must be between 1 and " + std::to_string(kConcurrentSlots) +
                    ", got " + std::to_string(config_.concurrency));
  }
}

Communicator::~Communicator() { close(); }

void Communicator::connect(double admit_timeout_s) {
  std::exception_ptr failure;
  {
    std::unique_lock<std::shared_mutex> lock(op_mu_);
    if (closed_) throw PcclError("communicator is closed");
    if (connected_) return;
    try {
      register_and_wait(admit_timeout_s);
      return;
    } catch (const PcclError&) {
      failure = std::current_exception();
    }
  }
  close();  // leave no half-registered peer behind; a new Communicator can retry
  std::rethrow_exception(failure);
}

void Communicator::register_and_wait(double admit_timeout_s) {
  Deadline net = Deadline::after(config_.timeout_s);
  master_.set_counters([this] {
    CommunicatorStats s = stats();  // the link's thread ends in close(), before stats_ does
    return PeerHeartbeatMsg{s.collectives_done, s.collectives_failed, s.bytes_sent,
                            s.bytes_received, s.shared_state_syncs};
  });
  master_.open(config_.master_host, config_.master_port, config_.timeout_s, net, &cancel_,
               &interrupt_, config_.secret);
  links_.listen(
      master_.local_ip(), config_.group, config_.secret,
      [this](Socket sock, uint64_t peer) { server_.accept(std::move(sock), peer); },
      [this](Socket sock, const PeerHelloMsg& hello) { probes_.accept(std::move(sock), hello); });
  HelloMsg hello{config_.group, links_.port(), config_.advertise_host};
  peer_id_ = master_.register_peer(hello, net);
  ReceivedTopology topo;
  if (!master_.wait_topology(0, Deadline::after(admit_timeout_s), &topo)) {
    throw PcclError("not admitted within " + std::to_string(admit_timeout_s) +
                    " s: accepted peers admit newcomers when they call update_topology()");
  }
  settle(topo);
  connected_ = true;
}

void Communicator::apply_topology(const ReceivedTopology& received) {
  const TopologyMsg& topo = received.topology;
  auto me = std::find_if(topo.ring.begin(), topo.ring.end(),
                         [this](const RingMember& m) { return m.peer_id == peer_id_; });
  if (me == topo.ring.end()) throw PcclError("this peer is no longer part of the run");
  int n = static_cast<int>(topo.ring.size());
  int r = static_cast<int>(me - topo.ring.begin());
  ring_ = topo.ring;
  {
    std::lock_guard<std::mutex> lock(submit_mu_);
    epoch_ = topo.epoch;
    seq_ = 0;
    slots_.reset();
  }
  master_.note_epoch(epoch_);
  epoch_seen_ = epoch_;
  seq_seen_ = 0;
  rank_ = r;
  group_size_ = n;
  total_world_ = static_cast<int>(topo.total_world_size);
  {
    std::lock_guard<std::mutex> lock(pending_mu_);
    pending_seq_ = -1;
    consistent_pending_ = topo.more_pending != 0;
  }
  ring_broken_ = false;
  topology_fresh_ = true;
  // Re-arm the interrupt for the new ring; a drop notice that arrived after
  // this topology concerns one of its members, so fire again at once.
  drops_baseline_ = received.drops_seen;
  // Reset first, then look: close(), a master loss or a drop notice sets its
  // flag before it fires the interrupt, so one that lands in between is
  // either seen here or fires after the reset. (Checking first and resetting
  // after would swallow a signal that came between the two.)
  interrupt_.rearm([this] {
    return closed_ || master_.failed() || master_.drops_seen() > drops_baseline_;
  });
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++stats_.topology_updates;
  }
  if (n == 1) {
    links_.drop_links();
    return;
  }
  try {
    // K bulk connections, then one for each small slot (collective_slots.h).
    links_.establish(peer_id_, epoch_, ring_[(r + 1) % n], ring_[(r + n - 1) % n].peer_id,
                     Deadline::after(config_.timeout_s), &interrupt_,
                     config_.connections + config_.concurrency - 1, config_.concurrency);
    if (links_.left_slots() != config_.concurrency) {
      throw PcclError("collective concurrency differs between ring neighbours: the left one (peer " +
                      std::to_string(ring_[(r + n - 1) % n].peer_id) + ") runs concurrency=" +
                      std::to_string(links_.left_slots()) + ", this peer concurrency=" +
                      std::to_string(config_.concurrency) +
                      "; every peer of a group must use the same value");
    }
  } catch (const PcclError& e) {
    mark_broken(e.kind());
    rethrow_typed(e);
  }
  PCCL_LOG(kInfo, "peer " << peer_id_ << ": epoch " << epoch_ << " rank " << r << "/" << n);
}

void Communicator::settle(ReceivedTopology received) {
  apply_topology(received);
  while (received.topology.more_pending != 0) {
    master_.send_vote(epoch_, {}, Deadline::after(config_.timeout_s));
    received = await_vote("admitting the remaining pending peers");
    apply_topology(received);
  }
}

ReceivedTopology Communicator::await_vote(const char* what) {
  ReceivedTopology topo;
  // The others reach the vote once their own collective finished or failed.
  if (!master_.wait_topology(epoch_, Deadline::after(2 * config_.timeout_s), &topo)) {
    mark_broken(ErrorKind::kPeerFailure);
    throw PeerFailure(std::string("topology vote (") + what + ") did not complete within " +
                      std::to_string(2 * config_.timeout_s) + " s");
  }
  return topo;
}

PcclError unwaited_start_error(const char* what) {
  return PcclError(std::string(what) + " with a started all_reduce not yet waited for: call "
                   "all_reduce_wait() first");
}

bool Communicator::epoch_failed() const {
  return ring_broken_ || master_.drops_seen() > drops_baseline_.load() || master_.failed() ||
         master_restarted();
}

void Communicator::settle_started_work() {
  if (async_.outstanding() == 0) return;
  if (!epoch_failed()) throw unwaited_start_error();  // healthy work: the caller's to wait for
  // Their collectives failed (or will, on the broken ring) on every peer;
  // keeping them would block recovery forever when their wait never runs,
  // e.g. start -> a failing all_reduce -> wait in one jitted step.
  size_t discarded = async_.discard_started(
      "this all_reduce_start was discarded by update_topology(): a peer failed in its epoch (" +
      std::to_string(epoch_) + "); start it again");
  if (discarded > 0) {
    PCCL_LOG(kInfo, "peer " << peer_id_ << ": discarded " << discarded
                            << " started all_reduce(s) of failed epoch " << epoch_);
  }
  if (async_.outstanding() > 0) throw unwaited_start_error();  // in-place: waited by their caller
}

void Communicator::update_topology() {
  // Cheap refusal first: a healthy start must not wait for op_mu_.
  if (async_.outstanding() > 0 && !epoch_failed()) throw unwaited_start_error();
  std::unique_lock<std::shared_mutex> lock(op_mu_);
  require_accepted();
  settle_started_work();
  check_master();
  if (master_restarted()) {
    rejoin();
    return;
  }
  if (master_.drops_seen() > drops_baseline_) {  // a member is gone
    broken_by_ = ErrorKind::kPeerFailure;
    ring_broken_ = true;
  }
  if (topology_fresh_ && !ring_broken_) {
    topology_fresh_ = false;  // settled just now, identically on every member
    return;
  }
  if (!ring_broken_) {
    bool pending;
    if (ring_.size() == 1) {
      pending = master_.pending_seen();  // alone: our own view is the consensus
      topology_fresh_ = false;
    } else {
      try {
        Placement at;
        {
          std::lock_guard<std::mutex> s(submit_mu_);
          at = place(0);
        }
        agree(make_header(CollectiveKind::kTopologyCheck, at), at.slot);
        pending = consistent_pending_;
      } catch (const PcclError& e) {
        if (e.kind() == ErrorKind::kMismatch) throw;
        mark_broken(e.kind(), true);
        // A peer that died during the check is exactly what this call is
        // for: go on to the vote, which drops it. Only a lost master or a
        // closed communicator end the call.
        if (closed_ || master_.failed()) rethrow_typed(e);
        pending = true;
      }
    }
    if (!pending) return;
  }
  // A failure nobody's death explains may be a link broken between two live
  // peers: name the neighbours that do not answer, so that the master can
  // route the next ring around the link instead of rebuilding it for ever.
  std::vector<uint64_t> unreachable;
  if (ring_broken_ && master_.drops_seen() == drops_baseline_) unreachable = unreachable_neighbours();
  master_.send_vote(epoch_, unreachable, Deadline::after(config_.timeout_s));
  settle(await_vote("admitting pending peers / dropping dead ones"));
}

std::vector<uint64_t> Communicator::unreachable_neighbours() {
  size_t n = ring_.size();
  if (n < 3) return {};  // one ring only: nothing to route around
  int r = rank_.load();
  const RingMember& right = ring_[(r + 1) % n];
  const RingMember& left = ring_[(r + n - 1) % n];
  // Half the timeout at most: the failure that brought us here already took
  // one, and recovery should stay within two.
  Deadline deadline = Deadline::after(std::min(config_.timeout_s / 2, kLinkCheckSeconds));
  bool left_ok = true;
  std::thread check_left([&] {
    try {
      left_ok = link_answers(links_, peer_id_, epoch_, left, deadline, &cancel_);
    } catch (const PcclError&) {  // cancelled: closing, nothing to report
    }
  });
  bool right_ok = true;
  try {
    right_ok = link_answers(links_, peer_id_, epoch_, right, deadline, &cancel_);
  } catch (const PcclError&) {
  }
  check_left.join();
  std::vector<uint64_t> out;
  if (!right_ok) out.push_back(right.peer_id);
  if (!left_ok) out.push_back(left.peer_id);
  return out;
}

void Communicator::rejoin() {
  mark_broken(ErrorKind::kPeerFailure);
  peer_id_ = master_.peer_id();
  uint64_t registration = master_.registrations();
  ReceivedTopology topo;
  // The restarted master starts its epochs above ours; peers are re-admitted
  // as they reconnect (the first at once, the others by the accepted ones'
  // update_topology()), so this wait ends as soon as the others come by.
  if (!master_.wait_topology(epoch_, Deadline::after(2 * config_.timeout_s), &topo)) {
    throw PeerFailure("the master restarted and this peer is not re-admitted yet; "
                      "call update_topology() again");
  }
  registrations_seen_ = registration;
  settle(topo);
  PCCL_LOG(kWarn, "peer " << peer_id_ << " rejoined the run after a master restart");
}

void Communicator::check_master() const {
  if (master_.failed()) throw interruption();
}

PcclError Communicator::interruption() const {
  if (closed_) return Cancelled("communicator closed");
  if (master_.failed()) return master_.lost_error();
  if (master_.drops_seen() > drops_baseline_) return PeerFailure(master_.last_drop());
  return Cancelled("operation interrupted");
}

void Communicator::rethrow_typed(const PcclError& e) const {
  if (e.kind() == ErrorKind::kCancelled) throw interruption();
  throw e;
}

void Communicator::require_accepted() const {
  if (closed_) throw PcclError("communicator is closed");
  if (!connected_) throw PcclError("communicator is not connected: call connect() first");
}

void Communicator::mark_broken(ErrorKind kind, bool ring_failed) {
  broken_by_ = kind;
  ring_broken_ = true;
  // Neighbours, and our own collectives in the other slots, see it now
  // instead of waiting for a timeout.
  if (ring_failed) {
    links_.reset_links();
  } else {
    links_.break_links();
  }
}

RingPeers Communicator::slot_peers(int slot) const {
  LaneRange right = slot_lanes(slot, links_.right_lanes(), config_.concurrency);
  LaneRange left = slot_lanes(slot, links_.left_lanes(), config_.concurrency);
  return RingPeers{rank_, static_cast<int>(ring_.size()), links_.right_fds(right.first, right.count),
                   links_.left_fds(left.first, left.count)};
}

std::vector<CollectiveHeader> Communicator::exchange_headers(
    const CollectiveHeader& mine, int slot, const void* attached, size_t bytes,
    std::vector<std::vector<uint8_t>>* inputs) {
  int n = static_cast<int>(ring_.size());
  int r = rank_;
  Socket& right = links_.right(slot_lanes(slot, links_.right_lanes(), config_.concurrency).first);
  Socket& left = links_.left(slot_lanes(slot, links_.left_lanes(), config_.concurrency).first);
  // Frames are forwarded verbatim, attachment and all: a peer that attached
  // nothing (it disagrees about the call) still passes the others' on, and
  // the mismatch is then found alike everywhere.
  std::vector<Frame> frames(n);
  frames[r].type = static_cast<uint16_t>(attached ? MsgType::kCollectiveInline : MsgType::kCollective);
  frames[r].payload = attached ? InlineCollective::encode(mine, attached, bytes) : mine.encode();
  Deadline deadline = Deadline::after(config_.timeout_s);
  // All-gather around the ring: at hop s forward the frame of rank r-s.
  for (int s = 0; s < n - 1; ++s) {
    const Frame& fwd = frames[(r - s + n) % n];
    write_frame(right, fwd.type, fwd.payload, deadline, &interrupt_);
    // On the inline path these are a collective's last frames (see read_frame_draining).
    Frame f = read_frame_draining(left, kMaxHeaderFrame + 4 + kMaxInlineCollectiveData,
                                  deadline, interrupt_, cancel_, kInterruptGraceS);
    if (f.type != static_cast<uint16_t>(MsgType::kCollective) &&
        f.type != static_cast<uint16_t>(MsgType::kCollectiveInline)) {
      throw ProtocolViolation("expected a collective header from the left neighbour");
    }
    frames[(r - s - 1 + n) % n] = std::move(f);
  }
  std::vector<CollectiveHeader> all(n);
  if (inputs) inputs->assign(n, {});
  for (int i = 0; i < n; ++i) {
    if (i == r) {
      all[i] = mine;
    } else if (frames[i].type == static_cast<uint16_t>(MsgType::kCollectiveInline)) {
      InlineCollective m = InlineCollective::decode(frames[i].payload);
      all[i] = std::move(m.header);
      if (inputs) (*inputs)[i] = std::move(m.data);
    } else {
      all[i] = CollectiveHeader::decode(frames[i].payload);
    }
  }
  return all;
}

void Communicator::check_agreement(const std::vector<CollectiveHeader>& all,
                                   const CollectiveHeader& mine) {
  for (size_t i = 0; i < all.size(); ++i) {
    const CollectiveHeader& h = all[i];
    if (h.epoch != mine.epoch || h.seq != mine.seq) {
      throw Mismatch("collective sequence mismatch: peer " + std::to_string(h.peer_id) +
                     " is at collective #" + std::to_string(h.seq) + " of epoch " +
                     std::to_string(h.epoch) + ", this peer at #" + std::to_string(mine.seq) +
                     " of epoch " + std::to_string(mine.epoch));
    }
    std::string diff = differing_fields(h, mine);
    if (!diff.empty()) {
      const char* what = h.kind == mine.kind ? kind_name(mine.kind) : "collective";
      throw Mismatch(std::string(what) + " arguments differ between peers (" + diff + "): peer " +
                     std::to_string(h.peer_id) + " (rank " + std::to_string(i) + ") called " +
                     describe(h) + ", this peer (rank " + std::to_string(rank_) + ") called " +
                     describe(mine));
    }
  }
}

CollectiveHeader Communicator::make_header(CollectiveKind kind, const Placement& at) const {
  CollectiveHeader h;
  h.kind = static_cast<uint8_t>(kind);
  h.seq = at.seq;
  h.epoch = at.epoch;
  h.peer_id = peer_id_;
  h.pending = master_.pending_seen() ? 1 : 0;
  return h;
}

std::vector<CollectiveHeader> Communicator::agree(const CollectiveHeader& mine, int slot,
                                                  const void* attached, size_t bytes,
                                                  std::vector<std::vector<uint8_t>>* inputs) {
  topology_fresh_ = false;
  std::vector<CollectiveHeader> all = ring_.size() > 1
                                          ? exchange_headers(mine, slot, attached, bytes, inputs)
                                          : std::vector<CollectiveHeader>{mine};
  bool pending = false;
  for (const auto& h : all) pending |= h.pending != 0;
  note_pending(mine.seq, pending);
  check_agreement(all, mine);
  return all;
}

void Communicator::note_pending(uint64_t seq, bool pending) {
  // Collectives of different slots end in different orders on different
  // peers; the latest started one (the same on all) is the shared answer.
  std::lock_guard<std::mutex> lock(pending_mu_);
  if (static_cast<int64_t>(seq) <= pending_seq_) return;
  pending_seq_ = static_cast<int64_t>(seq);
  consistent_pending_ = pending;
}

Communicator::Placement Communicator::place(int slot) {
  Placement at{epoch_, seq_++, slot};
  seq_seen_ = seq_;
  return at;
}

void Communicator::finish_inline(const CollectiveCall& call, const void* in, void* out,
                                 std::vector<std::vector<uint8_t>>& inputs,
                                 RingTraffic& traffic) const {
  size_t bytes = call.count * dtype_size(call.dtype);
  // In place, the output may be written before our own input is read:
  // keep it aside first (at most kMaxInlineCollectiveData bytes).
  std::vector<uint8_t> own;
  if (in == out) own.assign(static_cast<const uint8_t*>(in), static_cast<const uint8_t*>(in) + bytes);
  std::vector<const uint8_t*> ordered(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (static_cast<int>(i) == rank_) {
      ordered[i] = in == out ? own.data() : static_cast<const uint8_t*>(in);
      continue;
    }
    // The headers agreed, so every peer attached exactly its input.
    if (inputs[i].size() != bytes) {
      throw ProtocolViolation(std::string("inline ") + collective_kind(call.kind).name + ": rank " +
                              std::to_string(i) + " attached " + std::to_string(inputs[i].size()) +
                              " bytes, expected " + std::to_string(bytes));
    }
    ordered[i] = inputs[i].data();
  }
  collective_kind(call.kind).finish_inline(call, rank_, ordered, out);
  // Each peer's frame passes every other peer's right link once.
  size_t peers = inputs.size();
  traffic.bytes_sent = (peers - 1) * bytes;
  traffic.bytes_received = (peers - 1) * bytes;
}

namespace {

size_t bytes_of(const CollectiveCall& call) { return input_bytes(call); }

// How much an error says about what went wrong: a mismatch or a failure
// names its cause; "a previous collective failed" is only a consequence.
int telling(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const PcclError& e) {
    switch (e.kind()) {
      case ErrorKind::kMismatch: return 4;
      case ErrorKind::kGeneric: return 1;
      case ErrorKind::kCancelled: return 2;
      default: return 3;
    }
  } catch (...) {
    return 0;
  }
}

}  // namespace

std::exception_ptr more_telling(std::exception_ptr kept, std::exception_ptr next) {
  if (!kept || (next && telling(next) > telling(kept))) return next;
  return kept;
}

void Communicator::check_call(const CollectiveCall& call) {
  const CollectiveKindInfo& kind = collective_kind(call.kind);
  if (kind.sized_by_world && call.world == 0) {
    throw PcclError(std::string(kind.name) +
                    ": the group size the output is sized for (world) is required");
  }
}

int Communicator::all_reduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                             const LeafDescriptor& leaf, Quantization quantization) {
  return run(all_reduce_call(in, out, count, dtype, op, leaf, quantization));
}

int Communicator::run(const CollectiveCall& call) {
  require_accepted();
  check_call(call);
  Placement at;
  AsyncCollectives::Claim claim;
  {
    std::lock_guard<std::mutex> lock(submit_mu_);
    at = place(slots_.pick(bytes_of(call)));
    claim = async_.claim(at.slot);
  }
  // Runs here, once its slot ran what was started on it before: program order.
  return async_.run_claimed(claim, call.in, call.out, [&](const void* src, void* dst) {
    return run_placed(at, call, src, dst);
  });
}

int Communicator::run_all(const std::vector<CollectiveCall>& calls) {
  if (calls.size() == 1) return run(calls[0]);
  require_accepted();
  for (const CollectiveCall& call : calls) check_call(call);
  std::exception_ptr error;
  auto keep = [&](std::exception_ptr e) {
    error = more_telling(error, e);
  };
  Batch batch;
  try {
    submit(calls, batch);
  } catch (...) {
    keep(std::current_exception());
  }
  int world = group_world_size();
  // Every claim is run and every start waited for, even after a failure: a
  // claim not run would hold up its slot, and the starts use our buffers.
  for (const Batch::Here& h : batch.here) {
    const CollectiveCall& call = calls[h.call];
    try {
      world = async_.run_claimed(h.claim, call.in, call.out, [&](const void* in, void* out) {
        return run_placed(h.at, call, in, out);
      });
    } catch (...) {
      keep(std::current_exception());
    }
  }
  for (const auto& [i, ticket] : batch.queued) {
    try {
      // Unbounded here, bounded by the collective: its ring waits end after
      // the stall timeout (or at once on a drop notice, master loss or
      // close()), and it must end before its buffers (ours) may go.
      world = async_.wait(ticket, calls[i].out, output_bytes(calls[i]), Deadline::never());
    } catch (...) {
      keep(std::current_exception());
    }
  }
  if (error) std::rethrow_exception(error);
  return world;
}

void Communicator::submit(const std::vector<CollectiveCall>& calls, Batch& batch) {
  std::lock_guard<std::mutex> lock(submit_mu_);
  int here = -1;
  for (size_t i = 0; i < calls.size(); ++i) {
    const CollectiveCall& call = calls[i];
    Placement at = place(slots_.pick(bytes_of(call)));
    if (here < 0) here = at.slot;
    if (at.slot == here) {
      batch.here.push_back(Batch::Here{i, at, async_.claim(at.slot)});
      continue;
    }
    batch.queued.emplace_back(
        i, async_.start_in_place(at.slot, call.in, call.out, output_bytes(call),
                                 [this, at, call](const void* in, void* out) {
                                   return run_placed(at, call, in, out);
                                 }));
  }
}

uint64_t Communicator::start(const CollectiveCall& call_in) {
  require_accepted();
  check_call(call_in);
  CollectiveCall call = call_in;
  call.in = nullptr;  // the engine thread gets the staged copies
  call.out = nullptr;
  std::lock_guard<std::mutex> lock(submit_mu_);
  Placement at = place(slots_.pick(bytes_of(call)));
  try {
    return async_.start(at.slot, call_in.in, bytes_of(call), output_bytes(call),
                        [this, at, call](const void* src, void* dst) {
                          return run_placed(at, call, src, dst);
                        });
  } catch (const PcclError& e) {
    // Its seq is spent and nothing runs it: the ring's order is off for
    // good. Breaking it lets update_topology() discard the leaves of this
    // start that did begin (a pytree's start fails at leaf i, not at once).
    mark_broken(e.kind());
    throw;
  }
}

void Communicator::wait_then(uint64_t ticket, void* out, size_t bytes,
                             AsyncCollectives::Then then) {
  async_.wait_then(ticket, out, bytes, std::move(then));
}

int Communicator::wait(uint64_t ticket, void* out, size_t bytes) {
  // No deadline of its own is needed: every queued collective is bounded by
  // the stall timeout and heartbeats, and close() fails the rest, so it ends.
  return async_.wait(ticket, out, bytes, Deadline::never());
}

int Communicator::run_placed(const Placement& at, const CollectiveCall& call, const void* in,
                             void* out) {
  std::shared_lock<std::shared_mutex> lock(op_mu_);
  require_accepted();
  check_master();
  if (master_restarted()) {
    throw PeerFailure("the master restarted: call update_topology() to rejoin the run");
  }
  if (ring_broken_) {
    // Same kind as the failure that broke the ring: a retry loop that
    // recovers from a peer failure must recognise its consequences too.
    ErrorKind kind = broken_by_.load();
    if (kind == ErrorKind::kCancelled) throw interruption();
    throw PcclError(kind, std::string("a previous collective of this epoch failed (") +
                              error_kind_name(kind) +
                              "): call update_topology() before the next one");
  }
  if (at.epoch != epoch_) {
    throw PcclError("the ring changed (update_topology) after this collective was started");
  }
  const CollectiveKindInfo& kind = collective_kind(call.kind);
  int n = static_cast<int>(ring_.size());
  CollectiveHeader mine = make_header(call.kind, at);
  mine.count = call.count;
  mine.dtype = static_cast<uint8_t>(call.dtype);
  mine.op = kind.reduces ? static_cast<uint8_t>(call.op) : 0;
  mine.root = kind.rooted ? call.root : 0;
  mine.world = call.world;
  mine.leaf_index = call.leaf.leaf_index;
  mine.leaf_count = call.leaf.leaf_count;
  mine.dims = call.leaf.dims;
  mine.quantization = static_cast<uint8_t>(call.quantization);
  RingTraffic traffic;
  // Errors every peer raises alike, before any data moves (the agreed
  // arguments do not fit the group): the ring stays consistent.
  bool consistent = false;
  try {
    size_t bytes = bytes_of(call);
    bool inline_path = use_inline_all_reduce(bytes, n, call.quantization);
    std::vector<std::vector<uint8_t>> inputs;
    if (inline_path) {
      agree(mine, at.slot, in, bytes, &inputs);
    } else {
      agree(mine, at.slot);
    }
    consistent = true;
    check_group(call, n);
    kind.check(call, n);
    consistent = false;
    if (inline_path) {
      finish_inline(call, in, out, inputs, traffic);
    } else {
      RingPeers peers = slot_peers(at.slot);
      RingOptions options;
      options.stall_timeout_s = config_.timeout_s;
      options.cancel = &interrupt_;
      options.closing = &cancel_;
      traffic = kind.ring(peers, options, call, in, out);
    }
  } catch (const PcclError& e) {
    {
      std::lock_guard<std::mutex> s(stats_mu_);
      ++stats_.collectives_failed;
    }
    // A mismatch is detected identically by everyone before data moves: the
    // ring stays consistent. Anything else leaves the links in an unknown state.
    if (e.kind() != ErrorKind::kMismatch && !consistent) mark_broken(e.kind(), true);
    rethrow_typed(e);
  }
  std::lock_guard<std::mutex> s(stats_mu_);
  ++stats_.collectives_done;
  stats_.bytes_sent += traffic.bytes_sent;
  stats_.bytes_received += traffic.bytes_received;
  return n;
}

void Communicator::check_group(const CollectiveCall& call, int n) const {
  if (call.world != 0 && call.world != static_cast<uint32_t>(n)) {
    throw Mismatch(std::string(collective_kind(call.kind).name) + ": the output was sized for " +
                   std::to_string(call.world) + " peers, the group has " + std::to_string(n) +
                   " now: trace the function again (the group size is baked into a jitted "
                   "program's output shape)");
  }
}

SyncOutcome Communicator::sync_shared_state(const std::vector<SharedStateLeaf>& leaves,
                                            uint64_t revision, SyncStrategy strategy,
                                            uint64_t structure) {
  // Like update_topology(): a started collective's partners would wait in it
  // while this peer waits in the sync (no fault, yet both time out).
  if (async_.outstanding() > 0) throw unwaited_start_error("sync_shared_state()");
  std::unique_lock<std::shared_mutex> lock(op_mu_);
  require_accepted();
  check_master();
  if (master_restarted()) {
    throw PeerFailure("the master restarted: call update_topology() to rejoin the run");
  }
  // A sync is a group operation like a collective: afterwards the next
  // update_topology() must check the ring on every member alike. A member
  // may die during the sync, and its drop notice reaches the others at
  // different times; a "fresh topology" no-op on some would split them.
  topology_fresh_ = false;
  SyncContext ctx{&master_, &links_, &server_, peer_id_, config_.timeout_s, &cancel_,
                  ++sync_requests_, registrations_seen_.load()};
  SyncOutcome out;
  try {
    out = run_shared_state_sync(ctx, leaves, revision, strategy, structure);
  } catch (const PcclError& e) {
    rethrow_typed(e);
  }
  std::lock_guard<std::mutex> s(stats_mu_);
  ++stats_.shared_state_syncs;
  stats_.shared_state_bytes_sent += out.tx_bytes;
  stats_.shared_state_bytes_received += out.rx_bytes;
  stats_.shared_state_refetches += out.refetched_leaves;
  stats_.bytes_sent += out.tx_bytes;
  stats_.bytes_received += out.rx_bytes;
  return out;
}

CommunicatorStats Communicator::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  CommunicatorStats s = stats_;
  s.epoch = epoch_seen_.load();
  s.seq = seq_seen_.load();
  return s;
}

void Communicator::close() {
  if (closed_.exchange(true)) return;
  cancel_.cancel();  // wakes any operation in flight; it then releases op_mu_
  interrupt_.cancel();
  async_.close();  // started collectives not yet run fail with CancelledError
  std::unique_lock<std::shared_mutex> lock(op_mu_);
  master_.close();
  links_.close();  // its acceptor hands links to the servers: stop it first
  server_.close();
  probes_.close();
  connected_ = false;
}

}  // namespace pccl
