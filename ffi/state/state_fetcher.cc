#include "state/state_fetcher.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "common/content_hash.h"
#include "common/stopwatch.h"
#include "common/errors.h"
#include "common/log.h"
#include "protocol/shared_state_messages.h"
#include "state/leaf_hashes.h"
#include "transport/frame.h"

namespace pccl {
namespace {

constexpr size_t kChunksPerRequest = 4;
constexpr size_t kRequestsAhead = 2;  // keeps the holder's send queue busy across a round trip
constexpr uint32_t kMaxDataHeader = 64;

struct Chunk {
  size_t target = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t preferred = 0;  // the holder it is dealt to; others take it only when idle
  enum State { kFree, kTaken, kDone } state = kFree;
};

// The chunks of one fetch, shared by its workers.
class ChunkPool {
 public:
  ChunkPool(const std::vector<FetchTarget>& targets, uint64_t chunk_bytes) : targets_(targets) {
    // Chunks are dealt round-robin over each leaf's holders, so that every
    // holder serves its share in parallel from the start.
    size_t dealt = 0;
    for (size_t t = 0; t < targets.size(); ++t) {
      const auto& holders = targets[t].holders;
      for (uint64_t off = 0; off < targets[t].nbytes; off += chunk_bytes, ++dealt) {
        uint64_t preferred = holders.empty() ? 0 : holders[dealt % holders.size()].peer_id;
        chunks_.push_back({t, off, std::min(chunk_bytes, targets[t].nbytes - off), preferred});
      }
    }
  }

  // Up to `max` free chunks that `holder` can serve (their indices): its own
  // share first, then, once that is exhausted, anybody's (work stealing) if
  // `proven` (the caller has received data already) or nothing is in flight.
  // A worker that has not yet served anything must not steal: at the start
  // the first worker scheduled would otherwise take every other holder's
  // share before their workers ran, and one holder would serve everything.
  std::vector<size_t> take(uint64_t holder, size_t max, bool proven) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<size_t> out;
    for (bool own : {true, false}) {
      if (!own && (!out.empty() || !may_steal(proven))) break;  // steal only when idle
      for (size_t i = 0; i < chunks_.size() && out.size() < max; ++i) {
        Chunk& c = chunks_[i];
        if (c.state != Chunk::kFree || (own && c.preferred != holder) || !serves(holder, c)) continue;
        c.state = Chunk::kTaken;
        ++in_flight_;
        out.push_back(i);
      }
    }
    return out;
  }

  const Chunk& chunk(size_t i) const { return chunks_[i]; }

  void done(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    chunks_[i].state = Chunk::kDone;
    --in_flight_;
    ++done_;
    cv_.notify_all();
  }

  // A failed worker's unfinished chunks go back for the others.
  void give_back(const std::vector<size_t>& taken) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i : taken) {
      if (chunks_[i].state != Chunk::kTaken) continue;
      chunks_[i].state = Chunk::kFree;
      --in_flight_;
    }
    cv_.notify_all();
  }

  void fail_holder(uint64_t holder, const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    errors_ << (errors_.tellp() > 0 ? "; " : "") << "peer " << holder << ": " << why;
    cv_.notify_all();
  }

  // True once `holder` has something to do (see take()); false when it never
  // will (everything is done, or nothing is left for it and nobody is busy).
  bool wait_for_work(uint64_t holder, bool proven, const Canceller* cancel) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (done_ == chunks_.size()) return false;
      for (const Chunk& c : chunks_) {
        if (c.state != Chunk::kFree || !serves(holder, c)) continue;
        if (c.preferred == holder || may_steal(proven)) return true;
      }
      if (in_flight_ == 0) return false;
      if (cancel != nullptr && cancel->cancelled()) return false;
      cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
  }

  // The first leaf left incomplete, or -1.
  long first_missing() const {
    for (const Chunk& c : chunks_) {
      if (c.state != Chunk::kDone) return static_cast<long>(c.target);
    }
    return -1;
  }
  std::string errors() const { return errors_.str(); }

 private:
  // With nothing in flight, the free chunks are nobody's work any more (their
  // holders failed): any worker takes them, or the fetch would stall.
  bool may_steal(bool proven) const { return proven || in_flight_ == 0; }

  bool serves(uint64_t holder, const Chunk& c) const {
    for (const RingMember& h : targets_[c.target].holders) {
      if (h.peer_id == holder) return true;
    }
    return false;
  }

  const std::vector<FetchTarget>& targets_;
  std::vector<Chunk> chunks_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t in_flight_ = 0;
  size_t done_ = 0;
  std::ostringstream errors_;
};

class Worker {
 public:
  Worker(const std::vector<FetchTarget>& targets, ChunkPool& pool, const FetchSettings& settings,
         const RingMember& holder)
      : targets_(targets), pool_(pool), settings_(settings), holder_(holder) {}

  uint64_t run() {
    std::deque<std::vector<size_t>> outstanding;
    try {
      Socket sock = settings_.connect(holder_, Deadline::after(settings_.stall_timeout_s));
      for (;;) {
        while (outstanding.size() < kRequestsAhead) {
          std::vector<size_t> batch = pool_.take(holder_.peer_id, kChunksPerRequest, received_ > 0);
          if (batch.empty()) break;
          outstanding.push_back(batch);  // before sending: give_back() covers it on failure
          request(sock, batch);
        }
        if (outstanding.empty()) {
          if (!pool_.wait_for_work(holder_.peer_id, received_ > 0, settings_.cancel)) break;
          continue;
        }
        receive(sock, outstanding.front());
        outstanding.pop_front();
      }
    } catch (const PcclError& e) {
      for (const auto& batch : outstanding) pool_.give_back(batch);
      if (e.kind() != ErrorKind::kCancelled) {
        PCCL_LOG(kWarn, "state: fetching from peer " << holder_.peer_id << " failed: " << e.what());
      }
      pool_.fail_holder(holder_.peer_id, e.what());
    } catch (const std::exception& e) {  // e.g. out of memory: never escape a thread
      for (const auto& batch : outstanding) pool_.give_back(batch);
      pool_.fail_holder(holder_.peer_id, e.what());
    }
    return received_;
  }

 private:
  void request(Socket& sock, const std::vector<size_t>& batch) {
    StateFetchMsg msg;
    for (size_t i : batch) {
      const Chunk& c = pool_.chunk(i);
      msg.ranges.push_back({targets_[c.target].leaf, c.offset, c.length});
    }
    write_frame(sock, static_cast<uint16_t>(MsgType::kStateFetch), msg.encode(),
                Deadline::after(settings_.stall_timeout_s), settings_.cancel);
  }

  void receive(Socket& sock, const std::vector<size_t>& batch) {
    for (size_t i : batch) {
      const Chunk& c = pool_.chunk(i);
      const FetchTarget& t = targets_[c.target];
      Deadline deadline = Deadline::after(settings_.stall_timeout_s);
      Frame f = read_frame(sock, kMaxDataHeader, deadline, settings_.cancel);
      if (f.type != static_cast<uint16_t>(MsgType::kStateData)) {
        throw ProtocolViolation("expected STATE_DATA from the holder");
      }
      StateDataMsg head = StateDataMsg::decode(f.payload);
      if (head.range.leaf != t.leaf || head.range.offset != c.offset ||
          head.range.length != c.length) {
        throw ProtocolViolation("holder answered a range that was not asked for");
      }
      if (head.ok == 0) throw PeerFailure("holder refused the range (its sync is no longer open)");
      sock.recv_all(t.dest + c.offset, c.length, deadline, settings_.cancel);
      received_ += c.length;
      pool_.done(i);
    }
  }

  const std::vector<FetchTarget>& targets_;
  ChunkPool& pool_;
  const FetchSettings& settings_;
  RingMember holder_;
  uint64_t received_ = 0;
};

// One pass: every chunk of `targets` from any of their holders, in parallel.
uint64_t fetch_pass(const std::vector<FetchTarget>& targets, const FetchSettings& settings) {
  std::vector<RingMember> holders;
  for (const FetchTarget& t : targets) {
    for (const RingMember& h : t.holders) {
      bool seen = std::any_of(holders.begin(), holders.end(),
                              [&](const RingMember& m) { return m.peer_id == h.peer_id; });
      if (!seen) holders.push_back(h);
    }
  }
  ChunkPool pool(targets, settings.chunk_bytes);
  // Several streams per holder spread the kernel's copy work over cores;
  // with many holders one each is plenty.
  int streams = holders.size() >= 8 ? 1 : std::max(1, settings.streams_per_holder);
  std::vector<Worker> workers;
  for (const RingMember& h : holders) {
    for (int s = 0; s < streams; ++s) workers.emplace_back(targets, pool, settings, h);
  }
  std::vector<uint64_t> received(workers.size(), 0);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < workers.size(); ++i) {
    threads.emplace_back([&, i] { received[i] = workers[i].run(); });
  }
  for (auto& t : threads) t.join();
  if (settings.cancel != nullptr && settings.cancel->cancelled()) {
    throw Cancelled("shared-state transfer cancelled");
  }
  long missing = pool.first_missing();
  if (missing >= 0) {
    throw PeerFailure("shared-state leaf " + std::to_string(targets[missing].leaf) +
                      " could not be fetched: every holder failed (" + pool.errors() + ")");
  }
  uint64_t total = 0;
  for (uint64_t r : received) total += r;
  return total;
}

bool intact(const FetchTarget& t) { return xxh64(t.dest, t.nbytes) == t.expected_hash; }

std::string hex(uint64_t v) {
  std::ostringstream os;
  os << "0x" << std::hex << v;
  return os.str();
}

// Fetches `t` whole from one holder after another until it arrives intact.
void refetch(const FetchTarget& t, const FetchSettings& settings, FetchReport* report) {
  std::string tried;
  for (const RingMember& h : t.holders) {
    FetchTarget one = t;
    one.holders = {h};
    FetchSettings single = settings;
    single.streams_per_holder = 1;
    tried += (tried.empty() ? "" : ", ") + std::to_string(h.peer_id);
    try {
      report->rx_bytes += fetch_pass({one}, single);
    } catch (const PcclError& e) {
      if (e.kind() == ErrorKind::kCancelled) throw;
      continue;  // this holder is gone; try the next
    }
    if (intact(t)) {
      PCCL_LOG(kWarn, "state: leaf " << t.leaf << " arrived corrupted; fetched again intact from peer "
                                     << h.peer_id);
      return;
    }
  }
  throw ProtocolViolation("shared-state leaf " + std::to_string(t.leaf) +
                          ": received bytes do not match the elected hash " +
                          hex(t.expected_hash) + " from any holder (peers " + tried +
                          "); corrupted data was not accepted");
}

}  // namespace

FetchReport fetch_shared_state(const std::vector<FetchTarget>& targets,
                               const FetchSettings& settings) {
  FetchReport report;
  if (targets.empty()) return report;
  Stopwatch clock;
  report.rx_bytes = fetch_pass(targets, settings);
  report.fetch_s = clock.lap();
  std::vector<ConstSpan> received;
  for (const FetchTarget& t : targets) received.push_back({t.dest, t.nbytes});
  std::vector<uint64_t> hashes = hash_leaves(received);
  for (size_t i = 0; i < targets.size(); ++i) {
    if (hashes[i] == targets[i].expected_hash) continue;
    ++report.refetched_leaves;
    refetch(targets[i], settings, &report);
  }
  report.verify_s = clock.lap();
  return report;
}

}  // namespace pccl
