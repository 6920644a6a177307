#pragma once
// A link's bandwidth from what the probed side counted on each stream of one
// probe (ffi/peer/link_prober.cc). Pure, so that it is tested alone.

#include <cstdint>
#include <vector>

#include "protocol/topology_messages.h"

namespace pccl {

// Bytes per second: the higher of the whole window's rate (all streams'
// bytes over the span from the first byte to the last, on the probed peer's
// clock) and the sum of the streams' rates in their windows' last quarter.
// A window of a second on a path of 100+ ms RTT is mostly TCP slow start,
// so its average says 100-200 Mbit/s of a 1 Gbit/s path, less than a short
// 100 Mbit/s path measures; the tail is nearer the path's rate, and on a
// path that its first bytes already fill the two agree. A stream's tail
// counts only if it spans at least `min_tail_us` (a sender that stopped
// early leaves a short tail whose rate means little). 0 when no bytes came.
uint64_t probe_rate(const std::vector<ProbeResultMsg>& streams, uint64_t min_tail_us);

}  // namespace pccl
