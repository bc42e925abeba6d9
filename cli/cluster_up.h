// `strata cluster up`: a whole local deployment on 127.0.0.1, as child
// processes: `replicas` replicas of tp x pp worker ranks each, and one router
// in front of the replicas' leaders (rank 0).
//
// Start-up: every rank of every replica starts at once (a multi-rank replica
// meets at a TCP store on a free port its leader serves); once each has
// written its ready file and answers health SERVING, the router starts with
// the leaders as backends; once the router is SERVING the cluster is up. Any
// process exiting, the start-up timeout, or SIGINT/SIGTERM/SIGHUP during
// start-up stops everything started so far and fails with one line naming
// the process and the last line of its log.
//
// Foreground (default): prints the addresses, optionally streams a sample
// completion through the router, then serves until SIGINT/SIGTERM/SIGHUP or
// until the router or every replica has exited; then stops everything
// (SIGTERM, SIGKILL after the grace period) and waits. The children run in
// sessions of their own and get SIGTERM should the CLI itself die.
// --detach: prints only the router's address on stdout and returns once the
// cluster is up; the processes keep running, recorded in STATE_DIR (see
// cluster_state.h) for `status` and `down`.
//
// Thread-safety: single-threaded, from main. Blocks SIGINT, SIGTERM and
// SIGHUP in the calling thread and takes them with sigtimedwait.
#pragma once

#include <string>

namespace strata::cli {

struct ClusterUpOptions {
  std::string model_dir;
  int replicas = 1;
  int tp = 1;
  int pp = 1;
  // Where the state and logs go. Required with `detach`; in the foreground a
  // fresh folder under /tmp is used (and removed after a clean stop) when empty.
  std::string state_dir;
  bool detach = false;
  // Build tree holding worker/service/strata-worker and router/strata-router;
  // empty: found next to the running strata binary.
  std::string build_dir;
  int threads = 0;      // --threads of each worker; 0: the machine's cores shared among all ranks
  int router_port = 0;  // 0: any free port
  int startup_timeout_seconds = 120;
  int grace_seconds = 10;
  std::string sample_prompt;  // foreground only: streamed through the router once up
};

// Returns the process exit code: 0 once up (detached) or after a clean stop;
// 1 on failure; 130 when interrupted during start-up.
int RunClusterUp(const ClusterUpOptions& options);

}  // namespace strata::cli
