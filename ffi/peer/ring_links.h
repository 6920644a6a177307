// The TCP links of one peer to its ring neighbours. Each peer sends on the
// connections it opened to its right neighbour and receives on those its left
// neighbour opened to it; an acceptor thread files incoming links by (peer id,
// epoch, stream) so that a stale link can never be mistaken for a new one.
// A hop is `streams` connections (striping, see collectives/ring_stripes.h):
// the sender chooses how many and says so in every PEER_HELLO.
// Every link starts with the authentication handshake (context "ring"): the
// acceptor is its server side, establish() its client side. A connection
// that fails it, or sends anything before it, is dropped with a logged reason.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/canceller.h"
#include "common/deadline.h"
#include "protocol/messages.h"
#include "security/handshake.h"
#include "transport/frame.h"
#include "transport/socket.h"

namespace pccl {

class RingLinks {
 public:
  RingLinks() = default;
  ~RingLinks() { close(); }
  RingLinks(const RingLinks&) = delete;
  RingLinks& operator=(const RingLinks&) = delete;

  // Authenticated connections that come to fetch shared state are handed to
  // this (see state/state_server.h); without one they are dropped.
  using StateLinkHandler = std::function<void(Socket sock, uint64_t peer_id)>;
  // Those that come to probe the link (peer/link_prober.h) are handed to this.
  using ProbeLinkHandler = std::function<void(Socket sock, const PeerHelloMsg& hello)>;

  // `secret` (empty: none) is used for both directions of every link.
  void listen(const std::string& bind_host, uint32_t group, const std::string& secret,
              StateLinkHandler on_state_link = nullptr, ProbeLinkHandler on_probe_link = nullptr);
  uint16_t port() const { return port_; }

  // Replaces the current links with those of `epoch`: `streams` connections
  // to the right neighbour, and as many from the left as it opens. Throws
  // PeerFailure (also when the right neighbour refuses or fails the handshake).
  // `slots` (1..kConcurrentSlots) is this peer's collective concurrency; it
  // travels in every PEER_HELLO, and left_slots() says the left neighbour's.
  void establish(uint64_t my_id, uint64_t epoch, const RingMember& right, uint64_t left_id,
                 const Deadline& deadline, const Canceller* cancel, int streams = 1,
                 int slots = 1);
  int left_slots() const { return left_slots_; }
  // A connection to `holder`'s listener for fetching shared state: same
  // handshake as a ring link, then PEER_HELLO with LinkPurpose::kStateFetch.
  Socket open_state_link(uint64_t my_id, const RingMember& holder, const Deadline& deadline,
                         const Canceller* cancel) const;
  // Stream `stream` of `streams` of a probe of the link to `to` (purpose
  // kLinkProbe; `epoch` is the group's, naming the optimisation).
  Socket open_probe_link(uint64_t my_id, uint64_t epoch, const RingMember& to, int stream,
                         int streams, const Deadline& deadline, const Canceller* cancel) const;
  // The links are replaced only by establish(), drop_links() and close(),
  // which callers must not run while a collective uses them (the
  // communicator's topology lock); everything below may run concurrently.
  // Connection `lane` of each side (none: an invalid socket).
  Socket& right(size_t lane = 0) { return lane < right_.size() ? right_[lane] : none_; }
  Socket& left(size_t lane = 0) { return lane < left_.size() ? left_[lane] : none_; }
  size_t right_lanes() const { return right_.size(); }
  size_t left_lanes() const { return left_.size(); }
  // The fds of connections [first, first + count) of each side.
  std::vector<int> right_fds(size_t first, size_t count) const;
  std::vector<int> left_fds(size_t first, size_t count) const;
  bool connected() const { return !right_.empty() && !left_.empty(); }
  // Shuts every link down, so that both neighbours, and every thread of ours
  // blocked on one, see EOF at once (fail fast); what we sent still arrives.
  // The sockets stay in place until the next establish(): other threads may
  // be reading them.
  void break_links();
  // The same after a collective failed on the ring, with resets (see
  // reset_connection in transport/socket.h): a neighbour blocked sending to
  // us fails at once even when we stopped reading its window.
  void reset_links();
  void drop_links();  // break_links(), then forget them (no concurrent users)
  void close();
  // How long a neighbour's links may wait for this peer's establish(); the
  // default outlasts every honest opener (it gives up after its timeout).
  // Tests shorten it, before listen() (the acceptor thread reads it).
  void set_park_seconds(double seconds) { park_seconds_ = seconds; }

 private:
  struct Incoming {  // an accepted connection that has not said who it is yet
    Socket sock;
    Deadline deadline;
    std::unique_ptr<ServerHandshake> auth;  // non-null until authenticated
    std::string where;
    // Never a blocking read: a client stalled mid-frame must not hold up the
    // acceptor, and with it every other neighbour (it waits for its deadline).
    FrameReader reader;
  };
  enum class Read { kFrame, kWaiting, kFailed };
  void acceptor_loop();
  Read receive(Incoming& in, Frame& out);  // kFailed: dropped, with a log line
  bool authenticate(Incoming& in, const Frame& m2);  // false: refused or failed, drop it
  void finish_handshake(Socket s, const Frame& hello);
  // Files an incoming ring connection (mu_ held); throws ProtocolViolation
  // for a duplicate or inconsistent stream, leaving `s` with the caller.
  void file_link(const PeerHelloMsg& hello, Socket& s);
  // Connects and authenticates a side link (state fetch, probe) and says what it is for.
  Socket open_side_link(const RingMember& to, const PeerHelloMsg& hello, const char* what,
                        const Deadline& deadline, const Canceller* cancel) const;
  Socket open_link(uint64_t my_id, uint64_t epoch, const RingMember& right, int stream,
                   int streams, const Deadline& deadline, const Canceller* cancel) const;
  std::vector<Socket> open_links(uint64_t my_id, uint64_t epoch, const RingMember& right,
                                 int streams, const Deadline& deadline,
                                 const Canceller* cancel) const;

  struct IncomingLinks {  // one neighbour's connections for one epoch
    std::vector<Socket> streams;
    int slots = 1;
    size_t filed = 0;
    Deadline expires = Deadline::never();  // parked past this: its opener gave up
    uint64_t arrival = 0;                  // filing order: the oldest goes first
    bool complete() const { return filed == streams.size(); }
  };
  using LinkKey = std::pair<uint64_t, uint64_t>;  // (peer id, epoch)
  // Parked links are bounded (mu_ held): expired ones are dropped, and when
  // every place is taken a newcomer displaces the entry farthest ahead of the
  // current epoch (the oldest among equals), never the one establish() waits
  // for. False: the newcomer itself is the farthest ahead; refuse it.
  void drop_expired_links();
  bool make_room_for(const LinkKey& key);

  uint32_t group_ = 0;
  int my_slots_ = 1;    // what our PEER_HELLOs say (set by establish)
  int left_slots_ = 1;  // what the left neighbour's said
  Secret secret_;
  StateLinkHandler on_state_link_;
  ProbeLinkHandler on_probe_link_;
  Socket listener_;
  uint16_t port_ = 0;
  Canceller stop_;
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<LinkKey, IncomingLinks> incoming_;
  uint64_t current_epoch_ = 0;
  // What establish() waits for. Not a sentinel key: a hostile PEER_HELLO
  // could name any (peer id, epoch), and the awaited entry never expires.
  std::optional<LinkKey> awaited_;
  uint64_t arrivals_ = 0;
  double park_seconds_ = 120.0;
  std::vector<Socket> right_;
  std::vector<Socket> left_;
  Socket none_;  // what right()/left() return without links
};

}  // namespace pccl
