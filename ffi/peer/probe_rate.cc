#include "peer/probe_rate.h"

#include <algorithm>
#include <limits>

namespace pccl {

uint64_t probe_rate(const std::vector<ProbeResultMsg>& streams, uint64_t min_tail_us) {
  const uint64_t none = std::numeric_limits<uint64_t>::max();
  uint64_t bytes = 0, first = none, last = 0;
  uint64_t tail_bytes = 0, tail_first = none, tail_last = 0;
  for (const ProbeResultMsg& s : streams) {
    if (s.bytes == 0) continue;
    bytes += s.bytes;
    first = std::min(first, s.first_us);
    last = std::max(last, s.last_us);
    if (s.tail_bytes > 0) {
      tail_bytes += s.tail_bytes;
      tail_first = std::min(tail_first, s.tail_from_us);
      tail_last = std::max(tail_last, s.last_us);
    }
  }
  if (bytes == 0) return 0;
  double whole = static_cast<double>(bytes) / (std::max<uint64_t>(last - first, 1) * 1e-6);
  double tail = 0;
  if (tail_bytes > 0 && tail_last - tail_first >= std::max<uint64_t>(min_tail_us, 1)) {
    tail = static_cast<double>(tail_bytes) / (static_cast<double>(tail_last - tail_first) * 1e-6);
  }
  return static_cast<uint64_t>(std::max(whole, tail));
}

}  // namespace pccl
