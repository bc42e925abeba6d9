#include "worker/distributed/replica.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/hash.h"
#include "common/metrics_catalogue.h"
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

}  // namespace

absl::Status FailureReportingCommunicator::Report(const char* op, absl::Status status) const {
  if (!status.ok() && on_error_) on_error_(op, status);
  return status;
}

absl::Status FailureReportingCommunicator::AllReduceSum(float* data, size_t n) {
  return Report(metrics::kOpAllReduce, inner_.AllReduceSum(data, n));
}

absl::Status FailureReportingCommunicator::AllGather(const float* in, size_t n, float* out) {
  return Report(metrics::kOpAllGather, inner_.AllGather(in, n, out));
}

absl::Status FailureReportingCommunicator::Broadcast(void* data, size_t bytes, int root) {
  return Report(metrics::kOpBroadcast, inner_.Broadcast(data, bytes, root));
}

absl::Status FailureReportingCommunicator::Send(const void* data, size_t bytes, int peer) {
  return Report(metrics::kOpSend, inner_.Send(data, bytes, peer));
}

absl::Status FailureReportingCommunicator::Recv(void* data, size_t bytes, int peer) {
  return Report(metrics::kOpRecv, inner_.Recv(data, bytes, peer));
}

absl::Status FailureReportingCommunicator::Barrier() {
  return Report(metrics::kOpBarrier, inner_.Barrier());
}

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
  STRATA_ASSIGN_OR_RETURN(rank->shard_,
                          model::ModelShard::ForRank(config, rank->parallel_, bootstrap.pp_layers));
  STRATA_ASSIGN_OR_RETURN(parallel::RankIdentity identity,
                          ModelIdentity(options.model, bootstrap.tp, bootstrap.pp));
  spdlog::info("rank {}: {}; joining the replica at {}", rank->parallel_.rank(),
               rank->shard_.DebugString(), bootstrap.leader_address);
  STRATA_ASSIGN_OR_RETURN(rank->session_, parallel::BootstrapSession::Start(bootstrap, identity));
  STRATA_ASSIGN_OR_RETURN(rank->groups_, parallel::ConnectGlooGroups(*rank->session_));
  const auto wrap = [&rank, &options](parallel::Communicator* inner) -> parallel::Communicator* {
    if (inner == nullptr) return nullptr;
    rank->reporting_.push_back(
        std::make_unique<FailureReportingCommunicator>(*inner, options.on_collective_error));
    return rank->reporting_.back().get();
  };
  rank->world_ = wrap(&rank->groups_->world());
  rank->tensor_parallel_ = wrap(&rank->groups_->tensor_parallel());
  rank->previous_stage_ = wrap(rank->groups_->previous_stage());
  rank->next_stage_ = wrap(rank->groups_->next_stage());
  rank->logits_link_ = wrap(rank->groups_->logits_link());

  // KV cache: block ids are the leader's, shared by every rank, so the
  // replica has as many blocks as its most constrained rank can hold.
  const int32_t block_size = options.model.kv_block_size;
  if (block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block size must be positive, got ", block_size));
  }
  int64_t local_blocks = options.model.kv_num_blocks;
  if (options.kv_cache_memory_bytes > 0) {
    const uint64_t block_bytes = model::KvBytesPerToken(config, rank->shard_) * block_size;
    local_blocks =
        static_cast<int64_t>(options.kv_cache_memory_bytes / std::max<uint64_t>(1, block_bytes));
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
  STRATA_RETURN_IF_ERROR(rank->world_->AllGather(&mine, 1, all.data()));
  const auto replica_blocks = static_cast<int32_t>(*std::min_element(all.begin(), all.end()));

  model::LoadOptions load = options.model;
  load.kv_num_blocks = replica_blocks;
  load.shard = rank->shard_;
  load.links.tensor_parallel = rank->tensor_parallel_;
  load.links.previous_stage = rank->previous_stage_;
  load.links.next_stage = rank->next_stage_;
  STRATA_ASSIGN_OR_RETURN(rank->model_, model::Model::Load(load));
  spdlog::info(
      "rank {}: shard loaded: {} of weights ({} bytes), KV cache {} blocks; resident memory {}",
      rank->parallel_.rank(), HumanBytes(rank->model_->weight_bytes()),
      rank->model_->weight_bytes(), replica_blocks, HumanBytes(ResidentMemoryBytes()));

  // Loading may take longer than a collective may wait, so ranks meet in the
  // store (bounded by the bootstrap timeout) rather than in a barrier.
  parallel::TcpStore& store = rank->session_->store();
  STRATA_RETURN_IF_ERROR(store.Set(absl::StrCat("loaded/", rank->parallel_.rank()), "1"));
  std::vector<std::string> keys;
  for (int r = 0; r < world; ++r) keys.push_back(absl::StrCat("loaded/", r));
  if (absl::Status status = store.Wait(keys, bootstrap.bootstrap_timeout); !status.ok()) {
    return absl::Status(status.code(), absl::StrCat("waiting for every rank to load its shard: ",
                                                    status.message()));
  }
  return rank;
}

ReplicaRank::~ReplicaRank() {
  if (plan_receiver_.joinable()) plan_receiver_.join();
}

namespace {

// Plans received on the world group, handed from the receiving thread to the
// stepping thread. An error (the world group broke) ends the stream.
class PlanQueue {
 public:
  void Push(absl::StatusOr<StepPlan> plan) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      plans_.push_back(std::move(plan));
    }
    ready_.notify_one();
  }
  absl::StatusOr<StepPlan> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [this] { return !plans_.empty(); });
    absl::StatusOr<StepPlan> plan = std::move(plans_.front());
    plans_.pop_front();
    return plan;
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<absl::StatusOr<StepPlan>> plans_;
};

}  // namespace

absl::Status ReplicaRank::RunFollower() {
  // Plans are received on their own thread, so the leader's broadcast of the
  // next micro-batch never waits for this rank to finish the current one
  // (that would serialise the pipeline stages).
  auto queue = std::make_shared<PlanQueue>();
  parallel::Communicator* world = world_;
  plan_receiver_ = std::thread([queue, world] {
    while (true) {
      absl::StatusOr<StepPlan> plan = ReceivePlan(*world);
      if (plan.ok() && plan->kind == PlanKind::kHeartbeat) continue;
      const bool last = !plan.ok() || plan->kind == PlanKind::kShutdown;
      queue->Push(std::move(plan));
      if (last) return;
    }
  });
  parallel::Communicator* logits_link = logits_link_;
  std::vector<float> logits;
  while (true) {
    absl::StatusOr<StepPlan> plan = queue->Pop();
    if (!plan.ok()) return plan.status();
    if (plan->kind == PlanKind::kShutdown) {
      plan_receiver_.join();
      return absl::OkStatus();
    }
    STRATA_RETURN_IF_ERROR(model_->Forward(plan->batch, logits));
    if (logits_link != nullptr && !logits.empty()) {
      STRATA_RETURN_IF_ERROR(logits_link->Send(logits.data(), logits.size() * sizeof(float),
                                               parallel::CommunicatorGroups::kLowerStage));
    }
  }
}

// The engine's view of the whole replica, on the leader. With pp > 1 it takes
// up to pp batches in flight: StartForward broadcasts the plan and runs the
// leader's own stage (which hands its activations on); a receiver thread
// keeps a receive posted on the logits link for every batch in flight, so
// that the last stage can always deliver and the stages never wait on each
// other in a cycle.
class LeaderModel final : public model::Model {
 public:
  LeaderModel(std::unique_ptr<ReplicaRank> rank, ReplicaRank::FailureCallback on_failure)
      : rank_(std::move(rank)), on_failure_(std::move(on_failure)) {
    heartbeat_period_ = std::min(absl::Seconds(1), rank_->collective_timeout_ / 4);
    heartbeat_ = std::thread([this] { HeartbeatLoop(); });
    if (rank_->parallel_.pp() > 1) receiver_ = std::thread([this] { ReceiveLoop(); });
  }

  ~LeaderModel() override {
    {
      std::lock_guard<std::mutex> lock(state_mu_);
      stopping_ = true;
    }
    changed_.notify_all();
    heartbeat_.join();
    if (receiver_.joinable()) receiver_.join();
    // Followers exit cleanly instead of reporting a lost leader.
    std::lock_guard<std::mutex> world_lock(world_mu_);
    if (!Broken().ok()) return;
    // A send to a rank that is already gone would wait out the collective
    // timeout (Gloo does not fail it when the connection closes), so the
    // shutdown goes out only while every rank is still there; the others
    // see the leader's store close instead.
    absl::StatusOr<std::vector<int>> lost = rank_->session_->store().LostRanks();
    if (lost.ok() && !lost->empty()) {
      spdlog::info("shutting the replica down: rank(s) {} already gone; not broadcasting",
                   absl::StrJoin(*lost, ","));
      return;
    }
    absl::Status status = BroadcastPlan(*rank_->world_, PlanKind::kShutdown, nullptr);
    if (!status.ok()) spdlog::warn("shutting the replica down: {}", std::string(status.message()));
  }

  const model::ModelConfig& config() const override { return rank_->model_->config(); }
  int32_t kv_block_size() const override { return rank_->model_->kv_block_size(); }
  int32_t kv_num_blocks() const override { return rank_->model_->kv_num_blocks(); }
  uint64_t weight_bytes() const override { return rank_->model_->weight_bytes(); }
  uint64_t decode_read_bytes() const override { return rank_->model_->decode_read_bytes(); }
  DType weight_dtype() const override { return rank_->model_->weight_dtype(); }
  int32_t max_batches_in_flight() const override { return rank_->parallel_.pp(); }
  model::ForwardTimings timings() const override { return rank_->model_->timings(); }

  absl::Status Forward(const model::ForwardBatch& batch, std::vector<float>& logits) override {
    if (rank_->parallel_.pp() > 1) {
      STRATA_RETURN_IF_ERROR(StartForward(batch));
      return FinishForward(logits);
    }
    std::lock_guard<std::mutex> lock(world_mu_);
    STRATA_RETURN_IF_ERROR(Broken());
    absl::Status status = BroadcastPlan(*rank_->world_, PlanKind::kForward, &batch);
    if (status.ok()) status = rank_->model_->Forward(batch, logits);
    last_plan_ = absl::Now();
    if (!status.ok()) Break(status);
    return status;
  }

  absl::Status StartForward(const model::ForwardBatch& batch) override {
    std::lock_guard<std::mutex> lock(world_mu_);
    STRATA_RETURN_IF_ERROR(Broken());
    std::vector<float> no_logits;  // the first stage hands activations on
    absl::Status status = BroadcastPlan(*rank_->world_, PlanKind::kForward, &batch);
    if (status.ok()) status = rank_->model_->Forward(batch, no_logits);
    last_plan_ = absl::Now();
    if (!status.ok()) {
      Break(status);
      return status;
    }
    {
      std::lock_guard<std::mutex> state(state_mu_);
      expected_rows_.push_back(batch.NumLogitRows());
    }
    changed_.notify_all();
    return absl::OkStatus();
  }

  absl::Status FinishForward(std::vector<float>& logits) override {
    std::unique_lock<std::mutex> lock(state_mu_);
    changed_.wait(lock, [this] { return !results_.empty() || !broken_.ok(); });
    if (results_.empty()) return broken_;
    logits.swap(results_.front());
    results_.pop_front();
    return absl::OkStatus();
  }

 private:
  absl::Status Broken() {
    std::lock_guard<std::mutex> lock(state_mu_);
    return broken_;
  }

  // Marks the replica lost (once) and tells the worker.
  void Break(const absl::Status& status) {
    {
      std::lock_guard<std::mutex> lock(state_mu_);
      if (!broken_.ok()) return;
      broken_ = absl::UnavailableError(
          absl::StrCat("replica lost: ", status.message(), "; the worker is stopping"));
      spdlog::error("{}", std::string(broken_.message()));
    }
    changed_.notify_all();
    if (on_failure_) on_failure_(broken_);
  }

  // Receives the logits of each batch in flight, in launch order.
  void ReceiveLoop() {
    const int64_t vocab = rank_->model_->config().vocab_size;
    parallel::Communicator& link = *rank_->logits_link_;
    while (true) {
      int32_t rows = 0;
      {
        std::unique_lock<std::mutex> lock(state_mu_);
        changed_.wait(lock,
                      [this] { return !expected_rows_.empty() || stopping_ || !broken_.ok(); });
        if (expected_rows_.empty()) return;
        rows = expected_rows_.front();
        expected_rows_.pop_front();
      }
      std::vector<float> logits(static_cast<size_t>(rows) * vocab);
      absl::Status status = absl::OkStatus();
      if (rows > 0) {
        status = link.Recv(logits.data(), logits.size() * sizeof(float),
                           parallel::CommunicatorGroups::kHigherStage);
      }
      if (!status.ok()) {
        Break(status);
        return;
      }
      {
        std::lock_guard<std::mutex> lock(state_mu_);
        results_.push_back(std::move(logits));
      }
      changed_.notify_all();
    }
  }

  void HeartbeatLoop() {
    while (true) {
      {
        std::unique_lock<std::mutex> lock(state_mu_);
        changed_.wait_for(lock, absl::ToChronoNanoseconds(heartbeat_period_),
                          [this] { return stopping_ || !broken_.ok(); });
        if (stopping_ || !broken_.ok()) return;
      }
      // The store knows at once when a rank's process dies (its presence
      // connection closes without a goodbye). Gloo does not fail a send to
      // a peer whose connection closed: a step or heartbeat would wait out
      // the collective timeout to find out, so ask the store first, without
      // waiting for the step in progress.
      absl::StatusOr<std::vector<int>> lost = rank_->session_->store().LostRanks();
      if (lost.ok() && !lost->empty()) {
        Break(absl::UnavailableError(
            absl::StrCat("rank ", absl::StrJoin(*lost, ","), " lost (its process exited)")));
        return;
      }
      std::lock_guard<std::mutex> world_lock(world_mu_);
      if (absl::Now() - last_plan_ < heartbeat_period_) continue;
      absl::Status status = BroadcastPlan(*rank_->world_, PlanKind::kHeartbeat, nullptr);
      last_plan_ = absl::Now();
      if (!status.ok()) {
        Break(status);
        return;
      }
    }
  }

  std::unique_ptr<ReplicaRank> rank_;
  ReplicaRank::FailureCallback on_failure_;
  absl::Duration heartbeat_period_;

  // Held while using the world group and running the leader's own shard.
  std::mutex world_mu_;
  absl::Time last_plan_ = absl::Now();  // guarded by world_mu_

  std::mutex state_mu_;  // guards what follows
  std::condition_variable changed_;
  absl::Status broken_;
  bool stopping_ = false;
  std::deque<int32_t> expected_rows_;       // batches whose logits are due
  std::deque<std::vector<float>> results_;  // their logits, in order (failures break the replica)

  std::thread heartbeat_;
  std::thread receiver_;
};

std::unique_ptr<model::Model> ReplicaRank::MakeLeaderModel(std::unique_ptr<ReplicaRank> rank,
                                                           FailureCallback on_failure) {
  return std::make_unique<LeaderModel>(std::move(rank), std::move(on_failure));
}

}  // namespace strata::distributed
