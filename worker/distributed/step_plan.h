// Step plans: what the leader tells every rank of its replica to run next.
//
// Each engine step the leader broadcasts the ForwardBatch over the world
// group; every rank runs its shard on it, so all ranks fill the same KV cache
// slots (the leader's scheduler owns the block ids for the whole replica).
// On the wire a plan is a fixed header of 4 int32 {kind, payload length,
// tokens, sequences}, broadcast first so that every rank knows the payload's
// size, then the payload: token ids, positions, then per sequence
// {first_token, num_tokens, context_len, wants_logits, table length} and the
// concatenated block tables.
//
// Thread-safety: stateless functions; the communicator's own rule applies
// (one thread at a time).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "worker/model/forward_batch.h"

namespace strata::distributed {

enum class PlanKind : int32_t {
  kForward = 1,    // run the batch
  kHeartbeat = 2,  // nothing to run; keeps idle followers within the collective timeout
  kShutdown = 3,   // the leader is stopping: followers exit cleanly
};

struct StepPlan {
  PlanKind kind = PlanKind::kHeartbeat;
  model::ForwardBatch batch;  // kForward only
};

// The payload of a kForward plan, and back. DecodePlanPayload checks every
// length against the header and the data, so a corrupt plan is an error, not
// an out-of-bounds read.
std::vector<int32_t> EncodePlanPayload(const model::ForwardBatch& batch);
absl::StatusOr<model::ForwardBatch> DecodePlanPayload(std::span<const int32_t> payload,
                                                      int32_t num_tokens, int32_t num_sequences);

// Leader (group rank 0 of `world`): sends a plan; `batch` is used for kForward only.
absl::Status BroadcastPlan(parallel::Communicator& world, PlanKind kind,
                           const model::ForwardBatch* batch);
// Followers: waits for the next plan (up to the collective timeout).
absl::StatusOr<StepPlan> ReceivePlan(parallel::Communicator& world);

}  // namespace strata::distributed
