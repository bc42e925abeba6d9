// Communicator: collectives and point-to-point transfers on a group of ranks.
//
// A group is an ordered list of world ranks; a member's group rank is its index
// in that list. Every member must issue the same sequence of collective calls
// with the same sizes (and the same root for Broadcast). Implementations:
// GlooCommunicator (CPU, TCP), NcclCommunicator (GPU; data pointers are device
// pointers) and InProcessCommunicator (ranks as threads, for tests).
//
// Errors: a peer that died gives UNAVAILABLE, a peer that stopped answering
// gives DEADLINE_EXCEEDED once the collective timeout passes; both messages name
// the world rank at fault when it can be determined. After a failure the
// communicator is broken: every later call returns the same error (a replica is
// restarted as a whole, never repaired in place). The timeout applies to idle
// waits too: a rank waiting for work inside a collective (a follower waiting
// for the next step plan) needs the leader to send something, e.g. an empty
// plan, more often than the collective timeout.
//
// Thread-safety: one thread at a time per communicator. Different communicators
// (e.g. the tensor-parallel group and a pipeline link) may be used from
// different threads concurrently.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace strata::parallel {

// Which ranks form a group, and its name (unique within a replica; used as the
// rendezvous key prefix).
struct GroupSpec {
  std::string name;
  std::vector<int> world_ranks;  // group rank i is world rank world_ranks[i]

  int size() const { return static_cast<int>(world_ranks.size()); }
  // The group rank of `world_rank`, or -1 when it is not a member.
  int GroupRankOf(int world_rank) const;
  // "tp.stage0 [0,1]".
  std::string DebugString() const;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual const GroupSpec& group() const = 0;
  // This member's group rank, in [0, size()).
  virtual int rank() const = 0;
  int size() const { return group().size(); }
  int world_rank() const { return group().world_ranks[rank()]; }

  // data[i] = sum over members of their data[i]. data: [n], in place.
  virtual absl::Status AllReduceSum(float* data, size_t n) = 0;

  // out = concatenation of every member's `in`, in group-rank order.
  // in: [n]; out: [size() * n]. `in` and `out` must not overlap.
  virtual absl::Status AllGather(const float* in, size_t n, float* out) = 0;

  // Copies `bytes` bytes from `root`'s buffer into every member's buffer.
  // REQUIRES: 0 <= root < size().
  virtual absl::Status Broadcast(void* data, size_t bytes, int root) = 0;

  // Point-to-point, between group ranks. A Send is matched by the Recv of the
  // same size issued by `peer`, in order. Send may return once the data is
  // buffered, before the peer has received it. REQUIRES: peer != rank().
  virtual absl::Status Send(const void* data, size_t bytes, int peer) = 0;
  virtual absl::Status Recv(void* data, size_t bytes, int peer) = 0;

  // Returns once every member has entered the barrier.
  virtual absl::Status Barrier() = 0;
};

// Builds communicators for one rank of a replica.
class CommunicatorFactory {
 public:
  virtual ~CommunicatorFactory() = default;

  // Called on every rank, before any Create, with every group the replica will
  // build (same list everywhere). Lets the leader publish per-group state such
  // as NCCL unique ids. The default does nothing.
  virtual absl::Status PrepareGroups(const std::vector<GroupSpec>& all_groups);

  // Joins `group`; blocks until every member has joined or the bootstrap
  // timeout passes. REQUIRES: this factory's rank is a member of `group`.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Create(const GroupSpec& group) = 0;
};

}  // namespace strata::parallel
