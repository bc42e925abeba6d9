#include "worker/backend/cuda/step_graphs.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "worker/backend/cuda/cuda_memory.h"

namespace strata::backend::cuda {
namespace {

// A key is captured at its second sighting: a one-off segment (loading,
// a prefill of an unusual length) never pays for a capture.
constexpr int kSightingsBeforeCapture = 2;
// Cached graphs; beyond this the cache starts over (a replica sees a handful
// of decode batch sizes in steady state).
constexpr size_t kMaxGraphs = 64;
// Keys seen once (prefills of ever new lengths) are forgotten past this many,
// so that a long-running replica does not accumulate them.
constexpr size_t kMaxSightings = 1024;
constexpr size_t kMinArenaBytes = size_t{1} << 20;

template <typename T>
void AppendBytes(std::string& key, const T& value) {
  key.append(reinterpret_cast<const char*>(&value), sizeof(value));
}

}  // namespace

StepGraphs::~StepGraphs() {
  ClearGraphs();
  if (leading_arena_.data != nullptr) cudaFreeHost(leading_arena_.data);
  if (graph_arena_.data != nullptr) cudaFreeHost(graph_arena_.data);
}

void StepGraphs::ClearGraphs() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
  sightings_.clear();
}

void StepGraphs::AddOp(std::string_view key, Launcher launch) {
  AppendBytes(key_, key.size());
  key_.append(key);
  ops_.push_back(std::move(launch));
  key_ends_.push_back(key_.size());
  op_host_copy_.push_back(-1);
}

absl::StatusOr<std::byte*> StepGraphs::Stage(Arena& arena, size_t bytes) {
  if (arena.used + bytes > arena.capacity) {
    // Pending copies point into the arena: run them first (this empties it).
    if (absl::Status s = Flush(); !s.ok()) return s;
  }
  if (bytes > arena.capacity) {
    // A larger arena: cached graphs that copy through the old one go too.
    if (&arena == &graph_arena_) ClearGraphs();
    const size_t capacity = std::max({kMinArenaBytes, bytes, arena.capacity * 2});
    if (arena.data != nullptr) cudaFreeHost(arena.data);
    arena = Arena{};
    void* data = nullptr;
    if (absl::Status s = CudaStatus(cudaMallocHost(&data, capacity),
                                    absl::StrCat("cudaMallocHost(", capacity, " bytes)"));
        !s.ok()) {
      return s;
    }
    arena.data = static_cast<std::byte*>(data);
    arena.capacity = capacity;
  }
  std::byte* staged = arena.data + arena.used;
  // 256-byte steps keep copies aligned for the copy engines.
  arena.used += (bytes + 255) / 256 * 256;
  return staged;
}

absl::Status StepGraphs::AddCopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  const bool leading = ops_.empty();
  auto staged = Stage(leading ? leading_arena_ : graph_arena_, bytes);
  if (!staged.ok()) return staged.status();
  std::memcpy(*staged, host_src, bytes);
  const std::byte* from = *staged;
  Launcher copy = [device_dst, from, bytes](cudaStream_t stream) {
    return CudaStatus(cudaMemcpyAsync(device_dst, from, bytes, cudaMemcpyHostToDevice, stream),
                      "CopyToDevice");
  };
  if (leading) {
    leading_copies_.push_back(std::move(copy));
  } else {
    std::string key = "h2d";
    AppendBytes(key, device_dst);
    AppendBytes(key, from);
    AppendBytes(key, bytes);
    AddOp(key, std::move(copy));
  }
  return absl::OkStatus();
}

absl::Status StepGraphs::AddCopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  auto staged = Stage(graph_arena_, bytes);
  if (!staged.ok()) return staged.status();
  std::byte* to = *staged;
  host_copies_.push_back({host_dst, to, bytes, device_src});
  std::string key = "d2h";
  AppendBytes(key, device_src);
  AppendBytes(key, to);
  AppendBytes(key, bytes);
  AddOp(key, [to, device_src, bytes](cudaStream_t stream) {
    return CudaStatus(cudaMemcpyAsync(to, device_src, bytes, cudaMemcpyDeviceToHost, stream),
                      "CopyToHost");
  });
  op_host_copy_.back() = static_cast<int>(host_copies_.size()) - 1;
  return absl::OkStatus();
}

absl::Status StepGraphs::RunEach(const std::vector<Launcher>& ops) {
  for (const Launcher& op : ops) {
    if (absl::Status s = op(stream_); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> StepGraphs::RunAsGraph() {
  auto cached = graphs_.find(key_);
  if (cached == graphs_.end()) {
    if (sightings_.size() >= kMaxSightings && !sightings_.contains(key_)) sightings_.clear();
    int& seen = sightings_[key_];
    if (++seen < kSightingsBeforeCapture) return false;
    if (graphs_.size() >= kMaxGraphs) ClearGraphs();
    if (absl::Status s =
            CudaStatus(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                       "cudaStreamBeginCapture");
        !s.ok()) {
      return s;
    }
    const absl::Status recorded = RunEach(ops_);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    cudaGraphExec_t exec = nullptr;
    cudaError_t instantiated = cudaErrorUnknown;
    if (recorded.ok() && ended == cudaSuccess) {
      instantiated = cudaGraphInstantiate(&exec, graph, 0);
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (instantiated != cudaSuccess) {
      // Not capturable: run this key op by op from now on.
      cudaGetLastError();
      sightings_[key_] = std::numeric_limits<int>::min() / 2;
      return false;
    }
    ++graphs_captured_;
    cached = graphs_.emplace(key_, exec).first;
  }
  if (absl::Status s = CudaStatus(cudaGraphLaunch(cached->second, stream_), "cudaGraphLaunch");
      !s.ok()) {
    return s;
  }
  ++graphs_launched_;
  return true;
}

absl::Status StepGraphs::Flush() {
  // Peel the trailing copies to the host off the segment and its key.
  size_t kept = ops_.size();
  while (kept > 0 && op_host_copy_[kept - 1] >= 0) {
    host_copies_[op_host_copy_[kept - 1]].direct = true;
    --kept;
  }
  ops_.resize(kept);
  key_.resize(kept == 0 ? 0 : key_ends_[kept - 1]);
  absl::Status status = RunEach(leading_copies_);
  if (status.ok() && !ops_.empty()) {
    absl::StatusOr<bool> as_graph = RunAsGraph();
    if (!as_graph.ok()) {
      status = as_graph.status();
    } else if (!*as_graph) {
      status = RunEach(ops_);
    }
  }
  for (const HostCopy& copy : host_copies_) {
    if (!status.ok()) break;
    if (copy.direct) {
      // To pageable memory this returns once the data has arrived.
      status = CudaStatus(cudaMemcpyAsync(copy.host_dst, copy.device_src, copy.bytes,
                                          cudaMemcpyDeviceToHost, stream_),
                          "CopyToHost");
    }
  }
  if (status.ok()) status = CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  if (status.ok()) {
    for (const HostCopy& copy : host_copies_) {
      if (!copy.direct) std::memcpy(copy.host_dst, copy.staged, copy.bytes);
    }
  }
  leading_copies_.clear();
  ops_.clear();
  key_.clear();
  key_ends_.clear();
  op_host_copy_.clear();
  host_copies_.clear();
  leading_arena_.used = 0;
  graph_arena_.used = 0;
  return status;
}

}  // namespace strata::backend::cuda
