#pragma once
// A link's bandwidth from what the probed side counted on each stream of one
// probe (ffi/peer/link_prober.cc). Pure, so that it is tested alone.

#include <cstdint>
#include <vector>

#include "protocol/topology_messages.h"

namespace pccl {

// Bytes per second: the higher of the whole window's rate (all streams'
// bytes over the span from the first byte to the last, on the probed peer's
// clock) and the tails' rate (the bytes of every stream's last quarter over
// the span from the earliest tail's start to the latest last byte).
// Not the sum of the streams' own tail rates: their windows start at their
// own first bytes, so a stream whose window ends late gets the bandwidth the
// others left, and the sum overrated 100 Mbit/s paths at 146-149 Mbit/s.
// Every byte counted arrived within the span it is divided by, so the tails'
// rate never exceeds what the path carried.
// A window of a second on a path of 100+ ms RTT is mostly TCP slow start,
// so its average says 100-200 Mbit/s of a 1 Gbit/s path, less than a short
// 100 Mbit/s path measures; the tail is nearer the path's rate, and on a
// path that its first bytes already fill the two agree. The tails count
// only if they span at least `min_tail_us` (a sender that stopped early
// leaves a short tail whose rate means little). 0 when no bytes came.
uint64_t probe_rate(const std::vector<ProbeResultMsg>& streams, uint64_t min_tail_us);

}  // namespace pccl
