// A connected pair of local stream sockets whose reading end already holds the
// fuzz input, so the blocking readers (read_frame, the handshake) parse it
// exactly as they parse bytes from the network, EOF included.
#pragma once
#include <cstddef>
#include <cstdint>

#include "transport/socket.h"

namespace pccl_fuzz {

// The most input one pair carries: the rest is cut off (a local socket buffer
// holds at least this much, so writing never blocks).
constexpr size_t kMaxStreamInput = 64 * 1024;

struct FedSocket {
  pccl::Socket reader;  // non-blocking; reads `data`, then EOF
  pccl::Socket writer;  // half-closed for writing; what `reader` sends lands here
};

// Throws std::runtime_error if the pair cannot be made (not a parser finding).
FedSocket feed(const uint8_t* data, size_t size);

}  // namespace pccl_fuzz
