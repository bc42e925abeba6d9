// StepGraphs: replays the CUDA backend's repeated steps as CUDA graphs, with
// no change to the code that calls the backend.
//
// While enabled, the backend does not launch ops at once: it records each as
// a launcher closure plus a key (the op and its arguments as bytes). Host
// data of CopyToDevice is staged in pinned memory at once (the caller may
// reuse its buffer); CopyToHost lands in pinned memory and reaches the
// caller's buffer at Flush. Flush (the backend's Synchronize) then runs the
// segment:
//   - copies to the device recorded before the segment's first kernel (a
//     step's metadata, whose sizes vary from step to step) run as plain
//     copies and are not part of the key;
//   - copies to the host recorded after the segment's last kernel (the
//     logits) are not part of the key either: they run after the rest,
//     straight into the caller's buffer (no second copy through pinned
//     memory);
//   - the rest runs as a graph when the same key ran before (a decode step
//     of the same batch size: same buffers, same shapes), captured at its
//     second sighting and cached; otherwise the closures run one by one.
// Kernels read sizes that vary per step (context lengths, block tables)
// from device memory, so a graph stays valid for every step with its key.
//
// Thread-safety: owned by one CudaBackend; same contract.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace strata::backend::cuda {

class StepGraphs {
 public:
  // Runs one recorded op on the given stream; returns its launch error.
  using Launcher = std::function<absl::Status(cudaStream_t)>;

  explicit StepGraphs(cudaStream_t stream) : stream_(stream) {}
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Records an op with the bytes that identify it (op name and arguments).
  void AddOp(std::string_view key, Launcher launch);
  // Stages `bytes` of host data now and records their copy to `device_dst`.
  absl::Status AddCopyToDevice(void* device_dst, const void* host_src, size_t bytes);
  // Records a copy from the device that reaches `host_dst` at Flush.
  absl::Status AddCopyToHost(void* host_dst, const void* device_src, size_t bytes);
  bool empty() const { return ops_.empty() && leading_copies_.empty(); }

  // Runs everything recorded (as a graph when possible), waits for it, and
  // delivers the copies to the host.
  absl::Status Flush();
  // Forgets every cached graph (e.g. before memory they use is freed).
  void ClearGraphs();

  int64_t graphs_launched() const { return graphs_launched_; }
  int64_t graphs_captured() const { return graphs_captured_; }

 private:
  // Pinned host memory, handed out front to back within one segment.
  struct Arena {
    std::byte* data = nullptr;
    size_t capacity = 0;
    size_t used = 0;
  };
  struct HostCopy {
    void* host_dst;
    const std::byte* staged;
    size_t bytes;
    const void* device_src;
    bool direct = false;  // trailing: copied straight to host_dst at Flush
  };
  // Room for `bytes` in `arena`, flushing and growing it when full; nullptr
  // (with the status) on failure.
  absl::StatusOr<std::byte*> Stage(Arena& arena, size_t bytes);
  absl::Status RunEach(const std::vector<Launcher>& ops);
  // Runs ops_ as a cached graph, capturing it first when due. False when the
  // segment should run op by op instead.
  absl::StatusOr<bool> RunAsGraph();

  cudaStream_t stream_;
  std::vector<Launcher> leading_copies_;  // before the first op: not in the key
  std::vector<Launcher> ops_;
  std::string key_;
  std::vector<size_t> key_ends_;   // key_.size() after each op of ops_
  std::vector<int> op_host_copy_;  // per op: its index in host_copies_, or -1
  std::vector<HostCopy> host_copies_;
  Arena leading_arena_;  // staging of leading copies
  Arena graph_arena_;    // staging of copies inside the key (same offsets each step)

  std::unordered_map<std::string, cudaGraphExec_t> graphs_;
  std::unordered_map<std::string, int> sightings_;  // segments seen, by key
  int64_t graphs_launched_ = 0;
  int64_t graphs_captured_ = 0;
};

}  // namespace strata::backend::cuda
