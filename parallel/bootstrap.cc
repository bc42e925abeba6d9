#include "parallel/bootstrap.h"

#include <unistd.h>

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "parallel/gloo_communicator.h"
#include "spdlog/spdlog.h"

namespace strata::parallel {
namespace {

constexpr const char* kLwsLeaderAddress = "LWS_LEADER_ADDRESS";
constexpr const char* kLwsGroupSize = "LWS_GROUP_SIZE";
constexpr const char* kLwsWorkerIndex = "LWS_WORKER_INDEX";

absl::StatusOr<int> EnvInt(const Environment& env, const char* name) {
  auto it = env.find(name);
  if (it == env.end() || it->second.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LeaderWorkerSet environment incomplete: ", name, " is not set (", kLwsWorkerIndex,
        " is, so ", kLwsGroupSize, " and ", kLwsLeaderAddress, " are required too)"));
  }
  int value = 0;
  if (!absl::SimpleAtoi(it->second, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, "=\"", it->second, "\" is not an integer"));
  }
  return value;
}

absl::Duration Seconds(double s) { return absl::Milliseconds(static_cast<int64_t>(s * 1000)); }

// Fills tp and pp from what was given, checking they multiply to world_size
// (0 = unknown, then it becomes tp * pp).
absl::Status ResolveShape(const BootstrapFlags& flags, BootstrapConfig* config) {
  int tp = flags.tp;
  int pp = flags.pp;
  int world = config->world_size;
  if (tp < 0 || pp < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp and --pp must be positive, got --tp=", tp, " --pp=", pp));
  }
  if (tp == 0 && pp == 0) {
    tp = world > 0 ? world : 1;
    pp = 1;
  } else if (tp == 0 || pp == 0) {
    const int given = tp == 0 ? pp : tp;
    if (world == 0) world = given;
    if (world % given != 0) {
      return absl::InvalidArgumentError(absl::StrCat(tp == 0 ? "--pp=" : "--tp=", given,
                                                     " does not divide the world size ", world));
    }
    (tp == 0 ? tp : pp) = world / given;
  }
  if (world == 0) world = tp * pp;
  if (tp * pp != world) {
    return absl::InvalidArgumentError(absl::StrCat("--tp=", tp, " x --pp=", pp, " = ", tp * pp,
                                                   " ranks, but the world size is ", world));
  }
  config->tp = tp;
  config->pp = pp;
  config->world_size = world;
  return absl::OkStatus();
}

}  // namespace

ParallelConfig BootstrapConfig::parallel() const {
  absl::StatusOr<ParallelConfig> parallel = ParallelConfig::Create(tp, pp, rank);
  // ResolveBootstrapConfig checked these; a hand-made invalid config is a bug.
  if (!parallel.ok()) {
    spdlog::critical("invalid BootstrapConfig: {}", std::string(parallel.status().message()));
    std::abort();
  }
  return *parallel;
}

Environment LeaderWorkerSetEnvironment() {
  Environment env;
  for (const char* name : {kLwsLeaderAddress, kLwsGroupSize, kLwsWorkerIndex}) {
    if (const char* value = std::getenv(name); value != nullptr) env[name] = value;
  }
  return env;
}

absl::StatusOr<BootstrapConfig> ResolveBootstrapConfig(const BootstrapFlags& flags,
                                                       const Environment& env) {
  BootstrapConfig config;
  if (flags.bootstrap_timeout_s <= 0 || flags.collective_timeout_s <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--bootstrap-timeout and --collective-timeout must be positive, got ",
                     flags.bootstrap_timeout_s, " and ", flags.collective_timeout_s));
  }
  config.bootstrap_timeout = Seconds(flags.bootstrap_timeout_s);
  config.collective_timeout = Seconds(flags.collective_timeout_s);
  if (flags.world_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--world-size must be positive, got ", flags.world_size));
  }

  if (flags.rank >= 0) {
    config.source = BootstrapSource::kFlags;
    config.rank = flags.rank;
    config.world_size = flags.world_size;
    if (config.world_size == 0 && flags.tp == 0 && flags.pp == 0) {
      return absl::InvalidArgumentError("--rank needs --world-size or --tp/--pp");
    }
    STRATA_RETURN_IF_ERROR(ResolveShape(flags, &config));
    if (config.world_size > 1 && flags.leader_address.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--leader-address host:port is required with --rank (world size ",
                       config.world_size, ")"));
    }
    if (!flags.leader_address.empty()) config.leader_address = flags.leader_address;
  } else if (env.contains(kLwsWorkerIndex)) {
    config.source = BootstrapSource::kLeaderWorkerSet;
    if (flags.ranks_per_pod < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ranks-per-pod must be >= 1, got ", flags.ranks_per_pod));
    }
    if (flags.local_rank < 0 || flags.local_rank >= flags.ranks_per_pod) {
      return absl::InvalidArgumentError(
          absl::StrCat("--local-rank=", flags.local_rank,
                       " must be in [0, --ranks-per-pod=", flags.ranks_per_pod, ")"));
    }
    STRATA_ASSIGN_OR_RETURN(const int worker_index, EnvInt(env, kLwsWorkerIndex));
    STRATA_ASSIGN_OR_RETURN(const int group_size, EnvInt(env, kLwsGroupSize));
    if (group_size < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(kLwsGroupSize, "=", group_size, " must be >= 1"));
    }
    if (worker_index < 0 || worker_index >= group_size) {
      return absl::InvalidArgumentError(absl::StrCat(kLwsWorkerIndex, "=", worker_index,
                                                     " must be in [0, ", kLwsGroupSize, "=",
                                                     group_size, ")"));
    }
    config.rank = worker_index * flags.ranks_per_pod + flags.local_rank;
    config.world_size = group_size * flags.ranks_per_pod;
    if (flags.world_size != 0 && flags.world_size != config.world_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--world-size=", flags.world_size, " disagrees with the LeaderWorkerSet: ", kLwsGroupSize,
          "=", group_size, " x --ranks-per-pod=", flags.ranks_per_pod, " = ", config.world_size));
    }
    STRATA_RETURN_IF_ERROR(ResolveShape(flags, &config));
    if (!flags.leader_address.empty()) {
      config.leader_address = flags.leader_address;
    } else {
      auto it = env.find(kLwsLeaderAddress);
      if (it == env.end() || it->second.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "LeaderWorkerSet environment incomplete: ", kLwsLeaderAddress, " is not set"));
      }
      // LWS gives a host name; the port comes from --leader-port unless present.
      config.leader_address = ParseHostPort(it->second).ok()
                                  ? it->second
                                  : absl::StrCat(it->second, ":", flags.leader_port);
    }
  } else {
    config.source = BootstrapSource::kSingleProcess;
    config.rank = 0;
    config.world_size = flags.world_size;
    STRATA_RETURN_IF_ERROR(ResolveShape(flags, &config));
    if (config.world_size > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("world size ", config.world_size, " (--tp=", config.tp, " --pp=", config.pp,
                       ") needs --rank and --leader-address, or the LeaderWorkerSet environment (",
                       kLwsWorkerIndex, ")"));
    }
    if (!flags.leader_address.empty()) config.leader_address = flags.leader_address;
  }

  if (config.rank < 0 || config.rank >= config.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", config.rank, " is outside the world [0, ", config.world_size, ")"));
  }
  STRATA_ASSIGN_OR_RETURN(HostPort leader, ParseHostPort(config.leader_address));
  if (leader.port == 0 && config.world_size > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--leader-address ", config.leader_address,
                     " needs a fixed port when there are several ranks (followers must know it)"));
  }
  STRATA_ASSIGN_OR_RETURN(config.pp_layers, ParseLayerCounts(flags.pp_layers));
  if (!config.pp_layers.empty() && static_cast<int>(config.pp_layers.size()) != config.pp) {
    return absl::InvalidArgumentError(absl::StrCat("--pp-layers ", flags.pp_layers, " has ",
                                                   config.pp_layers.size(),
                                                   " entries but --pp=", config.pp));
  }
  return config;
}

// ---------------------------------------------------------------------------
// Handshake

std::string RankIdentity::BuildVersion() { return STRATA_VERSION; }

std::string DescribeIdentityMismatch(const RankIdentity& leader, const RankIdentity& other,
                                     int other_rank) {
  auto differs = [&](const char* field, const auto& a, const auto& b) -> std::string {
    if (a == b) return "";
    return absl::StrCat(field, " differs: leader (rank 0) has \"", a, "\", rank ", other_rank,
                        " has \"", b, "\"");
  };
  for (std::string text : {differs("model_name", leader.model_name, other.model_name),
                           differs("model_hash", leader.model_hash, other.model_hash),
                           differs("tp", leader.tp, other.tp), differs("pp", leader.pp, other.pp),
                           differs("world_size", leader.world_size, other.world_size),
                           differs("build_version", leader.build_version, other.build_version)}) {
    if (!text.empty()) return text;
  }
  return "";
}

namespace {

constexpr const char* kLeaderKey = "handshake/leader";
constexpr const char* kVerdictKey = "handshake/verdict";
constexpr const char* kVerdictOk = "ok";
// How long a leader's session, when destroyed, keeps the store up for
// followers that are still connected (e.g. diagnosing a failure).
constexpr absl::Duration kLeaderDrainTimeout = absl::Seconds(3);
// Followers count themselves here once they have read the verdict.
constexpr const char* kVerdictReadKey = "handshake/verdict_read";
// How long a refusing leader keeps its store up for followers to read why.
constexpr absl::Duration kRefusalLinger = absl::Seconds(1);

std::string RankKey(int rank) { return absl::StrCat("handshake/rank/", rank); }
std::string ClaimKey(int rank) { return absl::StrCat("handshake/claim/", rank); }

std::string Serialize(const RankIdentity& identity) {
  nlohmann::json j = {{"model_name", identity.model_name},
                      {"model_hash", identity.model_hash},
                      {"tp", identity.tp},
                      {"pp", identity.pp},
                      {"world_size", identity.world_size},
                      {"build_version", identity.build_version}};
  return j.dump();
}

absl::StatusOr<RankIdentity> Deserialize(const std::string& text, int rank) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat("handshake record of rank ", rank, " is not JSON"));
  }
  RankIdentity identity;
  identity.model_name = j.value("model_name", "");
  identity.model_hash = j.value("model_hash", "");
  identity.tp = j.value("tp", 0);
  identity.pp = j.value("pp", 0);
  identity.world_size = j.value("world_size", 0);
  identity.build_version = j.value("build_version", "");
  return identity;
}

absl::Status LeaderHandshake(TcpStore& store, const BootstrapConfig& config,
                             const RankIdentity& identity) {
  STRATA_RETURN_IF_ERROR(store.Set(kLeaderKey, Serialize(identity)));
  const absl::Time deadline = absl::Now() + config.bootstrap_timeout;
  std::vector<bool> joined(config.world_size, false);
  joined[0] = true;
  int waiting = config.world_size - 1;
  absl::Status verdict;
  while (waiting > 0) {
    for (int rank = 1; rank < config.world_size; ++rank) {
      if (joined[rank]) continue;
      absl::StatusOr<std::string> record = store.Get(RankKey(rank), absl::ZeroDuration());
      if (absl::IsDeadlineExceeded(record.status())) continue;
      if (!record.ok()) return record.status();
      STRATA_ASSIGN_OR_RETURN(RankIdentity other, Deserialize(*record, rank));
      joined[rank] = true;
      --waiting;
      if (std::string mismatch = DescribeIdentityMismatch(identity, other, rank);
          !mismatch.empty()) {
        verdict =
            absl::FailedPreconditionError(absl::StrCat("rank ", rank, " refused: ", mismatch));
        break;
      }
    }
    if (!verdict.ok()) break;
    if (waiting > 0 && absl::Now() >= deadline) {
      std::vector<int> missing;
      for (int rank = 1; rank < config.world_size; ++rank) {
        if (!joined[rank]) missing.push_back(rank);
      }
      verdict = absl::DeadlineExceededError(
          absl::StrCat(missing.size() == 1 ? "rank " : "ranks ", absl::StrJoin(missing, ","),
                       " did not join the leader at ", config.leader_address, " within ",
                       absl::FormatDuration(config.bootstrap_timeout), " (--bootstrap-timeout)"));
      break;
    }
    if (waiting > 0) absl::SleepFor(absl::Milliseconds(20));
  }
  // Every rank waits for this verdict, so a refusal stops them all.
  STRATA_RETURN_IF_ERROR(
      store.Set(kVerdictKey, verdict.ok() ? kVerdictOk : std::string(verdict.message())));
  if (!verdict.ok()) {
    // The store dies with this process: give the followers a moment to read
    // why, so they report the refusal rather than a lost connection.
    const absl::Time linger_until = absl::Now() + kRefusalLinger;
    while (absl::Now() < linger_until) {
      absl::StatusOr<int64_t> read = store.Add(kVerdictReadKey, 0);
      if (!read.ok() || *read >= config.world_size - 1) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  return verdict;
}

absl::Status FollowerHandshake(TcpStore& store, const BootstrapConfig& config,
                               const RankIdentity& identity) {
  STRATA_RETURN_IF_ERROR(store.Set(RankKey(config.rank), Serialize(identity)));
  absl::StatusOr<std::string> leader_record = store.Get(kLeaderKey, config.bootstrap_timeout);
  if (!leader_record.ok()) {
    return absl::Status(leader_record.status().code(),
                        absl::StrCat("rank ", config.rank, ": the leader at ",
                                     config.leader_address, " did not publish its identity: ",
                                     std::string(leader_record.status().message())));
  }
  STRATA_ASSIGN_OR_RETURN(RankIdentity leader, Deserialize(*leader_record, 0));
  if (std::string mismatch = DescribeIdentityMismatch(leader, identity, config.rank);
      !mismatch.empty()) {
    (void)store.Add(kVerdictReadKey, 1);
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", config.rank, " refused by the leader: ", mismatch));
  }
  absl::StatusOr<std::string> verdict =
      store.Get(kVerdictKey, config.bootstrap_timeout + absl::Seconds(5));
  if (!verdict.ok()) return verdict.status();
  (void)store.Add(kVerdictReadKey, 1);
  if (*verdict != kVerdictOk) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", config.rank, ": the leader aborted start-up: ", *verdict));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunHandshake(TcpStore& store, const BootstrapConfig& config,
                          const RankIdentity& identity) {
  STRATA_ASSIGN_OR_RETURN(const int64_t claims, store.Add(ClaimKey(config.rank), 1));
  if (claims > 1) {
    return absl::AlreadyExistsError(
        absl::StrCat("rank ", config.rank, " is already taken by another process of this replica"));
  }
  if (config.rank == ParallelConfig::kLeaderRank) {
    return LeaderHandshake(store, config, identity);
  }
  return FollowerHandshake(store, config, identity);
}

// ---------------------------------------------------------------------------
// Session

BootstrapSession::BootstrapSession(BootstrapConfig config, std::unique_ptr<TcpStoreServer> server,
                                   std::unique_ptr<TcpStore> store, std::string advertise_host)
    : config_(std::move(config)),
      server_(std::move(server)),
      store_(std::move(store)),
      advertise_host_(std::move(advertise_host)) {}

BootstrapSession::~BootstrapSession() {
  // Our own goodbye first; then, on the leader, the store stays up while
  // followers may still be asking it who failed (bounded).
  store_.reset();
  if (server_ != nullptr && !server_->WaitForPresenceToDrain(kLeaderDrainTimeout)) {
    spdlog::warn("leader: followers still connected after {}; closing the store",
                 absl::FormatDuration(kLeaderDrainTimeout));
  }
  server_.reset();
}

absl::StatusOr<std::unique_ptr<BootstrapSession>> BootstrapSession::Start(
    const BootstrapConfig& config, const RankIdentity& identity) {
  BootstrapConfig resolved = config;
  std::unique_ptr<TcpStoreServer> server;
  bool listening_everywhere = false;
  if (config.rank == ParallelConfig::kLeaderRank) {
    STRATA_ASSIGN_OR_RETURN(HostPort leader, ParseHostPort(config.leader_address));
    absl::StatusOr<std::unique_ptr<TcpStoreServer>> started =
        TcpStoreServer::Start(config.leader_address);
    listening_everywhere = leader.host.empty() || leader.host == "0.0.0.0";
    if (!started.ok() && !listening_everywhere) {
      // A Kubernetes Service name may not resolve to this pod until it is
      // ready; listening on every interface serves the same followers.
      spdlog::warn("leader: {}; listening on 0.0.0.0:{} instead",
                   std::string(started.status().message()), leader.port);
      started = TcpStoreServer::Start(absl::StrCat("0.0.0.0:", leader.port));
      listening_everywhere = true;
    }
    if (!started.ok()) return started.status();
    server = *std::move(started);
    leader.port = server->port();
    if (listening_everywhere) leader.host = "127.0.0.1";
    resolved.leader_address = leader.ToString();
  }
  absl::StatusOr<std::unique_ptr<TcpStore>> store =
      TcpStore::Connect(resolved.leader_address, {.connect_timeout = config.bootstrap_timeout});
  if (!store.ok()) {
    return absl::Status(
        store.status().code(),
        absl::StrCat("rank ", config.rank, " could not reach the leader within ",
                     absl::FormatDuration(config.bootstrap_timeout),
                     " (--bootstrap-timeout): ", std::string(store.status().message())));
  }
  STRATA_RETURN_IF_ERROR((*store)->RegisterPresence(config.rank));
  STRATA_RETURN_IF_ERROR(RunHandshake(**store, resolved, identity));
  // Peers reach this rank at the address its connection to the leader came
  // from; a leader that reached itself over loopback uses its host name.
  std::string advertise_host = (*store)->local_host();
  if (listening_everywhere) {
    char hostname[256] = {0};
    if (::gethostname(hostname, sizeof(hostname) - 1) == 0) advertise_host = hostname;
  }
  spdlog::info("rank {} joined the replica at {} ({}; peers reach it at {})", config.rank,
               resolved.leader_address, resolved.parallel().DebugString(), advertise_host);
  return std::unique_ptr<BootstrapSession>(new BootstrapSession(
      std::move(resolved), std::move(server), *std::move(store), std::move(advertise_host)));
}

absl::StatusOr<std::unique_ptr<CommunicatorGroups>> ConnectGlooGroups(BootstrapSession& session) {
  GlooOptions options;
  options.hostname = session.advertise_host();
  // The variable PyTorch and Gloo deployments already set for multi-NIC pods.
  if (const char* interface_name = std::getenv("GLOO_SOCKET_IFNAME");
      interface_name != nullptr && *interface_name != '\0') {
    options.interface_name = interface_name;
  }
  options.collective_timeout = session.config().collective_timeout;
  options.bootstrap_timeout = session.config().bootstrap_timeout;
  STRATA_ASSIGN_OR_RETURN(
      std::unique_ptr<GlooCommunicatorFactory> factory,
      GlooCommunicatorFactory::Create(&session.store(), session.config().rank, options));
  return CommunicatorGroups::Create(session.parallel(), *factory);
}

}  // namespace strata::parallel
