#include "worker/distributed/replica.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/hash.h"
#include "common/process_memory.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"
#include "worker/distributed/step_plan.h"

namespace strata::distributed {
namespace {

constexpr int kLeader = 0;

uint64_t HashBytes(uint64_t seed, const std::string& bytes) {
  uint64_t h = MixBits(seed ^ bytes.size());
  for (unsigned char c : bytes) h = MixBits(h ^ c);
  return h;
}

std::string FolderName(const std::string& model_dir) {
  std::filesystem::path path(model_dir);
  if (!path.has_filename()) path = path.parent_path();
  return path.filename().string();
}

// The rank that sends the logits to the leader: the last stage's tp rank 0.
int LogitsRank(const parallel::ParallelConfig& config) { return config.RankOf(config.pp() - 1, 0); }

}  // namespace

absl::StatusOr<parallel::RankIdentity> ModelIdentity(const model::LoadOptions& options, int tp,
                                                     int pp) {
  const std::filesystem::path dir(options.model_dir);
  std::ifstream config_file(dir / "config.json", std::ios::binary);
  if (!config_file) {
    return absl::NotFoundError(absl::StrCat((dir / "config.json").string(), ": cannot read"));
  }
  std::stringstream contents;
  contents << config_file.rdbuf();
  uint64_t digest = HashBytes(0, contents.str());
  if (options.random_weights) {
    digest = HashBytes(digest, absl::StrCat("random weights, seed ", options.random_seed));
  } else {
    std::vector<std::string> files;
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
      if (entry.path().extension() == ".safetensors") {
        files.push_back(absl::StrCat(entry.path().filename().string(), ":", entry.file_size()));
      }
    }
    std::sort(files.begin(), files.end());
    for (const std::string& file : files) digest = HashBytes(digest, file);
  }
  if (options.weight_dtype.has_value()) {
    digest = HashBytes(digest, std::string(DTypeName(*options.weight_dtype)));
  }
  parallel::RankIdentity identity;
  identity.model_name = FolderName(options.model_dir);
  identity.model_hash = absl::StrCat(absl::Hex(digest, absl::kZeroPad16));
  identity.tp = tp;
  identity.pp = pp;
  identity.world_size = tp * pp;
  return identity;
}

absl::StatusOr<std::unique_ptr<ReplicaRank>> ReplicaRank::Start(const ReplicaOptions& options) {
  const parallel::BootstrapConfig& bootstrap = options.bootstrap;
  STRATA_ASSIGN_OR_RETURN(model::ModelConfig config,
                          model::ModelConfig::FromDirectory(options.model.model_dir));
  std::unique_ptr<ReplicaRank> rank(new ReplicaRank());
  rank->parallel_ = bootstrap.parallel();
  rank->collective_timeout_ = bootstrap.collective_timeout;
  // Refuse a model that cannot be cut this way before contacting anyone.
  STRATA_ASSIGN_OR_RETURN(rank->shard_, model::ModelShard::ForRank(config, rank->parallel_,
                                                                    bootstrap.pp_layers));
  STRATA_ASSIGN_OR_RETURN(parallel::RankIdentity identity,
                          ModelIdentity(options.model, bootstrap.tp, bootstrap.pp));
  spdlog::info("rank {}: {}; joining the replica at {}", rank->parallel_.rank(),
               rank->shard_.DebugString(), bootstrap.leader_address);
  STRATA_ASSIGN_OR_RETURN(rank->session_, parallel::BootstrapSession::Start(bootstrap, identity));
  STRATA_ASSIGN_OR_RETURN(rank->groups_, parallel::ConnectGlooGroups(*rank->session_));

  // KV cache: block ids are the leader's, shared by every rank, so the
  // replica has as many blocks as its most constrained rank can hold.
  const int32_t block_size = options.model.kv_block_size;
  if (block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("block size must be positive, got ", block_size));
  }
  int64_t local_blocks = options.model.kv_num_blocks;
  if (options.kv_cache_memory_bytes > 0) {
    const uint64_t block_bytes = model::KvBytesPerToken(config, rank->shard_) * block_size;
    local_blocks = static_cast<int64_t>(options.kv_cache_memory_bytes / std::max<uint64_t>(1, block_bytes));
    if (local_blocks < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kv_cache_memory ", options.kv_cache_memory_bytes, " bytes holds no block of ",
          block_bytes, " bytes on rank ", rank->parallel_.rank()));
    }
  } else if (local_blocks <= 0) {
    local_blocks = model::DefaultKvBlocks(config, rank->shard_, block_size);
  }
  local_blocks = std::min<int64_t>(local_blocks, 1 << 24);  // exact as a float
  const int world = rank->parallel_.world_size();
  float mine = static_cast<float>(local_blocks);
  std::vector<float> all(world);
  STRATA_RETURN_IF_ERROR(rank->groups_->world().AllGather(&mine, 1, all.data()));
  const auto replica_blocks = static_cast<int32_t>(*std::min_element(all.begin(), all.end()));

  model::LoadOptions load = options.model;
  load.kv_num_blocks = replica_blocks;
  load.shard = rank->shard_;
  load.links.tensor_parallel = &rank->groups_->tensor_parallel();
  load.links.previous_stage = rank->groups_->previous_stage();
  load.links.next_stage = rank->groups_->next_stage();
  STRATA_ASSIGN_OR_RETURN(rank->model_, model::Model::Load(load));
  spdlog::info("rank {}: shard loaded: {} of weights ({} bytes), KV cache {} blocks; resident memory {}",
               rank->parallel_.rank(), HumanBytes(rank->model_->weight_bytes()),
               rank->model_->weight_bytes(), replica_blocks, HumanBytes(ResidentMemoryBytes()));

  // Loading may take longer than a collective may wait, so ranks meet in the
  // store (bounded by the bootstrap timeout) rather than in a barrier.
  parallel::TcpStore& store = rank->session_->store();
  STRATA_RETURN_IF_ERROR(store.Set(absl::StrCat("loaded/", rank->parallel_.rank()), "1"));
  std::vector<std::string> keys;
  for (int r = 0; r < world; ++r) keys.push_back(absl::StrCat("loaded/", r));
  if (absl::Status status = store.Wait(keys, bootstrap.bootstrap_timeout); !status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat("waiting for every rank to load its shard: ", status.message()));
  }
  return rank;
}

ReplicaRank::~ReplicaRank() = default;

absl::Status ReplicaRank::RunFollower() {
  parallel::Communicator& world = groups_->world();
  const bool sends_logits = parallel_.pp() > 1 && parallel_.rank() == LogitsRank(parallel_);
  std::vector<float> logits;
  while (true) {
    STRATA_ASSIGN_OR_RETURN(StepPlan plan, ReceivePlan(world));
    if (plan.kind == PlanKind::kShutdown) return absl::OkStatus();
    if (plan.kind == PlanKind::kHeartbeat) continue;
    STRATA_RETURN_IF_ERROR(model_->Forward(plan.batch, logits));
    if (sends_logits && !logits.empty()) {
      STRATA_RETURN_IF_ERROR(world.Send(logits.data(), logits.size() * sizeof(float), kLeader));
    }
  }
}

// The engine's view of the whole replica, on the leader.
class LeaderModel final : public model::Model {
 public:
  LeaderModel(std::unique_ptr<ReplicaRank> rank, ReplicaRank::FailureCallback on_failure)
      : rank_(std::move(rank)), on_failure_(std::move(on_failure)) {
    heartbeat_period_ = std::min(absl::Seconds(1), rank_->collective_timeout_ / 4);
    heartbeat_ = std::thread([this] { HeartbeatLoop(); });
  }

  ~LeaderModel() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      // Followers exit cleanly instead of reporting a lost leader.
      if (broken_.ok()) {
        absl::Status status = BroadcastPlan(rank_->groups_->world(), PlanKind::kShutdown, nullptr);
        if (!status.ok()) spdlog::warn("shutting the replica down: {}", std::string(status.message()));
      }
    }
    wake_.notify_all();
    heartbeat_.join();
  }

  const model::ModelConfig& config() const override { return rank_->model_->config(); }
  int32_t kv_block_size() const override { return rank_->model_->kv_block_size(); }
  int32_t kv_num_blocks() const override { return rank_->model_->kv_num_blocks(); }
  uint64_t weight_bytes() const override { return rank_->model_->weight_bytes(); }
  uint64_t decode_read_bytes() const override { return rank_->model_->decode_read_bytes(); }
  DType weight_dtype() const override { return rank_->model_->weight_dtype(); }

  absl::Status Forward(const model::ForwardBatch& batch, std::vector<float>& logits) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_.ok()) return broken_;
    absl::Status status = ForwardLocked(batch, logits);
    last_plan_ = absl::Now();
    if (!status.ok()) Break(status);
    return status;
  }

 private:
  absl::Status ForwardLocked(const model::ForwardBatch& batch, std::vector<float>& logits) {
    const parallel::ParallelConfig& config = rank_->parallel_;
    STRATA_RETURN_IF_ERROR(BroadcastPlan(rank_->groups_->world(), PlanKind::kForward, &batch));
    STRATA_RETURN_IF_ERROR(rank_->model_->Forward(batch, logits));
    if (config.pp() == 1) return absl::OkStatus();
    const int32_t rows = batch.NumLogitRows();
    logits.resize(static_cast<size_t>(rows) * config_vocab());
    if (rows == 0) return absl::OkStatus();
    return rank_->groups_->world().Recv(logits.data(), logits.size() * sizeof(float),
                                        LogitsRank(config));
  }

  int64_t config_vocab() const { return rank_->model_->config().vocab_size; }

  // REQUIRES: mu_ held.
  void Break(const absl::Status& status) {
    broken_ = absl::UnavailableError(
        absl::StrCat("replica lost: ", status.message(), "; the worker is stopping"));
    spdlog::error("{}", std::string(broken_.message()));
    if (on_failure_) on_failure_(broken_);
  }

  void HeartbeatLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_ && broken_.ok()) {
      wake_.wait_for(lock, absl::ToChronoNanoseconds(heartbeat_period_));
      if (stopping_ || !broken_.ok()) break;
      if (absl::Now() - last_plan_ < heartbeat_period_) continue;
      absl::Status status = BroadcastPlan(rank_->groups_->world(), PlanKind::kHeartbeat, nullptr);
      last_plan_ = absl::Now();
      if (!status.ok()) Break(status);
    }
  }

  std::unique_ptr<ReplicaRank> rank_;
  ReplicaRank::FailureCallback on_failure_;
  absl::Duration heartbeat_period_;

  std::mutex mu_;  // the world group, broken_, last_plan_, stopping_
  std::condition_variable wake_;
  absl::Status broken_;
  absl::Time last_plan_ = absl::Now();
  bool stopping_ = false;
  std::thread heartbeat_;
};

std::unique_ptr<model::Model> ReplicaRank::MakeLeaderModel(std::unique_ptr<ReplicaRank> rank,
                                                           FailureCallback on_failure) {
  return std::make_unique<LeaderModel>(std::move(rank), std::move(on_failure));
}

}  // namespace strata::distributed
