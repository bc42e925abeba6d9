#include "worker/backend/host_buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/process_memory.h"

namespace strata::backend {
namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kMmapThreshold = size_t{1} << 20;  // 1 MiB
constexpr size_t kHugePage = size_t{2} << 20;

}  // namespace

absl::StatusOr<std::unique_ptr<HostBuffer>> HostBuffer::Allocate(size_t bytes) {
  if (bytes == 0) bytes = kAlignment;
  if (bytes < kMmapThreshold) {
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* data = std::aligned_alloc(kAlignment, rounded);
    if (data == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", HumanBytes(bytes), " of host memory"));
    }
    std::memset(data, 0, rounded);
    return std::unique_ptr<HostBuffer>(new HostBuffer(data, bytes, 0));
  }
  const size_t mapped = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* data = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot map ", HumanBytes(bytes), " of host memory: ", std::strerror(errno)));
  }
  // Best effort: without THP the buffer still works with 4 KiB pages.
  ::madvise(data, mapped, MADV_HUGEPAGE);
  return std::unique_ptr<HostBuffer>(new HostBuffer(data, bytes, mapped));
}

HostBuffer::~HostBuffer() {
  if (mapped_ > 0) {
    ::munmap(data_, mapped_);
  } else {
    std::free(data_);
  }
}

}  // namespace strata::backend
