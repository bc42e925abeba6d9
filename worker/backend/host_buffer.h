// Zero-filled, 64-byte aligned host memory (RAII). Large buffers come from
// anonymous mmap with transparent huge pages requested, so that streaming
// gigabytes of weights costs few TLB misses; pages are committed on first
// touch.
//
// Thread-safety: the buffer is plain memory; callers synchronise access.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"

namespace strata::backend {

class HostBuffer {
 public:
  // RESOURCE_EXHAUSTED when the memory cannot be reserved.
  static absl::StatusOr<std::unique_ptr<HostBuffer>> Allocate(size_t bytes);
  ~HostBuffer();
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  HostBuffer(void* data, size_t size, size_t mapped) : data_(data), size_(size), mapped_(mapped) {}
  void* data_;
  size_t size_;
  size_t mapped_;  // bytes mapped with mmap; 0 when from the heap
};

}  // namespace strata::backend
