#include "peer/probe_rate.h"

#include <algorithm>
#include <limits>

namespace pccl {

uint64_t probe_rate(const std::vector<ProbeResultMsg>& streams, uint64_t min_tail_us) {
  uint64_t bytes = 0, first = std::numeric_limits<uint64_t>::max(), last = 0;
  double tail_rate = 0;
  for (const ProbeResultMsg& s : streams) {
    if (s.bytes == 0) continue;
    bytes += s.bytes;
    first = std::min(first, s.first_us);
    last = std::max(last, s.last_us);
    uint64_t tail_us = s.last_us - std::min(s.tail_from_us, s.last_us);
    if (s.tail_bytes > 0 && tail_us >= std::max<uint64_t>(min_tail_us, 1)) {
      tail_rate += static_cast<double>(s.tail_bytes) / (static_cast<double>(tail_us) * 1e-6);
    }
  }
  if (bytes == 0) return 0;
  double whole = static_cast<double>(bytes) / (std::max<uint64_t>(last - first, 1) * 1e-6);
  return static_cast<uint64_t>(std::max(whole, tail_rate));
}

}  // namespace pccl
