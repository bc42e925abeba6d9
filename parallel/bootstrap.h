// Start-up of one replica's ranks: where am I (rank, tp, pp, leader address),
// and do all ranks run the same thing?
//
// 1. ResolveBootstrapConfig turns flags (--rank, --world-size or --tp/--pp,
//    --leader-address) or a LeaderWorkerSet environment (LWS_LEADER_ADDRESS,
//    LWS_GROUP_SIZE, LWS_WORKER_INDEX; rank = worker_index * ranks_per_pod +
//    local_rank) into a BootstrapConfig. It is a pure function of its inputs.
// 2. BootstrapSession::Start: the leader (rank 0) starts the TcpStore server on
//    the leader address (or on every interface, with that port, if the
//    address does not resolve to this host yet); every rank connects (retrying with backoff until
//    the bootstrap timeout, so ranks may start in any order), registers its presence and runs the
//    handshake: each rank publishes its RankIdentity; a rank that differs from the leader in any
//    field is refused on both sides with a message naming the field and both values. Start returns
//    once every rank has joined and matched, or fails on every rank.
// 3. ConnectGlooGroups builds the replica's communicators over Gloo, on the
//    address the leader sees this rank at, or on the interface named by
//    GLOO_SOCKET_IFNAME when it is set.
//
// Thread-safety: BootstrapSession is used from one thread (its TcpStore is
// thread-safe and may be shared with communicators).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator_groups.h"
#include "parallel/parallel_config.h"
#include "parallel/tcp_store.h"

namespace strata::parallel {

// Flag values as parsed (see bootstrap_flags.h); unset ones keep these values.
struct BootstrapFlags {
  int rank = -1;                     // --rank
  int world_size = 0;                // --world-size
  int tp = 0;                        // --tp
  int pp = 0;                        // --pp
  std::string pp_layers;             // --pp-layers, e.g. "2,3"
  std::string leader_address;        // --leader-address host:port
  int leader_port = 29500;           // --leader-port: used when LWS_LEADER_ADDRESS has no port
  int ranks_per_pod = 1;             // --ranks-per-pod
  int local_rank = 0;                // --local-rank, in [0, ranks_per_pod)
  double bootstrap_timeout_s = 300;  // --bootstrap-timeout
  double collective_timeout_s = 30;  // --collective-timeout
};

enum class BootstrapSource { kSingleProcess, kFlags, kLeaderWorkerSet };

struct BootstrapConfig {
  BootstrapSource source = BootstrapSource::kSingleProcess;
  int rank = 0;
  int world_size = 1;
  int tp = 1;
  int pp = 1;
  std::vector<int> pp_layers;  // empty: even split
  // host:port of the leader's store. Port 0 (single process only) picks one.
  std::string leader_address = "127.0.0.1:0";
  absl::Duration bootstrap_timeout = absl::Minutes(5);
  absl::Duration collective_timeout = absl::Seconds(30);

  // REQUIRES: this config came from ResolveBootstrapConfig (always valid).
  ParallelConfig parallel() const;
};

using Environment = std::map<std::string, std::string>;

// The variables of the process environment ResolveBootstrapConfig reads.
Environment LeaderWorkerSetEnvironment();

// Rules: --rank given → flags (and the environment is ignored); otherwise
// LWS_WORKER_INDEX set → LeaderWorkerSet (LWS_GROUP_SIZE and
// LWS_LEADER_ADDRESS required; --leader-address overrides the latter);
// otherwise a single process (tp · pp must be 1). tp and pp default to
// world_size and 1; given tp and pp must multiply to the world size. Every
// error names the flag or variable at fault.
absl::StatusOr<BootstrapConfig> ResolveBootstrapConfig(const BootstrapFlags& flags,
                                                       const Environment& env);

// What every rank must agree on with the leader.
struct RankIdentity {
  std::string model_name;
  std::string model_hash;  // e.g. a digest of config.json and the safetensors index
  int tp = 1;
  int pp = 1;
  int world_size = 1;
  std::string build_version = BuildVersion();

  static std::string BuildVersion();
};

// "" when equal; otherwise "<field> differs: leader (rank 0) has X, rank k has Y"
// for the first differing field.
std::string DescribeIdentityMismatch(const RankIdentity& leader, const RankIdentity& other,
                                     int other_rank);

class BootstrapSession {
 public:
  // Runs steps 2 of the header comment. `identity` describes this rank.
  static absl::StatusOr<std::unique_ptr<BootstrapSession>> Start(const BootstrapConfig& config,
                                                                 const RankIdentity& identity);
  // On the leader, waits (up to 3 s) for the followers to disconnect before
  // closing the store, so that they can still diagnose a failure through it.
  // A leader should therefore destroy its session rather than exit without
  // unwinding.
  ~BootstrapSession();

  const BootstrapConfig& config() const { return config_; }
  ParallelConfig parallel() const { return config_.parallel(); }
  TcpStore& store() { return *store_; }
  // The store's address with the bound port (differs from the config's when
  // the leader was given port 0).
  const std::string& leader_address() const { return config_.leader_address; }
  // The address the other ranks can reach this one at (Gloo binds it): the
  // local address of the connection to the leader.
  const std::string& advertise_host() const { return advertise_host_; }

 private:
  BootstrapSession(BootstrapConfig config, std::unique_ptr<TcpStoreServer> server,
                   std::unique_ptr<TcpStore> store, std::string advertise_host);

  BootstrapConfig config_;
  std::unique_ptr<TcpStoreServer> server_;  // leader only
  std::unique_ptr<TcpStore> store_;
  std::string advertise_host_;
};

// The handshake alone (Start runs it): see the header comment. Exposed for tests.
absl::Status RunHandshake(TcpStore& store, const BootstrapConfig& config,
                          const RankIdentity& identity);

// Builds the world, TP and pipeline-link communicators over Gloo. The session
// must outlive the returned groups.
absl::StatusOr<std::unique_ptr<CommunicatorGroups>> ConnectGlooGroups(BootstrapSession& session);

}  // namespace strata::parallel
