#include "parallel/peer_failure_diagnoser.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "parallel/parallel_config.h"

namespace strata::parallel {
namespace {

std::string RollCallKey(const GroupSpec& group, int world_rank) {
  return absl::StrCat("fault/", group.name, "/", world_rank);
}

}  // namespace

absl::Status PeerFailureDiagnoser::Diagnose(const GroupSpec& group, const std::string& what,
                                            const absl::Status& transport_error) {
  const std::string prefix = absl::StrCat("rank ", world_rank_, ": ", what, " on group ",
                                          group.DebugString(), " failed: ");
  const std::string suffix =
      absl::StrCat(" (transport: ", std::string(transport_error.message()), ")");
  const std::string leader_lost =
      absl::StrCat("rank ", ParallelConfig::kLeaderRank, " (leader) lost: its bootstrap store at ",
                   store_->server_address(), " is unreachable");

  if (!store_->Set(RollCallKey(group, world_rank_), "1").ok()) {
    return absl::UnavailableError(prefix + leader_lost + suffix);
  }
  const absl::Time deadline = absl::Now() + grace_;
  std::vector<int> silent;
  while (true) {
    absl::StatusOr<std::vector<int>> lost = store_->LostRanks();
    if (!lost.ok()) return absl::UnavailableError(prefix + leader_lost + suffix);
    std::vector<int> lost_members;
    for (int rank : *lost) {
      if (group.GroupRankOf(rank) >= 0) lost_members.push_back(rank);
    }
    if (!lost_members.empty()) {
      return absl::UnavailableError(absl::StrCat(
          prefix, lost_members.size() == 1 ? "rank " : "ranks ", absl::StrJoin(lost_members, ","),
          " lost (process exited: its connection to the leader's store closed)", suffix));
    }
    silent.clear();
    for (int rank : group.world_ranks) {
      if (rank == world_rank_) continue;
      if (!store_->Get(RollCallKey(group, rank), absl::ZeroDuration()).ok()) {
        silent.push_back(rank);
      }
    }
    if (silent.empty() || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  if (!silent.empty()) {
    return absl::DeadlineExceededError(
        absl::StrCat(prefix, silent.size() == 1 ? "rank " : "ranks ", absl::StrJoin(silent, ","),
                     " did not respond (hung, stopped or busy elsewhere) within ",
                     absl::FormatDuration(grace_), " of the failure", suffix));
  }
  return absl::Status(
      transport_error.code(),
      absl::StrCat(prefix, "every member is alive; no rank at fault found", suffix));
}

}  // namespace strata::parallel
