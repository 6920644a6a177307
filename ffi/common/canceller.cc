#include "common/canceller.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "common/errors.h"

namespace pccl {

Canceller::Canceller() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (fd_ < 0) throw PcclError("eventfd() failed");
}

Canceller::~Canceller() { close(fd_); }

void Canceller::cancel() {
  if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
  uint64_t one = 1;
  // The eventfd stays readable forever after: every poll() including it wakes.
  ssize_t ignored = write(fd_, &one, sizeof(one));
  (void)ignored;
}

void Canceller::reset() {
  uint64_t value = 0;
  while (read(fd_, &value, sizeof(value)) > 0) {
  }
  cancelled_.store(false, std::memory_order_release);
}

}  // namespace pccl
