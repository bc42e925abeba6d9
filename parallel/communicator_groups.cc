#include "parallel/communicator_groups.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace strata::parallel {

int GroupSpec::GroupRankOf(int world_rank) const {
  auto it = std::find(world_ranks.begin(), world_ranks.end(), world_rank);
  return it == world_ranks.end() ? -1 : static_cast<int>(it - world_ranks.begin());
}

std::string GroupSpec::DebugString() const {
  return absl::StrCat(name, " [", absl::StrJoin(world_ranks, ","), "]");
}

absl::Status CommunicatorFactory::PrepareGroups(const std::vector<GroupSpec>&) {
  return absl::OkStatus();
}

namespace {

std::string TensorParallelGroupName(int stage) { return absl::StrCat("tp.stage", stage); }

std::string LinkGroupName(int lower_stage, int tp_rank) {
  return absl::StrCat("pp.stage", lower_stage, "-", lower_stage + 1, ".tp", tp_rank);
}

}  // namespace

std::vector<GroupSpec> CommunicatorGroups::AllGroups(const ParallelConfig& config) {
  std::vector<GroupSpec> groups;
  groups.push_back(GroupSpec{"world", config.WorldRanks()});
  for (int s = 0; s < config.pp(); ++s) {
    groups.push_back(GroupSpec{TensorParallelGroupName(s), config.TensorParallelGroupRanks(s)});
  }
  for (int s = 0; s + 1 < config.pp(); ++s) {
    for (int t = 0; t < config.tp(); ++t) {
      groups.push_back(
          GroupSpec{LinkGroupName(s, t), {config.RankOf(s, t), config.RankOf(s + 1, t)}});
    }
  }
  if (config.pp() > 1) {
    groups.push_back(
        GroupSpec{"logits", {ParallelConfig::kLeaderRank, config.RankOf(config.pp() - 1, 0)}});
  }
  return groups;
}

absl::StatusOr<std::unique_ptr<CommunicatorGroups>> CommunicatorGroups::Create(
    const ParallelConfig& config, CommunicatorFactory& factory) {
  const std::vector<GroupSpec> all_groups = AllGroups(config);
  STRATA_RETURN_IF_ERROR(factory.PrepareGroups(all_groups));

  std::unique_ptr<CommunicatorGroups> groups(new CommunicatorGroups(config));
  const std::string tp_name = TensorParallelGroupName(config.stage());
  const std::string previous_name =
      config.is_first_stage() ? "" : LinkGroupName(config.stage() - 1, config.tp_rank());
  const std::string next_name =
      config.is_last_stage() ? "" : LinkGroupName(config.stage(), config.tp_rank());
  for (const GroupSpec& spec : all_groups) {
    if (spec.GroupRankOf(config.rank()) < 0) continue;
    absl::StatusOr<std::unique_ptr<Communicator>> communicator = factory.Create(spec);
    if (!communicator.ok()) {
      return absl::Status(
          communicator.status().code(),
          absl::StrCat("rank ", config.rank(), " could not join group ", spec.DebugString(), ": ",
                       std::string(communicator.status().message())));
    }
    if (spec.name == "world") {
      groups->world_ = *std::move(communicator);
    } else if (spec.name == tp_name) {
      groups->tensor_parallel_ = *std::move(communicator);
    } else if (spec.name == previous_name) {
      groups->previous_stage_ = *std::move(communicator);
    } else if (spec.name == next_name) {
      groups->next_stage_ = *std::move(communicator);
    } else if (spec.name == "logits") {
      groups->logits_link_ = *std::move(communicator);
    } else {
      return absl::InternalError(
          absl::StrCat("rank ", config.rank(), " is a member of unexpected group ", spec.name));
    }
  }
  return groups;
}

}  // namespace strata::parallel
