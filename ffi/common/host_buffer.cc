#include "common/host_buffer.h"

#include <sys/mman.h>

#include <string>

#include "common/errors.h"

namespace pccl {
namespace {

constexpr size_t kHugePage = 2u << 20;
constexpr size_t kCacheLine = 64;

}  // namespace

HostBuffer allocate_host_buffer(size_t bytes) {
  bool huge = bytes >= 4 * kHugePage;
  size_t align = huge ? kHugePage : kCacheLine;
  size_t capacity = std::max(align, (bytes + align - 1) / align * align);
  void* p = std::aligned_alloc(align, capacity);
  if (p == nullptr) throw PcclError("out of memory: cannot allocate " + std::to_string(bytes) + " bytes");
  if (huge) madvise(p, capacity, MADV_HUGEPAGE);
  HostBuffer b;
  b.data.reset(static_cast<uint8_t*>(p));
  b.size = bytes;
  return b;
}

}  // namespace pccl
