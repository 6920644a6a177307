#include "common/errors.h"

namespace pccl {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kGeneric: return "PcclError";
    case ErrorKind::kPeerFailure: return "PeerFailureError";
    case ErrorKind::kMasterUnreachable: return "MasterUnreachableError";
    case ErrorKind::kMismatch: return "CollectiveMismatchError";
    case ErrorKind::kProtocol: return "ProtocolError";
    case ErrorKind::kCancelled: return "CancelledError";
  }
  return "PcclError";
}

}  // namespace pccl
