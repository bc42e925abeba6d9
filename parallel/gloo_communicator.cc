#include "parallel/gloo_communicator.h"

#include <chrono>
#include <csignal>
#include <exception>

#include "absl/strings/str_cat.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/common/error.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/rendezvous/store.h"
#include "gloo/transport/tcp/device.h"
#include "gloo/transport/unbound_buffer.h"
#include "gloo/types.h"

namespace strata::parallel {
namespace {

// Prepared option objects kept per operation kind and communicator.
constexpr size_t kMaxPreparedPerOp = 16;
// Slot prefix of point-to-point messages (Gloo's own prefixes are 0x01..0x08).
constexpr uint8_t kPointToPointSlotPrefix = 0x50;
// Collectives on one communicator run one at a time, so one tag suffices.
constexpr uint32_t kTag = 1;

std::chrono::milliseconds ToChronoMs(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

bool LooksLikeTimeout(const std::string& text) {
  return text.find("Timed out") != std::string::npos ||
         text.find("timed out") != std::string::npos ||
         text.find("not set within") != std::string::npos;
}

void IgnoreSigpipeIfDefault() {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    ::signal(SIGPIPE, SIG_IGN);
  }
}

using ReduceFunction = void (*)(void*, const void*, const void*, size_t);

}  // namespace

// gloo::rendezvous::Store over TcpStore. Gloo's Store interface reports errors
// by throwing; those exceptions never leave this file (Create catches them).
class GlooCommunicatorFactory::StoreAdapter final : public gloo::rendezvous::Store {
 public:
  StoreAdapter(TcpStore* store, absl::Duration timeout) : store_(store), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    absl::Status status = store_->Set(key, std::string(data.begin(), data.end()));
    if (!status.ok()) throw gloo::IoException(std::string(status.message()));
  }

  std::vector<char> get(const std::string& key) override {
    absl::StatusOr<std::string> value = store_->Get(key, timeout_);
    if (!value.ok()) throw gloo::IoException(std::string(value.status().message()));
    return std::vector<char>(value->begin(), value->end());
  }

  void wait(const std::vector<std::string>& keys) override { wait(keys, ToChronoMs(timeout_)); }

  // Gloo passes its collective timeout here; members of a group may start
  // minutes apart (model loading), so the bootstrap timeout applies instead.
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds&) override {
    absl::Status status = store_->Wait(keys, timeout_);
    if (!status.ok()) throw gloo::IoException(std::string(status.message()));
  }

 private:
  TcpStore* store_;
  const absl::Duration timeout_;
};

GlooCommunicator::GlooCommunicator(GroupSpec group, int rank,
                                   std::shared_ptr<gloo::Context> context,
                                   const GlooOptions& options,
                                   std::shared_ptr<PeerFailureDiagnoser> diagnoser)
    : group_(std::move(group)),
      rank_(rank),
      context_(std::move(context)),
      options_(options),
      diagnoser_(std::move(diagnoser)) {}

GlooCommunicator::~GlooCommunicator() = default;

template <typename Options, typename Make>
Options& GlooCommunicator::Lookup(PreparedList<Options>& cache, const OpKey& key, Make make) {
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (it->key == key) {
      cache.splice(cache.begin(), cache, it);
      return *cache.front().options;
    }
  }
  cache.push_front(Prepared<Options>{key, make()});
  if (cache.size() > kMaxPreparedPerOp) cache.pop_back();
  return *cache.front().options;
}

template <typename Describe, typename Op>
absl::Status GlooCommunicator::Run(Describe describe, Op op) {
  if (!broken_.ok()) return broken_;
  absl::Status transport_error;
  try {
    transport_error = op();
    if (transport_error.ok()) return transport_error;
  } catch (const std::exception& e) {
    const std::string text = e.what();
    transport_error =
        LooksLikeTimeout(text) ? absl::DeadlineExceededError(text) : absl::UnavailableError(text);
  }
  // Closing our connections makes the other members fail now rather than at
  // their own timeout, so they can answer the diagnoser's roll call.
  try {
    context_->closeConnections();
  } catch (const std::exception&) {
    // Already failing; the diagnosis below carries the error.
  }
  broken_ = diagnoser_ != nullptr ? diagnoser_->Diagnose(group_, describe(), transport_error)
                                  : transport_error;
  return broken_;
}

absl::Status GlooCommunicator::CheckPeer(int peer) const {
  if (peer < 0 || peer >= size() || peer == rank_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group ", group_.DebugString(), ": invalid peer ", peer, " for group rank ", rank_));
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::AllReduceSum(float* data, size_t n) {
  if (!broken_.ok()) return broken_;
  if (n == 0 || size() == 1) return absl::OkStatus();
  auto describe = [&] { return absl::StrCat("all_reduce of ", n, " floats"); };
  return Run(describe, [&] {
    gloo::AllreduceOptions& options = Lookup(allreduce_cache_, OpKey{data, nullptr, n, 0}, [&] {
      auto made = std::make_unique<gloo::AllreduceOptions>(context_);
      made->setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
      made->setOutput<float>(data, n);
      made->setReduceFunction(static_cast<ReduceFunction>(&gloo::sum<float>));
      made->setTag(kTag);
      made->setTimeout(ToChronoMs(options_.collective_timeout));
      return made;
    });
    gloo::allreduce(options);
    return absl::OkStatus();
  });
}

absl::Status GlooCommunicator::AllGather(const float* in, size_t n, float* out) {
  if (!broken_.ok()) return broken_;
  if (n == 0) return absl::OkStatus();
  if (size() == 1) {
    std::copy(in, in + n, out);
    return absl::OkStatus();
  }
  auto describe = [&] { return absl::StrCat("all_gather of ", n, " floats per rank"); };
  return Run(describe, [&] {
    gloo::AllgatherOptions& options = Lookup(allgather_cache_, OpKey{in, out, n, 0}, [&] {
      auto made = std::make_unique<gloo::AllgatherOptions>(context_);
      made->setInput<float>(const_cast<float*>(in), n);
      made->setOutput<float>(out, n * size());
      made->setTag(kTag);
      made->setTimeout(ToChronoMs(options_.collective_timeout));
      return made;
    });
    gloo::allgather(options);
    return absl::OkStatus();
  });
}

absl::Status GlooCommunicator::Broadcast(void* data, size_t bytes, int root) {
  if (!broken_.ok()) return broken_;
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast root ", root, " is outside group ", group_.DebugString()));
  }
  if (bytes == 0 || size() == 1) return absl::OkStatus();
  auto describe = [&] {
    return absl::StrCat("broadcast of ", bytes, " bytes from group rank ", root);
  };
  return Run(describe, [&] {
    gloo::BroadcastOptions& options =
        Lookup(broadcast_cache_, OpKey{data, nullptr, bytes, root}, [&] {
          auto made = std::make_unique<gloo::BroadcastOptions>(context_);
          made->setOutput<uint8_t>(static_cast<uint8_t*>(data), bytes);
          made->setRoot(root);
          made->setTag(kTag);
          made->setTimeout(ToChronoMs(options_.collective_timeout));
          return made;
        });
    gloo::broadcast(options);
    return absl::OkStatus();
  });
}

absl::Status GlooCommunicator::Send(const void* data, size_t bytes, int peer) {
  if (!broken_.ok()) return broken_;
  if (absl::Status s = CheckPeer(peer); !s.ok()) return s;
  if (bytes == 0) return absl::OkStatus();
  auto describe = [&] {
    return absl::StrCat("send of ", bytes, " bytes to rank ", group_.world_ranks[peer]);
  };
  return Run(describe, [&] {
    std::unique_ptr<gloo::transport::UnboundBuffer> buffer =
        context_->createUnboundBuffer(const_cast<void*>(data), bytes);
    buffer->send(peer, gloo::Slot::build(kPointToPointSlotPrefix, kTag));
    if (!buffer->waitSend(ToChronoMs(options_.collective_timeout))) {
      return absl::AbortedError("send aborted");
    }
    return absl::OkStatus();
  });
}

absl::Status GlooCommunicator::Recv(void* data, size_t bytes, int peer) {
  if (!broken_.ok()) return broken_;
  if (absl::Status s = CheckPeer(peer); !s.ok()) return s;
  if (bytes == 0) return absl::OkStatus();
  auto describe = [&] {
    return absl::StrCat("recv of ", bytes, " bytes from rank ", group_.world_ranks[peer]);
  };
  return Run(describe, [&] {
    std::unique_ptr<gloo::transport::UnboundBuffer> buffer =
        context_->createUnboundBuffer(data, bytes);
    buffer->recv(peer, gloo::Slot::build(kPointToPointSlotPrefix, kTag));
    if (!buffer->waitRecv(ToChronoMs(options_.collective_timeout))) {
      return absl::AbortedError("recv aborted");
    }
    return absl::OkStatus();
  });
}

absl::Status GlooCommunicator::Barrier() {
  if (!broken_.ok()) return broken_;
  if (size() == 1) return absl::OkStatus();
  auto describe = [] { return std::string("barrier"); };
  return Run(describe, [&] {
    if (barrier_options_ == nullptr) {
      barrier_options_ = std::make_unique<gloo::BarrierOptions>(context_);
      barrier_options_->setTag(kTag);
      barrier_options_->setTimeout(ToChronoMs(options_.collective_timeout));
    }
    gloo::barrier(*barrier_options_);
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------------------------

GlooCommunicatorFactory::GlooCommunicatorFactory(TcpStore* store, int world_rank,
                                                 GlooOptions options,
                                                 std::shared_ptr<gloo::transport::Device> device)
    : store_(store),
      world_rank_(world_rank),
      options_(std::move(options)),
      device_(std::move(device)),
      store_adapter_(std::make_unique<StoreAdapter>(store, options_.bootstrap_timeout)),
      diagnoser_(
          std::make_shared<PeerFailureDiagnoser>(store, world_rank, options_.diagnosis_grace)) {}

GlooCommunicatorFactory::~GlooCommunicatorFactory() = default;

absl::StatusOr<std::unique_ptr<GlooCommunicatorFactory>> GlooCommunicatorFactory::Create(
    TcpStore* store, int world_rank, GlooOptions options) {
  IgnoreSigpipeIfDefault();
  if (options.hostname.empty()) options.hostname = store->local_host();
  try {
    gloo::transport::tcp::attr attr;
    if (!options.interface_name.empty()) {
      attr.iface = options.interface_name;
    } else {
      attr.hostname = options.hostname;
    }
    std::shared_ptr<gloo::transport::Device> device = gloo::transport::tcp::CreateDevice(attr);
    return std::unique_ptr<GlooCommunicatorFactory>(
        new GlooCommunicatorFactory(store, world_rank, std::move(options), std::move(device)));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(
        "rank ", world_rank, ": cannot create a Gloo TCP device on \"",
        options.interface_name.empty() ? options.hostname : "interface " + options.interface_name,
        "\": ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Communicator>> GlooCommunicatorFactory::Create(
    const GroupSpec& group) {
  const int group_rank = group.GroupRankOf(world_rank_);
  if (group_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", world_rank_, " is not a member of group ", group.DebugString()));
  }
  if (group.size() == 1) {
    return std::make_unique<GlooCommunicator>(group, 0, nullptr, options_, diagnoser_);
  }
  try {
    gloo::rendezvous::PrefixStore prefixed(absl::StrCat("gloo/", group.name), *store_adapter_);
    auto context = std::make_shared<gloo::rendezvous::Context>(group_rank, group.size());
    context->setTimeout(ToChronoMs(options_.collective_timeout));
    context->connectFullMesh(prefixed, device_);
    return std::make_unique<GlooCommunicator>(group, group_rank, std::move(context), options_,
                                              diagnoser_);
  } catch (const std::exception& e) {
    const std::string text = e.what();
    const std::string message =
        absl::StrCat("Gloo rendezvous of group ", group.DebugString(), " (bootstrap timeout ",
                     absl::FormatDuration(options_.bootstrap_timeout), "): ", text);
    return LooksLikeTimeout(text) ? absl::DeadlineExceededError(message)
                                  : absl::UnavailableError(message);
  }
}

}  // namespace strata::parallel
