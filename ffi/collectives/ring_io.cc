#include "collectives/ring_io.h"

#include <sys/mman.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/errors.h"

namespace pccl {
namespace ring_io {

size_t try_send(int fd, const void* data, size_t n, bool* would_block) {
  ssize_t k = ::send(fd, data, std::min(n, kMaxIoBytes), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (k >= 0) return static_cast<size_t>(k);
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    *would_block = true;
    return 0;
  }
  throw PeerFailure(std::string("lost the link to the right neighbour: ") + std::strerror(errno));
}

size_t try_recv(int fd, void* data, size_t n, bool* would_block) {
  ssize_t k = ::recv(fd, data, std::min(n, kMaxIoBytes), MSG_DONTWAIT);
  if (k > 0) return static_cast<size_t>(k);
  if (k == 0) throw PeerFailure("left neighbour closed the link mid-collective");
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    *would_block = true;
    return 0;
  }
  throw PeerFailure(std::string("lost the link to the left neighbour: ") + std::strerror(errno));
}

bool set_recv_lowat(int fd, size_t bytes) {
  int v = static_cast<int>(std::min<size_t>(std::max<size_t>(bytes, 1), 1 << 30));
  return ::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) == 0;
}

void advise_huge_pages(void* out, size_t bytes) {
  constexpr uintptr_t kHuge = 2u << 20;
  if (bytes < 4 * kHuge) return;
  uintptr_t begin = (reinterpret_cast<uintptr_t>(out) + kHuge - 1) & ~(kHuge - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(out) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

}  // namespace ring_io
}  // namespace pccl
