// Collectives over buffers that live on an accelerator, staged through host
// memory (the engine's rings work on host memory), with the copies
// overlapping the ring:
//   start: every leaf's copy to the host is queued at once; leaf i's
//          collective starts as soon as its own copy is over, while the
//          later leaves are still being copied;
//   wait:  each result is copied back to the device as soon as its
//          collective ends, in the order they end, while the others are
//          still on the ring.
// What the accelerator does is behind DeviceCopies (the CUDA handler: XLA's
// stream, ffi/xla/cuda/cuda_stream_copies.h; the tests: host memory with
// copies that complete when waited for). No XLA, CUDA or Python here, so the
// engine's C++ tests run it with real peers (ffi/tests/test_staged_leaves.cc).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "peer/communicator.h"

namespace pccl {

class DeviceCopies {
 public:
  virtual ~DeviceCopies() = default;
  // A host buffer of `bytes` for this call's copies, valid while this object
  // lives (which must wait out the copies still queued when it goes).
  virtual void* staging(size_t bytes) = 0;
  // Queues a copy device -> host; returns its number (0, 1, ...) for wait_copied.
  virtual size_t to_host(void* host, const void* device, size_t bytes) = 0;
  // Blocks until device -> host copy `copy` is over.
  virtual void wait_copied(size_t copy) = 0;
  // Queues a copy host -> device, after everything queued before it.
  virtual void to_device(void* device, const void* host, size_t bytes) = 0;
  // Blocks until every queued copy is over.
  virtual void finish() = 0;
  // What the pipeline does, as it happens, for tests to check the overlap:
  // a leaf started (its collective handed to the engine, on the caller's
  // thread); the wait holding every leaf (on the caller's thread, `leaf` =
  // how many); a leaf ended (its result in staging, on the engine thread
  // that ended it, or on the caller's if it had ended before the wait).
  enum class Step { kStarted, kWaiting, kEnded };
  virtual void observe(Step, size_t /*leaf*/) {}
};

// A leaf's result on the device.
struct DeviceResult {
  void* data = nullptr;
  size_t bytes = 0;
};

// Starts `calls` (in: device memory; out: unused) in leaf order, each as
// soon as its copy to the host is over; appends each ticket to `tickets` as
// it is started, so that on a throw (the engine refusing leaf i) the caller
// knows which ones run. The engine copies each input when it starts it:
// nothing staged is needed after this returns.
void start_staged(Communicator& comm, const std::vector<CollectiveCall>& calls,
                  DeviceCopies& device, std::vector<uint64_t>& tickets);

// Waits for every ticket, copying result i to results[i] as soon as it is
// in; returns once every leaf ended and every copy back is over (finish()).
// Returns the peers that took part; throws the most telling error of the
// leaves (more_telling) after all of them ended, the others' copies done.
int wait_staged(Communicator& comm, const std::vector<uint64_t>& tickets,
                const std::vector<DeviceResult>& results, DeviceCopies& device);

// Both, for the synchronous collective: if the engine refuses leaf i, the
// leaves already started are still waited for (their results dropped), so
// that none is left running over this call, and the refusal is rethrown.
int run_staged(Communicator& comm, const std::vector<CollectiveCall>& calls,
               const std::vector<DeviceResult>& results, DeviceCopies& device);

}  // namespace pccl
