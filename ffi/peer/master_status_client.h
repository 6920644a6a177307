// `jax-pccl status`: asks a master for its status as an authenticated client
// that is not a peer (STATUS_REQUEST in place of HELLO, one STATUS_REPLY).
#pragma once
#include <cstdint>
#include <string>

namespace pccl {

// The master's status JSON (Master::status_json's shape, with recent events
// and, if they fit in kMaxStatusReply, the link figures). Every step
// is bounded by `timeout_s`. Throws MasterUnreachable when the master cannot
// be reached or closes first, PcclError when it refuses the secret or answers
// with an error, ProtocolViolation when the answer is not a status.
std::string fetch_master_status(const std::string& host, uint16_t port, const std::string& secret,
                                double timeout_s);

}  // namespace pccl
