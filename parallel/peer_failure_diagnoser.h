// Names the rank behind a failed collective, so every surviving rank can say
// which peer was lost instead of just "connection closed".
//
// A transport error only tells a rank that its own neighbour failed, which in a
// ring is often an innocent rank that gave up first. The diagnoser asks the
// bootstrap store instead, within a short grace period:
//   1. ranks whose presence connection closed without a goodbye are dead:
//      UNAVAILABLE "rank k lost (its process exited)";
//   2. the store itself unreachable means the leader died: UNAVAILABLE naming
//      rank 0;
//   3. otherwise a roll call: every member that saw the failure posts a key
//      fault/<group>/<rank>; members that do not within the grace period are
//      hung or stopped: DEADLINE_EXCEEDED "rank k did not respond".
// Communicators close their connections before calling Diagnose, so the other
// members fail promptly and answer the roll call.
//
// Thread-safety: thread-safe (the store serialises its calls).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"
#include "parallel/tcp_store.h"

namespace strata::parallel {

class PeerFailureDiagnoser {
 public:
  // `store` must outlive the diagnoser.
  PeerFailureDiagnoser(TcpStore* store, int world_rank, absl::Duration grace)
      : store_(store), world_rank_(world_rank), grace_(grace) {}

  // Returns the status to report for `transport_error`, raised by operation
  // `what` (e.g. "all_reduce of 4096 floats") on `group`. The message starts
  // with the group and operation, names the rank at fault when found, and ends
  // with the transport's own words.
  absl::Status Diagnose(const GroupSpec& group, const std::string& what,
                        const absl::Status& transport_error);

 private:
  TcpStore* store_;
  const int world_rank_;
  const absl::Duration grace_;
};

}  // namespace strata::parallel
