#include "parallel/bootstrap_flags.h"

#include "CLI/CLI.hpp"

namespace strata::parallel {

void AddBootstrapFlags(CLI::App& app, BootstrapFlags* flags) {
  app.add_option("--rank", flags->rank,
                 "This process's rank in the replica (rank = stage * tp + tp_rank); "
                 "unset: LeaderWorkerSet environment or a single process");
  app.add_option("--world-size", flags->world_size, "Ranks in the replica (tp * pp)");
  app.add_option("--tp", flags->tp, "Tensor-parallel ranks per pipeline stage");
  app.add_option("--pp", flags->pp, "Pipeline stages");
  app.add_option("--pp-layers", flags->pp_layers,
                 "Layers per pipeline stage, comma-separated (e.g. 2,3); default: even split");
  app.add_option("--leader-address", flags->leader_address,
                 "host:port of the leader's bootstrap store (rank 0 listens there)");
  app.add_option("--leader-port", flags->leader_port,
                 "Store port used with LWS_LEADER_ADDRESS when it has none")
      ->capture_default_str();
  app.add_option("--ranks-per-pod", flags->ranks_per_pod,
                 "Ranks per LeaderWorkerSet pod: rank = LWS_WORKER_INDEX * this + --local-rank")
      ->capture_default_str();
  app.add_option("--local-rank", flags->local_rank, "Rank within the pod (one per GPU)")
      ->capture_default_str();
  app.add_option("--bootstrap-timeout", flags->bootstrap_timeout_s,
                 "Seconds to wait for the leader and every rank at start-up")
      ->capture_default_str();
  app.add_option("--collective-timeout", flags->collective_timeout_s,
                 "Seconds a collective may wait on a peer before the replica is declared failed")
      ->capture_default_str();
}

}  // namespace strata::parallel
