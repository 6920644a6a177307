// Serves this peer's shared-state leaves to peers that fetch them, while a
// sync is open. The leaves are the caller's own buffers (no copy); publish()
// opens a session, unpublish() ends it and returns only once no connection
// can touch those buffers any more.
//
// A fetcher sends STATE_FETCH (up to kMaxFetchRanges byte ranges); each range
// is answered by a STATE_DATA header and then the raw bytes, straight from
// the leaf. Ranges are checked against the published leaves; a bad one is
// refused, a malformed frame drops the connection.
//
// Test-only fault injection, both unset by default:
//   JAX_PCCL_TEST_CORRUPT_SERVED_RANGES=N flips one bit in the first N ranges
//     this process serves (tests prove corrupted transfers are caught);
//   JAX_PCCL_TEST_KILL_AFTER_SERVED_RANGES=N SIGKILLs this process right after
//     it served N ranges (tests prove a holder dying mid-transfer is survived).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

#include "common/canceller.h"
#include "transport/socket.h"

namespace pccl {

struct ConstSpan {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

class StateServer {
 public:
  explicit StateServer(double stall_timeout_s);
  ~StateServer() { close(); }
  StateServer(const StateServer&) = delete;
  StateServer& operator=(const StateServer&) = delete;

  void publish(std::vector<ConstSpan> leaves);
  // Ends the session: drops every serving connection, waits for them, and
  // returns the payload bytes served during it.
  uint64_t unpublish();
  // Hand-off from the listener (RingLinks): an authenticated fetcher.
  void accept(Socket sock, uint64_t peer_id);
  void close();

 private:
  struct Connection {
    Socket sock;
    uint64_t peer_id = 0;
    std::thread thread;
    bool finished = false;
  };
  void serve(Connection* c);
  void serve_range(Connection* c, const struct StateRange& range);
  void join_finished();  // mu_ held via lock
  bool take_corruption();

  double stall_timeout_s_;
  Canceller stop_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ConstSpan> leaves_;
  bool published_ = false;
  bool closed_ = false;
  uint64_t served_bytes_ = 0;
  std::list<Connection> conns_;
  int64_t corrupt_budget_ = 0;
  int64_t kill_after_ = 0;  // 0: never
  // Test-only: sleep this long before serving each range, so that a test can
  // make one holder slow and be sure the others get their share (fetchers
  // steal an idle holder's chunks; on a loaded machine a fast holder could
  // otherwise serve everything before a faulted one is asked for anything).
  int64_t serve_delay_ms_ = 0;
};

}  // namespace pccl
