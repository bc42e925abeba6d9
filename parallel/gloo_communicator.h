// GlooCommunicator: the CPU path, Gloo over TCP, across processes and hosts.
//
// Groups rendezvous through the replica's TcpStore (one gloo PrefixStore per
// group name) and connect a full mesh. Every operation runs under the
// collective timeout, so a dead or hung peer produces an error, not a hang; on
// failure the communicator closes its connections (so the other members fail
// promptly too) and asks PeerFailureDiagnoser which rank is at fault.
//
// Gloo's option objects are expensive to build (over 100 ms for a 4 MiB
// all-reduce), so each communicator keeps the prepared options of its most
// recent (buffer, size) pairs: steady-state callers that reuse their buffers pay
// nothing per call.
//
// Creating a factory sets SIGPIPE to be ignored when it has the default
// disposition: Gloo writes with writev, and a peer's death must surface as an
// error, not kill this process.
//
// Thread-safety: see Communicator. The factory is used from one thread.
#pragma once

#include <list>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"
#include "parallel/peer_failure_diagnoser.h"
#include "parallel/tcp_store.h"

namespace gloo {
class Context;
class AllreduceOptions;
class AllgatherOptions;
class BroadcastOptions;
class BarrierOptions;
namespace transport {
class Device;
}  // namespace transport
}  // namespace gloo

namespace strata::parallel {

struct GlooOptions {
  // Address this rank's Gloo listener binds to and advertises; must be
  // reachable by the other ranks. Empty: the TcpStore's local_host().
  std::string hostname;
  // Network interface to use instead (its first address), as PyTorch's
  // GLOO_SOCKET_IFNAME names it: for pods with several interfaces. Empty:
  // use `hostname`.
  std::string interface_name;
  absl::Duration collective_timeout = absl::Seconds(30);
  // How long joining a group waits for its other members.
  absl::Duration bootstrap_timeout = absl::Seconds(60);
  // How long a failed rank waits for the store to tell who is at fault.
  absl::Duration diagnosis_grace = absl::Seconds(1);
};

class GlooCommunicator final : public Communicator {
 public:
  // REQUIRES: context is connected (null only when the group has one member).
  GlooCommunicator(GroupSpec group, int rank, std::shared_ptr<gloo::Context> context,
                   const GlooOptions& options, std::shared_ptr<PeerFailureDiagnoser> diagnoser);
  ~GlooCommunicator() override;

  const GroupSpec& group() const override { return group_; }
  int rank() const override { return rank_; }

  absl::Status AllReduceSum(float* data, size_t n) override;
  absl::Status AllGather(const float* in, size_t n, float* out) override;
  absl::Status Broadcast(void* data, size_t bytes, int root) override;
  absl::Status Send(const void* data, size_t bytes, int peer) override;
  absl::Status Recv(void* data, size_t bytes, int peer) override;
  absl::Status Barrier() override;

 private:
  // A cache key: the buffers and sizes a prepared options object is bound to.
  struct OpKey {
    const void* a = nullptr;
    const void* b = nullptr;
    size_t n = 0;
    int root = 0;
    bool operator==(const OpKey&) const = default;
  };
  template <typename Options>
  struct Prepared {
    OpKey key;
    std::unique_ptr<Options> options;
  };
  template <typename Options>
  using PreparedList = std::list<Prepared<Options>>;  // most recently used first

  template <typename Options, typename Make>
  Options& Lookup(PreparedList<Options>& cache, const OpKey& key, Make make);

  // Runs `op` unless the communicator is broken; turns a Gloo exception (or an
  // error status from `op`) into a diagnosed status and breaks the
  // communicator. `describe()` names the operation, built only on failure.
  template <typename Describe, typename Op>
  absl::Status Run(Describe describe, Op op);
  absl::Status CheckPeer(int peer) const;

  const GroupSpec group_;
  const int rank_;
  std::shared_ptr<gloo::Context> context_;
  const GlooOptions options_;
  std::shared_ptr<PeerFailureDiagnoser> diagnoser_;
  absl::Status broken_;

  PreparedList<gloo::AllreduceOptions> allreduce_cache_;
  PreparedList<gloo::AllgatherOptions> allgather_cache_;
  PreparedList<gloo::BroadcastOptions> broadcast_cache_;
  std::unique_ptr<gloo::BarrierOptions> barrier_options_;
};

class GlooCommunicatorFactory final : public CommunicatorFactory {
 public:
  // `store` must outlive the factory and every communicator it creates (a
  // communicator may outlive the factory).
  static absl::StatusOr<std::unique_ptr<GlooCommunicatorFactory>> Create(TcpStore* store,
                                                                         int world_rank,
                                                                         GlooOptions options);
  ~GlooCommunicatorFactory() override;

  absl::StatusOr<std::unique_ptr<Communicator>> Create(const GroupSpec& group) override;

 private:
  class StoreAdapter;
  GlooCommunicatorFactory(TcpStore* store, int world_rank, GlooOptions options,
                          std::shared_ptr<gloo::transport::Device> device);

  TcpStore* store_;
  const int world_rank_;
  const GlooOptions options_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::unique_ptr<StoreAdapter> store_adapter_;
  std::shared_ptr<PeerFailureDiagnoser> diagnoser_;
};

}  // namespace strata::parallel
