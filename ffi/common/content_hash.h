// Content hash of shared-state leaves: XXH64 (Yann Collet's xxHash, 64-bit
// variant), implemented from its published specification.
//
// Why XXH64: it is a widely deployed, well-analysed non-cryptographic hash
// (it passes SMHasher), runs at memory speed on one core (four independent
// 64-bit lanes), has a frozen, documented output with public test vectors,
// and needs no dependency. The hash guards against drift and transfer
// corruption between authenticated peers; it is not meant to resist a peer
// that forges collisions on purpose (docs/security.md).
#pragma once
#include <cstddef>
#include <cstdint>

namespace pccl {

uint64_t xxh64(const void* data, size_t size, uint64_t seed = 0);

}  // namespace pccl
