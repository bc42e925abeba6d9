#include "parallel/nccl_communicator.h"

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace strata::parallel {
namespace {

std::string UniqueIdKey(const std::string& group) { return absl::StrCat("nccl/", group, "/id"); }

std::string NcclText(ncclComm_t comm, ncclResult_t result) {
  std::string text = ncclGetErrorString(result);
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') absl::StrAppend(&text, ": ", last);
  }
  return text;
}

absl::Status CudaStatus(cudaError_t error, const std::string& what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

// Polls a non-blocking communicator until it leaves ncclInProgress.
absl::Status WaitForComm(ncclComm_t comm, absl::Time deadline, const std::string& what) {
  while (true) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t queried = ncclCommGetAsyncError(comm, &state);
    if (queried != ncclSuccess) {
      return absl::UnavailableError(absl::StrCat(what, ": ", NcclText(comm, queried)));
    }
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) {
      return absl::UnavailableError(absl::StrCat(what, ": ", NcclText(comm, state)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace

absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("no CUDA device: ", cudaGetErrorString(error)));
  }
  if (count == 0) return absl::UnavailableError("no CUDA device");
  return count;
}

NcclComm::~NcclComm() {
  if (comm_ == nullptr) return;
  if (healthy_) {
    // Flush outstanding work (bounded), then free; abort if that fails.
    const ncclResult_t finalizing = ncclCommFinalize(comm_);
    if ((finalizing == ncclSuccess || finalizing == ncclInProgress) &&
        WaitForComm(comm_, absl::Now() + absl::Seconds(10), "finalize").ok()) {
      ncclCommDestroy(comm_);
      return;
    }
  }
  Abort();
}

void NcclComm::Abort() {
  if (comm_ == nullptr) return;
  ncclCommAbort(comm_);
  comm_ = nullptr;
}

NcclCommunicator::NcclCommunicator(GroupSpec group, int rank, NcclComm comm,
                                   const NcclOptions& options,
                                   std::shared_ptr<PeerFailureDiagnoser> diagnoser,
                                   float* barrier_scratch)
    : group_(std::move(group)),
      rank_(rank),
      comm_(std::move(comm)),
      options_(options),
      diagnoser_(std::move(diagnoser)),
      barrier_scratch_(barrier_scratch) {}

NcclCommunicator::~NcclCommunicator() {
  if (barrier_scratch_ != nullptr) {
    cudaSetDevice(options_.device);
    cudaFree(barrier_scratch_);
  }
}

absl::Status NcclCommunicator::CheckPeer(int peer) const {
  if (peer < 0 || peer >= size() || peer == rank_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group ", group_.DebugString(), ": invalid peer ", peer, " for group rank ", rank_));
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Fail(const std::string& what, const absl::Status& transport_error) {
  // Aborting also releases peers blocked on this rank inside NCCL.
  comm_.Abort();
  broken_ =
      diagnoser_ != nullptr ? diagnoser_->Diagnose(group_, what, transport_error) : transport_error;
  return broken_;
}

absl::Status NcclCommunicator::WaitForStream(const std::string& what) {
  const absl::Time deadline = absl::Now() + options_.collective_timeout;
  while (true) {
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_.get(), &state);
    if (state != ncclSuccess && state != ncclInProgress) {
      return Fail(what, absl::UnavailableError(NcclText(comm_.get(), state)));
    }
    const cudaError_t query = cudaStreamQuery(options_.stream);
    if (query == cudaSuccess && state == ncclSuccess) return absl::OkStatus();
    if (query != cudaSuccess && query != cudaErrorNotReady) {
      return Fail(what, CudaStatus(query, "stream"));
    }
    if (absl::Now() >= deadline) {
      return Fail(what,
                  absl::DeadlineExceededError(absl::StrCat(
                      "timed out after ", absl::FormatDuration(options_.collective_timeout))));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

absl::Status NcclCommunicator::Finish(const std::string& what, ncclResult_t launched) {
  if (launched != ncclSuccess && launched != ncclInProgress) {
    return Fail(what, absl::UnavailableError(NcclText(comm_.get(), launched)));
  }
  if (!options_.synchronous) {
    // Still make sure the launch itself went through before returning.
    absl::Status enqueued =
        WaitForComm(comm_.get(), absl::Now() + options_.collective_timeout, "enqueue");
    if (!enqueued.ok()) return Fail(what, enqueued);
    return absl::OkStatus();
  }
  return WaitForStream(what);
}

absl::Status NcclCommunicator::AllReduceSum(float* data, size_t n) {
  if (!broken_.ok()) return broken_;
  if (n == 0) return absl::OkStatus();
  cudaSetDevice(options_.device);
  return Finish(absl::StrCat("all_reduce of ", n, " floats"),
                ncclAllReduce(data, data, n, ncclFloat32, ncclSum, comm_.get(), options_.stream));
}

absl::Status NcclCommunicator::AllGather(const float* in, size_t n, float* out) {
  if (!broken_.ok()) return broken_;
  if (n == 0) return absl::OkStatus();
  cudaSetDevice(options_.device);
  return Finish(absl::StrCat("all_gather of ", n, " floats per rank"),
                ncclAllGather(in, out, n, ncclFloat32, comm_.get(), options_.stream));
}

absl::Status NcclCommunicator::Broadcast(void* data, size_t bytes, int root) {
  if (!broken_.ok()) return broken_;
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast root ", root, " is outside group ", group_.DebugString()));
  }
  if (bytes == 0) return absl::OkStatus();
  cudaSetDevice(options_.device);
  return Finish(absl::StrCat("broadcast of ", bytes, " bytes from group rank ", root),
                ncclBroadcast(data, data, bytes, ncclUint8, root, comm_.get(), options_.stream));
}

absl::Status NcclCommunicator::Send(const void* data, size_t bytes, int peer) {
  if (!broken_.ok()) return broken_;
  if (absl::Status s = CheckPeer(peer); !s.ok()) return s;
  if (bytes == 0) return absl::OkStatus();
  cudaSetDevice(options_.device);
  return Finish(absl::StrCat("send of ", bytes, " bytes to rank ", group_.world_ranks[peer]),
                ncclSend(data, bytes, ncclUint8, peer, comm_.get(), options_.stream));
}

absl::Status NcclCommunicator::Recv(void* data, size_t bytes, int peer) {
  if (!broken_.ok()) return broken_;
  if (absl::Status s = CheckPeer(peer); !s.ok()) return s;
  if (bytes == 0) return absl::OkStatus();
  cudaSetDevice(options_.device);
  return Finish(absl::StrCat("recv of ", bytes, " bytes from rank ", group_.world_ranks[peer]),
                ncclRecv(data, bytes, ncclUint8, peer, comm_.get(), options_.stream));
}

absl::Status NcclCommunicator::Barrier() {
  if (!broken_.ok()) return broken_;
  cudaSetDevice(options_.device);
  const ncclResult_t launched = ncclAllReduce(barrier_scratch_, barrier_scratch_, 1, ncclFloat32,
                                              ncclSum, comm_.get(), options_.stream);
  if (launched != ncclSuccess && launched != ncclInProgress) {
    return Fail("barrier", absl::UnavailableError(NcclText(comm_.get(), launched)));
  }
  return WaitForStream("barrier");
}

absl::Status NcclCommunicator::Synchronize() {
  if (!broken_.ok()) return broken_;
  cudaSetDevice(options_.device);
  return WaitForStream("synchronize");
}

// ---------------------------------------------------------------------------

NcclCommunicatorFactory::NcclCommunicatorFactory(TcpStore* store, int world_rank,
                                                 NcclOptions options)
    : store_(store),
      world_rank_(world_rank),
      options_(options),
      diagnoser_(
          std::make_shared<PeerFailureDiagnoser>(store, world_rank, options.diagnosis_grace)) {}

absl::StatusOr<std::unique_ptr<NcclCommunicatorFactory>> NcclCommunicatorFactory::Create(
    TcpStore* store, int world_rank, NcclOptions options) {
  STRATA_ASSIGN_OR_RETURN(const int devices, CudaDeviceCount());
  if (options.device < 0 || options.device >= devices) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", options.device, " does not exist (", devices, " found)"));
  }
  return std::unique_ptr<NcclCommunicatorFactory>(
      new NcclCommunicatorFactory(store, world_rank, options));
}

absl::Status NcclCommunicatorFactory::PrepareGroups(const std::vector<GroupSpec>& all_groups) {
  if (world_rank_ != 0) return absl::OkStatus();
  for (const GroupSpec& group : all_groups) {
    ncclUniqueId id;
    const ncclResult_t result = ncclGetUniqueId(&id);
    if (result != ncclSuccess) {
      return absl::UnavailableError(
          absl::StrCat("ncclGetUniqueId for group ", group.name, ": ", NcclText(nullptr, result)));
    }
    STRATA_RETURN_IF_ERROR(
        store_->Set(UniqueIdKey(group.name), std::string(id.internal, sizeof(id.internal))));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicatorFactory::Create(
    const GroupSpec& group) {
  const int group_rank = group.GroupRankOf(world_rank_);
  if (group_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", world_rank_, " is not a member of group ", group.DebugString()));
  }
  STRATA_ASSIGN_OR_RETURN(const std::string id_bytes,
                          store_->Get(UniqueIdKey(group.name), options_.bootstrap_timeout));
  ncclUniqueId id;
  if (id_bytes.size() != sizeof(id.internal)) {
    return absl::DataLossError(absl::StrCat("NCCL unique id of group ", group.name, " has ",
                                            id_bytes.size(), " bytes, want ", sizeof(id.internal)));
  }
  std::memcpy(id.internal, id_bytes.data(), sizeof(id.internal));

  STRATA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice"));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t raw = nullptr;
  const ncclResult_t started = ncclCommInitRankConfig(&raw, group.size(), id, group_rank, &config);
  NcclComm comm(raw);
  const std::string what = absl::StrCat("NCCL init of group ", group.DebugString());
  if (started != ncclSuccess && started != ncclInProgress) {
    comm.MarkBroken();
    return absl::UnavailableError(absl::StrCat(what, ": ", NcclText(raw, started)));
  }
  if (absl::Status ready = WaitForComm(raw, absl::Now() + options_.bootstrap_timeout, what);
      !ready.ok()) {
    comm.MarkBroken();
    return ready;
  }
  float* scratch = nullptr;
  STRATA_RETURN_IF_ERROR(
      CudaStatus(cudaMalloc(reinterpret_cast<void**>(&scratch), sizeof(float)), "cudaMalloc"));
  return std::make_unique<NcclCommunicator>(group, group_rank, std::move(comm), options_,
                                            diagnoser_, scratch);
}

}  // namespace strata::parallel
