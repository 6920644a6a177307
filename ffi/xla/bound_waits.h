// Tickets handed from an all_reduce_wait's synchronous bind call to its
// asynchronous wait call, under (communicator handle, call site).
//
// Why two calls: XLA's CPU runtime orders thunks by the buffers they touch,
// and an asynchronous thunk counts as touching its buffers until it
// completes. Buffer assignment reuses dead bytes for later temporaries, so a
// wait that read its tickets (or wrote a world-size scalar) would make any
// later kernel that reuses those bytes wait for the end of the collective:
// the compute meant to overlap it ran after it instead. The bind call reads
// the tickets and returns at once; the wait then touches only its results.
//
// Both calls carry the collective token, so nothing of ours runs between
// them, and one compiled program never runs twice at once (its ordered
// effect chains its runs), so a (handle, site) key holds at most one entry.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

namespace pccl {

// Replaces what a run aborted between bind and wait may have left behind.
void bind_wait(int64_t comm_handle, int64_t site, std::vector<uint64_t> tickets);
// The bound tickets, removed; nullopt if none were bound.
std::optional<std::vector<uint64_t>> take_bound_wait(int64_t comm_handle, int64_t site);
// Drops every entry of a communicator being closed.
void forget_bound_waits(int64_t comm_handle);

}  // namespace pccl
