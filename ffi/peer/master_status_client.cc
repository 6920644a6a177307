#include "peer/master_status_client.h"

#include "common/deadline.h"
#include "common/errors.h"
#include "protocol/messages.h"
#include "security/handshake_io.h"
#include "transport/frame.h"
#include "transport/socket.h"

namespace pccl {

std::string fetch_master_status(const std::string& host, uint16_t port, const std::string& secret,
                                double timeout_s) {
  const std::string where = host + ":" + std::to_string(port);
  Deadline deadline = Deadline::after(timeout_s);
  Socket s;
  try {
    s = Socket::connect_to(host, port, deadline, nullptr);
  } catch (const PcclError& e) {
    throw MasterUnreachable("master " + where + " unreachable: " + e.what());
  }
  std::string key = secret;
  Secret proof = take_secret(key);
  try {
    client_handshake(s, proof, kAuthContextMaster, deadline, nullptr);
    write_frame(s, static_cast<uint16_t>(MsgType::kStatusRequest), {}, deadline, nullptr);
    Frame f = read_frame(s, kMaxStatusReply, deadline, nullptr);
    if (f.type == static_cast<uint16_t>(MsgType::kError)) {
      throw PcclError("master " + where + " refused the status request: " +
                      ErrorMsg::decode(f.payload).message);
    }
    if (f.type != static_cast<uint16_t>(MsgType::kStatusReply)) {
      throw ProtocolViolation("master " + where + " answered the status request with message " +
                              std::to_string(f.type));
    }
    return std::string(f.payload.begin(), f.payload.end());
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kPeerFailure) {
      throw MasterUnreachable("master " + where + ": " + e.what());
    }
    if (e.kind() == ErrorKind::kGeneric && std::string(e.what()).find(where) == std::string::npos) {
      throw PcclError("authentication with master " + where + " failed: " + e.what());
    }
    throw;
  }
}

}  // namespace pccl
