// Ranks as threads of one process: an InProcessWorld holds the shared state of
// every group, and each rank thread gets communicators from FactoryFor(rank).
// Collectives meet in shared memory under a mutex and condition variable, so
// the results are exactly those of the distributed implementations (sums are
// taken in group-rank order). For fast unit tests of code above Communicator.
//
// Failure injection: MarkRankLostForTest(k) makes every pending and later call
// of a group containing k fail with UNAVAILABLE naming rank k, as a real peer
// loss would. A collective that waits longer than the timeout fails with
// DEADLINE_EXCEEDED naming the ranks that had not arrived. Either failure breaks
// the group for all its members.
//
// Thread-safety: InProcessWorld is thread-safe; each communicator is used by
// one thread at a time. The world must outlive its factories and communicators.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"

namespace strata::parallel {

class InProcessWorld {
 public:
  InProcessWorld(int world_size, absl::Duration collective_timeout);
  ~InProcessWorld();
  InProcessWorld(const InProcessWorld&) = delete;
  InProcessWorld& operator=(const InProcessWorld&) = delete;

  int world_size() const { return world_size_; }
  absl::Duration collective_timeout() const { return collective_timeout_; }

  // A factory that creates communicators for world rank `rank`.
  // REQUIRES: 0 <= rank < world_size().
  std::unique_ptr<CommunicatorFactory> FactoryFor(int rank);

  // Joins `group` as `world_rank`. Does not wait for the other members: they
  // meet at the first collective. Fails when the rank is not a member or a
  // group of that name exists with other ranks.
  absl::StatusOr<std::unique_ptr<Communicator>> Join(const GroupSpec& group, int world_rank);

  // Simulates the death of `world_rank`: see the header comment.
  void MarkRankLostForTest(int world_rank);
  bool IsLost(int world_rank) const { return lost_[world_rank].load(); }

  struct GroupState;

 private:
  const int world_size_;
  const absl::Duration collective_timeout_;
  std::unique_ptr<std::atomic<bool>[]> lost_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<GroupState>> groups_;  // guarded by mu_
};

}  // namespace strata::parallel
