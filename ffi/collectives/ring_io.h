// Non-blocking socket steps of the ring's lanes (ring_lanes.h). Each moves
// what it can now and reports whether it would block; errors become PeerFailure.
#pragma once
#include <cstddef>

namespace pccl {
namespace ring_io {

constexpr size_t kMaxIoBytes = 4 << 20;  // per syscall, so both directions interleave

// Bytes sent (0 and *would_block=true if the socket is full).
size_t try_send(int fd, const void* data, size_t n, bool* would_block);
// Bytes received (0 and *would_block=true if nothing is there). EOF throws.
size_t try_recv(int fd, void* data, size_t n, bool* would_block);
// SO_RCVLOWAT: poll reports fd readable (and TCP wakes the reader) only once
// `bytes` are queued, or on EOF / error. Best effort: false if refused.
bool set_recv_lowat(int fd, size_t bytes);
// Large outputs are usually fresh, untouched allocations: ask for huge pages
// so first-touch costs a few hundred page faults instead of tens of thousands.
void advise_huge_pages(void* out, size_t bytes);

}  // namespace ring_io
}  // namespace pccl
