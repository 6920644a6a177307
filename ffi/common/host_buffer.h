// An owned, aligned block of host memory for bytes received from the network.
// Large blocks are huge-page aligned and advised: faulting in hundreds of MiB
// page by page costs more than receiving them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace pccl {

struct HostBuffer {
  std::unique_ptr<uint8_t, void (*)(void*)> data{nullptr, &std::free};
  size_t size = 0;
};

// Throws PcclError when the memory cannot be had.
HostBuffer allocate_host_buffer(size_t bytes);

}  // namespace pccl
