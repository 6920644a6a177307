// Non-blocking socket steps shared by the ring pipelines. Each moves what it
// can now and reports whether it would block; errors become PeerFailure.
#pragma once
#include <cstddef>

#include "common/canceller.h"
#include "common/deadline.h"

namespace pccl {
namespace ring_io {

constexpr size_t kMaxIoBytes = 4 << 20;  // per syscall, so both directions interleave

// Bytes sent (0 and *would_block=true if the socket is full).
size_t try_send(int fd, const void* data, size_t n, bool* would_block);
// Bytes received (0 and *would_block=true if nothing is there). EOF throws.
size_t try_recv(int fd, void* data, size_t n, bool* would_block);
// Sleeps until a wanted direction is ready, the interrupt fires (throws
// Cancelled) or the stall deadline passes (throws PeerFailure).
void wait(int send_fd, bool want_send, int recv_fd, bool want_recv, const Canceller* interrupt,
          const Deadline& stall, double stall_timeout_s);
// Large outputs are usually fresh, untouched allocations: ask for huge pages
// so first-touch costs a few hundred page faults instead of tens of thousands.
void advise_huge_pages(void* out, size_t bytes);

}  // namespace ring_io
}  // namespace pccl
