#include "worker/distributed/step_plan.h"

#include <array>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace strata::distributed {
namespace {

constexpr int kLeader = 0;
constexpr int32_t kSequenceFields = 5;

struct PlanHeader {
  int32_t kind = 0;
  int32_t payload_length = 0;
  int32_t num_tokens = 0;
  int32_t num_sequences = 0;
};

}  // namespace

std::vector<int32_t> EncodePlanPayload(const model::ForwardBatch& batch) {
  std::vector<int32_t> payload;
  size_t tables = 0;
  for (const model::BatchSequence& s : batch.sequences) tables += s.block_table.size();
  payload.reserve(2 * batch.token_ids.size() + kSequenceFields * batch.sequences.size() + tables);
  payload.insert(payload.end(), batch.token_ids.begin(), batch.token_ids.end());
  payload.insert(payload.end(), batch.positions.begin(), batch.positions.end());
  for (const model::BatchSequence& s : batch.sequences) {
    payload.insert(payload.end(),
                   {s.first_token, s.num_tokens, s.context_len, s.wants_logits ? 1 : 0,
                    static_cast<int32_t>(s.block_table.size())});
  }
  for (const model::BatchSequence& s : batch.sequences) {
    payload.insert(payload.end(), s.block_table.begin(), s.block_table.end());
  }
  return payload;
}

absl::StatusOr<model::ForwardBatch> DecodePlanPayload(std::span<const int32_t> payload,
                                                      int32_t num_tokens, int32_t num_sequences) {
  const int64_t fixed =
      2 * static_cast<int64_t>(num_tokens) + kSequenceFields * static_cast<int64_t>(num_sequences);
  if (num_tokens < 0 || num_sequences < 0 || fixed > static_cast<int64_t>(payload.size())) {
    return absl::DataLossError(absl::StrCat("step plan: ", payload.size(), " values cannot hold ",
                                            num_tokens, " tokens and ", num_sequences,
                                            " sequences"));
  }
  model::ForwardBatch batch;
  auto it = payload.begin();
  batch.token_ids.assign(it, it + num_tokens);
  it += num_tokens;
  batch.positions.assign(it, it + num_tokens);
  it += num_tokens;
  batch.sequences.resize(num_sequences);
  std::vector<int32_t> table_lengths(num_sequences);
  int64_t tables = 0;
  for (int32_t i = 0; i < num_sequences; ++i) {
    model::BatchSequence& s = batch.sequences[i];
    s.first_token = it[0];
    s.num_tokens = it[1];
    s.context_len = it[2];
    s.wants_logits = it[3] != 0;
    table_lengths[i] = it[4];
    if (table_lengths[i] < 0) return absl::DataLossError("step plan: negative block table length");
    tables += table_lengths[i];
    it += kSequenceFields;
  }
  if (fixed + tables != static_cast<int64_t>(payload.size())) {
    return absl::DataLossError(absl::StrCat("step plan: block tables need ", tables,
                                            " values, payload has ", payload.size() - fixed));
  }
  for (int32_t i = 0; i < num_sequences; ++i) {
    batch.sequences[i].block_table.assign(it, it + table_lengths[i]);
    it += table_lengths[i];
  }
  return batch;
}

absl::Status BroadcastPlan(parallel::Communicator& world, PlanKind kind,
                           const model::ForwardBatch* batch) {
  std::vector<int32_t> payload;
  PlanHeader header;
  header.kind = static_cast<int32_t>(kind);
  if (kind == PlanKind::kForward) {
    payload = EncodePlanPayload(*batch);
    header.payload_length = static_cast<int32_t>(payload.size());
    header.num_tokens = batch->num_tokens();
    header.num_sequences = static_cast<int32_t>(batch->sequences.size());
  }
  STRATA_RETURN_IF_ERROR(world.Broadcast(&header, sizeof(header), kLeader));
  if (payload.empty()) return absl::OkStatus();
  return world.Broadcast(payload.data(), payload.size() * sizeof(int32_t), kLeader);
}

absl::StatusOr<StepPlan> ReceivePlan(parallel::Communicator& world) {
  PlanHeader header;
  STRATA_RETURN_IF_ERROR(world.Broadcast(&header, sizeof(header), kLeader));
  StepPlan plan;
  switch (static_cast<PlanKind>(header.kind)) {
    case PlanKind::kHeartbeat:
    case PlanKind::kShutdown:
      plan.kind = static_cast<PlanKind>(header.kind);
      return plan;
    case PlanKind::kForward:
      break;
    default:
      return absl::DataLossError(absl::StrCat("step plan: unknown kind ", header.kind));
  }
  if (header.payload_length <= 0) {
    return absl::DataLossError(
        absl::StrCat("step plan: forward plan with payload length ", header.payload_length));
  }
  std::vector<int32_t> payload(header.payload_length);
  STRATA_RETURN_IF_ERROR(
      world.Broadcast(payload.data(), payload.size() * sizeof(int32_t), kLeader));
  plan.kind = PlanKind::kForward;
  STRATA_ASSIGN_OR_RETURN(plan.batch,
                          DecodePlanPayload(payload, header.num_tokens, header.num_sequences));
  return plan;
}

}  // namespace strata::distributed
