// NcclCommunicator: the GPU path. Data pointers are device pointers on the
// communicator's CUDA device; operations are enqueued on its stream.
//
// Bootstrap: the leader (world rank 0) creates one ncclUniqueId per group in
// PrepareGroups and publishes it through the replica's TcpStore; members read
// it and join with ncclCommInitRankConfig. (NCCL_COMM_ID is process-global and
// could not serve separate TP and pipeline communicators.)
//
// Communicators are non-blocking NCCL communicators, so nothing waits forever:
// with `synchronous` (the default) every call returns once its work has
// completed on the stream, and a peer that does not take part within the
// collective timeout aborts the communicator (DEADLINE_EXCEEDED, with the rank
// at fault named by PeerFailureDiagnoser). Without it calls return once
// enqueued, and errors surface at the next call or at Synchronize().
//
// Thread-safety: see Communicator. Each call makes the device current on the
// calling thread.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"
#include "parallel/peer_failure_diagnoser.h"
#include "parallel/tcp_store.h"

namespace strata::parallel {

struct NcclOptions {
  int device = 0;
  // Stream the operations run on; not owned. nullptr: the legacy default stream.
  cudaStream_t stream = nullptr;
  bool synchronous = true;
  absl::Duration collective_timeout = absl::Seconds(30);
  absl::Duration bootstrap_timeout = absl::Seconds(60);
  absl::Duration diagnosis_grace = absl::Seconds(1);
};

// Owns an ncclComm_t: destroyed after flushing when healthy, aborted otherwise.
class NcclComm {
 public:
  NcclComm() = default;
  explicit NcclComm(ncclComm_t comm) : comm_(comm) {}
  ~NcclComm();
  NcclComm(NcclComm&& other) noexcept : comm_(other.comm_), healthy_(other.healthy_) {
    other.comm_ = nullptr;
  }
  NcclComm& operator=(NcclComm&&) = delete;
  NcclComm(const NcclComm&) = delete;

  ncclComm_t get() const { return comm_; }
  // The destructor will abort instead of flushing.
  void MarkBroken() { healthy_ = false; }
  // Aborts now; get() is null afterwards.
  void Abort();

 private:
  ncclComm_t comm_ = nullptr;
  bool healthy_ = true;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(GroupSpec group, int rank, NcclComm comm, const NcclOptions& options,
                   std::shared_ptr<PeerFailureDiagnoser> diagnoser, float* barrier_scratch);
  ~NcclCommunicator() override;

  const GroupSpec& group() const override { return group_; }
  int rank() const override { return rank_; }
  cudaStream_t stream() const { return options_.stream; }

  absl::Status AllReduceSum(float* data, size_t n) override;
  absl::Status AllGather(const float* in, size_t n, float* out) override;
  absl::Status Broadcast(void* data, size_t bytes, int root) override;
  absl::Status Send(const void* data, size_t bytes, int peer) override;
  absl::Status Recv(void* data, size_t bytes, int peer) override;
  absl::Status Barrier() override;

  // Waits until every enqueued operation has completed (or the collective
  // timeout passes, which aborts the communicator).
  absl::Status Synchronize();

 private:
  // Checks the launch result, then (synchronous mode) waits for completion.
  absl::Status Finish(const std::string& what, ncclResult_t launched);
  absl::Status WaitForStream(const std::string& what);
  absl::Status Fail(const std::string& what, const absl::Status& transport_error);
  absl::Status CheckPeer(int peer) const;

  const GroupSpec group_;
  const int rank_;
  NcclComm comm_;
  const NcclOptions options_;
  std::shared_ptr<PeerFailureDiagnoser> diagnoser_;
  float* barrier_scratch_;  // one float of device memory, owned
  absl::Status broken_;
};

class NcclCommunicatorFactory final : public CommunicatorFactory {
 public:
  // `store` must outlive the factory and its communicators.
  static absl::StatusOr<std::unique_ptr<NcclCommunicatorFactory>> Create(TcpStore* store,
                                                                         int world_rank,
                                                                         NcclOptions options);

  // On the leader: creates and publishes every group's unique id.
  absl::Status PrepareGroups(const std::vector<GroupSpec>& all_groups) override;
  absl::StatusOr<std::unique_ptr<Communicator>> Create(const GroupSpec& group) override;

 private:
  NcclCommunicatorFactory(TcpStore* store, int world_rank, NcclOptions options);

  TcpStore* store_;
  const int world_rank_;
  const NcclOptions options_;
  std::shared_ptr<PeerFailureDiagnoser> diagnoser_;
};

// The number of CUDA devices, or an error when the runtime reports none (no
// driver, no device). For tests that skip without a GPU.
absl::StatusOr<int> CudaDeviceCount();

}  // namespace strata::parallel
