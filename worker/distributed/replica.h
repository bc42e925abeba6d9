// One rank of a replica cut into tp × pp shards: start-up, the leader's side
// of every engine step, and the followers' loop.
//
// Start-up (ReplicaRank::Start, on every rank): bootstrap handshake with the
// leader (same model, tp, pp and build, or refused naming the difference);
// connect the world, TP and pipeline communicators over Gloo; agree on the
// KV cache size (each rank works out how many blocks fit its shard, the
// replica uses the smallest count, since block ids are shared); load this
// rank's shard only; wait until every rank has loaded.
//
// Steps: the leader's engine calls Model::Forward on the LeaderModel, which
// broadcasts the batch as a step plan, runs the leader's own shard, and with
// pp > 1 receives the logits from the last stage's first TP rank (on the
// logits link). With pp > 1 the engine keeps up to pp batches in flight
// (StartForward / FinishForward) so that the stages work on different
// micro-batches at once. Followers run RunFollower: receive plans (on a
// thread of their own, so the leader never waits for a busy stage to take the
// next plan), run their shard on each in order, and (last stage, tp rank 0)
// send the logits to the leader. While the engine is idle the leader sends
// heartbeat plans, so that a follower waiting for work never exceeds the
// collective timeout, and the leader notices a lost follower within about a
// second even with no traffic.
//
// Failure: a collective that fails (a rank died, or hung past the collective
// timeout) breaks the replica: the leader's Forward fails from then on and
// the failure callback runs once (the worker then reports NOT_SERVING and
// exits non-zero); RunFollower returns the error (the worker exits non-zero).
// The messages name the lost rank when the communicator could tell. Every
// failed Communicator call of the rank (start-up's included) is also reported
// to ReplicaOptions::on_collective_error with its op, for
// strata_rank_collective_errors_total.
//
// Thread-safety: LeaderModel::Forward is called from the engine's step thread;
// the heartbeat runs on its own thread; a mutex serialises their use of the
// world group. ReplicaRank is used from one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/bootstrap.h"
#include "parallel/communicator_groups.h"
#include "worker/model/model.h"
#include "worker/model/model_shard.h"

namespace strata::distributed {

// Told of each failed Communicator call: its op (a metrics::kOp* label value:
// "all_reduce", "all_gather", "broadcast", "send", "recv", "barrier") and the
// error. Runs on the failing thread; must be thread-safe and must not block.
using CollectiveErrorCallback = std::function<void(std::string_view op, const absl::Status&)>;

// A Communicator that forwards every call to `inner` and reports each call
// that fails to `on_error` (when set). Thread-safety: as `inner`.
class FailureReportingCommunicator final : public parallel::Communicator {
 public:
  // REQUIRES: `inner` outlives this object.
  FailureReportingCommunicator(parallel::Communicator& inner, CollectiveErrorCallback on_error)
      : inner_(inner), on_error_(std::move(on_error)) {}

  const parallel::GroupSpec& group() const override { return inner_.group(); }
  int rank() const override { return inner_.rank(); }
  absl::Status AllReduceSum(float* data, size_t n) override;
  absl::Status AllGather(const float* in, size_t n, float* out) override;
  absl::Status Broadcast(void* data, size_t bytes, int root) override;
  absl::Status Send(const void* data, size_t bytes, int peer) override;
  absl::Status Recv(void* data, size_t bytes, int peer) override;
  absl::Status Barrier() override;

 private:
  absl::Status Report(const char* op, absl::Status status) const;

  parallel::Communicator& inner_;
  const CollectiveErrorCallback on_error_;
};

struct ReplicaOptions {
  parallel::BootstrapConfig bootstrap;
  // What to load (folder, random weights, dtype, KV block size and count,
  // threads); the shard and its links are filled in by Start.
  model::LoadOptions model;
  // KV cache bytes per rank (0: model.kv_num_blocks, or the default).
  uint64_t kv_cache_memory_bytes = 0;
  // Failed collectives and transfers of this rank (optional).
  CollectiveErrorCallback on_collective_error;
};

// Identifies the weights a rank serves, for the bootstrap handshake: the
// folder's name, and a digest of config.json with the safetensors files'
// names and sizes (or the seed, for random weights) and the weight dtype.
absl::StatusOr<parallel::RankIdentity> ModelIdentity(const model::LoadOptions& options, int tp,
                                                     int pp);

class ReplicaRank {
 public:
  using FailureCallback = std::function<void(const absl::Status&)>;

  static absl::StatusOr<std::unique_ptr<ReplicaRank>> Start(const ReplicaOptions& options);
  ~ReplicaRank();

  const parallel::ParallelConfig& parallel() const { return parallel_; }
  const model::ModelShard& shard() const { return shard_; }
  model::Model& shard_model() { return *model_; }

  // Leader only: the Model the engine runs for the whole replica. Takes the
  // rank over (its session, communicators and shard live as long as the
  // returned model). `on_failure` runs once, on the thread that saw the
  // failure, when the replica breaks.
  static std::unique_ptr<model::Model> MakeLeaderModel(std::unique_ptr<ReplicaRank> rank,
                                                       FailureCallback on_failure);

  // Followers only: runs plans until the leader shuts the replica down (OK)
  // or it breaks (the error, naming the lost rank where known). After an
  // error the thread receiving plans may still be blocked in the world group:
  // the process is expected to exit; destroying the rank first would wait for
  // that thread (up to the collective timeout once the leader is gone).
  absl::Status RunFollower();

 private:
  friend class LeaderModel;
  ReplicaRank() = default;

  parallel::ParallelConfig parallel_ = *parallel::ParallelConfig::Create(1, 1, 0);
  model::ModelShard shard_;
  absl::Duration collective_timeout_;
  // Destroyed in reverse order: the shard before the communicators it uses,
  // the communicators before the session (store) they were built on.
  std::unique_ptr<parallel::BootstrapSession> session_;
  std::unique_ptr<parallel::CommunicatorGroups> groups_;
  // groups_' communicators wrapped to report failures; every use goes
  // through these. Null where groups_ has no such link.
  std::vector<std::unique_ptr<FailureReportingCommunicator>> reporting_;
  parallel::Communicator* world_ = nullptr;
  parallel::Communicator* tensor_parallel_ = nullptr;
  parallel::Communicator* previous_stage_ = nullptr;
  parallel::Communicator* next_stage_ = nullptr;
  parallel::Communicator* logits_link_ = nullptr;
  std::unique_ptr<model::Model> model_;
  std::thread plan_receiver_;  // followers: receives plans on the world group
};

}  // namespace strata::distributed
