// `strata cluster status` and `strata cluster down`, and the health probe
// that `up` shares with them.
//
//   status --state-dir DIR [--json]: one entry per recorded process. With
//     --json exactly one line:
//     {"processes": [{"role": "router"|"worker", "replica": r, "rank": k, "pid": n,
//       "address": "host:port", "metrics_address": "host:port", "healthy": true}]}
//     Router entries carry neither "replica" nor "rank". healthy = the recorded
//     process is alive (same pid and start time) and its grpc.health.v1 Check
//     of the whole server ("") answers SERVING within 2 s. Exit 0 whenever the
//     state could be read, healthy or not.
//   down --state-dir DIR: SIGTERM to every live recorded process, SIGKILL to
//     those still running after the grace period, waits until all are gone,
//     removes DIR/cluster.json (logs stay). Exit 0 even when some were already
//     gone; non-zero only when there is no readable state.
//
// Thread-safety: single-threaded, from main.
#pragma once

#include <chrono>
#include <string>

namespace strata::cli {

// True when grpc.health.v1 Check("") at `address` answers SERVING in time.
bool IsServing(const std::string& address,
               std::chrono::milliseconds timeout = std::chrono::seconds(2));

// Both return the process exit code.
int RunClusterStatus(const std::string& state_dir, bool json);
int RunClusterDown(const std::string& state_dir, std::chrono::milliseconds grace);

}  // namespace strata::cli
