// Error types of the engine. Each kind maps 1:1 onto a Python exception class
// of the same name (jax_pccl/errors.py); the FFI layer prefixes messages with
// the type name so a JaxRuntimeError can be classified too.
#pragma once
#include <stdexcept>
#include <string>

namespace pccl {

enum class ErrorKind {
  kGeneric,            // PcclError: misuse, closed communicator, bad state
  kPeerFailure,        // a peer died, stalled or closed its link mid-collective
  kMasterUnreachable,  // master cannot be reached / went away
  kMismatch,           // peers called a collective with different arguments
  kProtocol,           // malformed or incompatible frame from the network
  kCancelled,          // close() interrupted the operation
};

const char* error_kind_name(ErrorKind kind);

class PcclError : public std::runtime_error {
 public:
  PcclError(ErrorKind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  explicit PcclError(const std::string& message) : PcclError(ErrorKind::kGeneric, message) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

inline PcclError PeerFailure(const std::string& m) { return PcclError(ErrorKind::kPeerFailure, m); }
inline PcclError MasterUnreachable(const std::string& m) {
  return PcclError(ErrorKind::kMasterUnreachable, m);
}
inline PcclError Mismatch(const std::string& m) { return PcclError(ErrorKind::kMismatch, m); }
inline PcclError ProtocolViolation(const std::string& m) {
  return PcclError(ErrorKind::kProtocol, m);
}
inline PcclError Cancelled(const std::string& m) { return PcclError(ErrorKind::kCancelled, m); }

}  // namespace pccl
