// How an all_reduce_start ticket rides in the handle's int32 buffer: two
// words per ticket, then the world size (int32[2 * leaves + 1]).
//
// Why two words: the engine's tickets are 64-bit and only ever grow; kept in
// one int32, every wait after 2^31 collectives named a ticket that did not
// exist (issue #17). Why int32 words rather than one int64: JAX without
// jax_enable_x64 has no 64-bit integer arrays, and the handle must work in
// both modes. The bytes are copied as they are: only this file reads them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace pccl {

constexpr size_t kTicketWords = 2;

inline void store_ticket(int32_t* words, uint64_t ticket) {
  static_assert(sizeof(ticket) == kTicketWords * sizeof(int32_t), "two words per ticket");
  std::memcpy(words, &ticket, sizeof(ticket));
}

inline uint64_t load_ticket(const int32_t* words) {
  uint64_t ticket = 0;
  std::memcpy(&ticket, words, sizeof(ticket));
  return ticket;
}

// Leaves a handle buffer of `elements` int32 holds; 0 if no valid count.
inline size_t ticket_leaves(size_t elements) {
  if (elements < kTicketWords + 1 || (elements - 1) % kTicketWords != 0) return 0;
  return (elements - 1) / kTicketWords;
}

}  // namespace pccl
