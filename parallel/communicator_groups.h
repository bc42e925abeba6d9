// The communicators one rank of a replica needs: the world group (the leader's
// step plans), the tensor-parallel group of its stage, point-to-point links
// to the same tp_rank in the previous and next pipeline stages, and (pp > 1)
// the link on which the last stage's first TP rank returns logits to the
// leader. The logits have their own link so that a follower can receive plans
// on the world group from one thread while another thread sends logits.
//
// Groups are created on every rank in one global order (world, TP groups by
// stage, links by stage then tp_rank), each rank joining only its own; since
// every group's members reach it in that order, creation cannot deadlock.
//
// Thread-safety: the object is immutable after Create; each communicator it
// hands out follows Communicator's own contract (one thread at a time).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/parallel_config.h"

namespace strata::parallel {

class CommunicatorGroups {
 public:
  // Every group of a replica, in creation order. Names: "world", "tp.stage<s>",
  // "pp.stage<s>-<s+1>.tp<t>" (a link holds two ranks: [stage s, stage s+1]).
  static std::vector<GroupSpec> AllGroups(const ParallelConfig& config);

  // Joins every group `config.rank()` belongs to.
  static absl::StatusOr<std::unique_ptr<CommunicatorGroups>> Create(const ParallelConfig& config,
                                                                    CommunicatorFactory& factory);

  const ParallelConfig& config() const { return config_; }
  Communicator& world() { return *world_; }
  Communicator& tensor_parallel() { return *tensor_parallel_; }

  // Link to the previous stage, or nullptr on the first stage. The peer is
  // group rank kLowerStage; this rank is kHigherStage.
  Communicator* previous_stage() { return previous_stage_.get(); }
  // Link to the next stage, or nullptr on the last stage. The peer is group
  // rank kHigherStage; this rank is kLowerStage.
  Communicator* next_stage() { return next_stage_.get(); }

  // The logits link (pp > 1): non-null on the leader (group rank 0) and on
  // the last stage's tp rank 0 (group rank 1); null elsewhere.
  Communicator* logits_link() { return logits_link_.get(); }

  static constexpr int kLowerStage = 0;
  static constexpr int kHigherStage = 1;

 private:
  explicit CommunicatorGroups(const ParallelConfig& config) : config_(config) {}

  ParallelConfig config_;
  std::unique_ptr<Communicator> world_;
  std::unique_ptr<Communicator> tensor_parallel_;
  std::unique_ptr<Communicator> previous_stage_;
  std::unique_ptr<Communicator> next_stage_;
  std::unique_ptr<Communicator> logits_link_;
};

}  // namespace strata::parallel
