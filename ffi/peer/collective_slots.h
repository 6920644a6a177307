// Several collectives in flight at once, each on lanes of its own ("slots").
//
// Opt-in: CommunicatorConfig::concurrency is the number of slots S (1, the
// default, runs one collective at a time, as before). A ring hop is K bulk
// connections plus one per small slot (S - 1 of them). Slot 0 stripes the large collectives over the K bulk lanes;
// slots 1.. each own one lane and take the small ones in turn. A slot runs
// its collectives one at a time in start order, on its own thread; the slots
// run at the same time. So a few KiB never queue behind a GiB, the leaves of
// a pytree overlap their round trips, no lane ever carries two collectives at
// once, and at most kConcurrentSlots are in flight.
//
// Which slot a collective takes depends only on the collectives started so
// far in this epoch and their sizes: peers start the same collectives in the
// same order, so each slot sees the same sequence on every peer. Every
// collective still begins with the header exchange on its slot's first lane,
// which compares (epoch, seq): peers that disagree get a Mismatch, never each
// other's data. With S > 1 one kind of disagreement is not caught there:
// peers that put the same collective on different slots (one peer's input
// over kSmallCollectiveMaxBytes, another's not; or update_topology() on one
// peer against a small all_reduce on another) wait on different lanes and
// fail with PeerFailure after the timeout instead of a named Mismatch. That
// is why S = 1 is the default.
#pragma once
#include <cstddef>
#include <cstdint>

#include "protocol/messages.h"

namespace pccl {

// Larger collectives (bytes per peer) go to the bulk slot: they need the
// stripes, and a single lane would keep a small slot busy for long.
constexpr size_t kSmallCollectiveMaxBytes = 1u << 20;

class SlotPicker {
 public:
  explicit SlotPicker(int slots) : slots_(slots) {}
  int pick(size_t bytes) {
    if (slots_ <= 1 || bytes > kSmallCollectiveMaxBytes) return 0;
    return 1 + static_cast<int>(small_++ % static_cast<uint64_t>(slots_ - 1));
  }
  void reset() { small_ = 0; }  // a new epoch: every member starts alike

 private:
  int slots_;
  uint64_t small_ = 0;
};

// Lanes [first, first + count) of a hop's connections.
struct LaneRange {
  size_t first = 0;
  size_t count = 0;
};

// Slot `slot`'s lanes among a hop of `lanes` connections when `slots` slots
// run: the bulk lanes come first, then one per small slot. Empty when the hop
// has too few lanes to hold every slot (no links: alone in the ring).
inline LaneRange slot_lanes(int slot, size_t lanes, int slots) {
  const size_t small_slots = static_cast<size_t>(slots - 1);
  if (lanes <= small_slots) return {};
  size_t bulk = lanes - small_slots;
  if (slot == 0) return {0, bulk};
  return {bulk + static_cast<size_t>(slot) - 1, 1};
}

}  // namespace pccl
