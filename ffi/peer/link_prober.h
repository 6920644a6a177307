// Measuring one directed link for optimize_topology(): the prober opens
// `streams` connections to the probed peer's listener (the ring handshake,
// then PEER_HELLO with LinkPurpose::kLinkProbe), times a few round trips on
// the first before any stream sends bulk bytes, then sends on all of them;
// the probed side counts what arrives in a window from its first byte (its
// own clock, so the streams add up) and answers with PROBE_RESULT at the
// window's end; the prober then resets the connections (its queued bytes are
// dropped, not drained). Several streams, as the ring itself uses, because
// one TCP window cannot fill a long fat link.
//
// LinkProbeServer is the probed side: a thread per connection, bounded in
// number and in time, and a record of which probes ended, so that a peer can
// wait for the probe it expects in a round before starting the next (rounds
// stay aligned: a probe is measured while every other peer also sends one).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include "common/canceller.h"
#include "common/deadline.h"
#include "protocol/messages.h"
#include "protocol/topology_messages.h"
#include "transport/socket.h"

namespace pccl {

class RingLinks;

struct ProbeSpec {
  uint64_t epoch = 0;   // the group's, as in the plan
  uint32_t round = 0;
  int streams = 1;
  double seconds = 1.0;  // how long each stream sends
  int pings = 3;
};

// Probes `to` from this peer; never throws for the link's sake (a failure is
// a figure with ok = false, logged), only Cancelled when `cancel` fires.
LinkFigure probe_link(const RingLinks& links, uint64_t my_id, const RingMember& to,
                      const ProbeSpec& spec, const Deadline& deadline, const Canceller* cancel);

// Whether `to` answers a round trip over a fresh probe connection (handshake,
// one ping, no bulk bytes) before the deadline: after a ring failure, this
// tells a link broken between two live peers (silence) from a slow collective.
bool link_answers(const RingLinks& links, uint64_t my_id, uint64_t epoch, const RingMember& to,
                  const Deadline& deadline, const Canceller* cancel);

class LinkProbeServer {
 public:
  explicit LinkProbeServer(double stall_timeout_s) : stall_timeout_s_(stall_timeout_s) {}
  ~LinkProbeServer() { close(); }
  LinkProbeServer(const LinkProbeServer&) = delete;
  LinkProbeServer& operator=(const LinkProbeServer&) = delete;

  // Hand-off from the listener (RingLinks): an authenticated prober.
  void accept(Socket sock, const PeerHelloMsg& hello);
  // True once every stream of `from`'s probe of (epoch, round) ended here
  // (measured or failed); false at the deadline.
  bool wait_probe(uint64_t from, uint64_t epoch, uint32_t round, const Deadline& deadline);
  void close();

 private:
  struct Connection {
    Socket sock;
    PeerHelloMsg hello;
    std::thread thread;
    bool finished = false;
  };
  using ProbeKey = std::tuple<uint64_t, uint64_t, uint32_t>;  // (from, epoch, round)
  void serve(Connection* c);
  uint32_t serve_probe(Connection* c);  // returns the round
  // Bulk bytes for window_ms from the first one (or until the prober ends).
  ProbeResultMsg count_window(Socket& s, uint32_t window_ms);
  void drain_until_closed(Socket& s);  // after the answer, until the prober resets
  void join_finished();                 // mu_ held

  double stall_timeout_s_;
  Canceller stop_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::list<Connection> conns_;
  struct Ended {
    int streams_ended = 0;
    int streams = 0;  // every stream's PEER_HELLO says how many the probe has
  };
  std::map<ProbeKey, Ended> ended_;  // per probe (bounded)
  bool closed_ = false;
};

}  // namespace pccl
