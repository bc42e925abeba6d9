// strata-worker: serves one model over strata.v1.Inference, alone or as one
// rank of a replica sharded over tp × pp processes (--tp/--pp/--rank/
// --leader-address, or a LeaderWorkerSet environment).
//
// Start-up order: the gRPC server listens first (health NOT_SERVING, Inference
// calls answer UNAVAILABLE "model is still loading"), then the model loads on
// a thread (for a replica: bootstrap with the other ranks, then this rank's
// shard), then health turns SERVING and --ready-file is written. A model
// that cannot load ends the process with one line on stderr and exit code 1.
// The leader (rank 0) serves Inference; other ranks serve only health and
// metrics, and run the leader's step plans.
// SIGINT/SIGTERM, or a leader asked to drain (strata.v1.Replica/Drain, from a
// router's DrainBackend or `strata drain --worker`): health NOT_SERVING, calls
// in flight get --drain-timeout (alias --drain-seconds) to finish, then the
// engine stops (a leader tells its followers to exit) and the process exits 0.
// A follower that gets the signal keeps running the leader's steps until the
// leader shuts the replica down (at most its own --drain-timeout plus the
// teardown bound), so a group stopped all at once still finishes its streams.
// A replica that loses a rank: the leader turns NOT_SERVING at once, fails the
// calls in flight with UNAVAILABLE and exits 1; followers exit 1; every
// message names the lost rank where known.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/logging.h"
#include "common/process_memory.h"
#include "common/server_process.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "nlohmann/json.hpp"
#include "parallel/bootstrap.h"
#include "parallel/bootstrap_flags.h"
#include "prometheus/exposer.h"
#include "spdlog/spdlog.h"
#include "worker/distributed/replica.h"
#include "worker/engine/engine_factory.h"
#include "worker/service/inference_service.h"
#include "worker/service/replica_service.h"
#include "worker/service/worker_metrics.h"

namespace {

constexpr char kProgram[] = "strata-worker";

[[noreturn]] void ExitNow(int code) { strata::ExitServerProcess(code); }

int Fail(const std::string& message) { return strata::PrintStartupError(kProgram, message); }

bool WriteReadyFile(const std::string& path, const nlohmann::json& contents) {
  return strata::WriteFileAtomically(path, contents.dump() + "\n");
}

// The model folder's name: "models/stories260k/" -> "stories260k".
std::string ModelName(const std::string& model_dir) {
  std::filesystem::path path(model_dir);
  if (!path.has_filename()) path = path.parent_path();
  return path.filename().string();
}

// SIGINT/SIGTERM become a byte in a pipe that the main thread polls. A
// handler, rather than sigwait on blocked signals, works whichever thread the
// kernel delivers to, including threads libraries start before main (OpenBLAS).
int termination_pipe[2] = {-1, -1};

extern "C" void OnTerminationSignal(int signal_number) {
  const unsigned char byte = static_cast<unsigned char>(signal_number);
  [[maybe_unused]] const ssize_t written = write(termination_pipe[1], &byte, 1);
}

bool InstallTerminationHandlers() {
  if (pipe2(termination_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return false;
  struct sigaction action {};
  action.sa_handler = OnTerminationSignal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  return sigaction(SIGINT, &action, nullptr) == 0 && sigaction(SIGTERM, &action, nullptr) == 0;
}

// Events other threads post through the same pipe (signal numbers are < 64).
constexpr unsigned char kReplicaFailed = 200;   // a collective failed: the replica is lost
constexpr unsigned char kLeaderShutDown = 201;  // follower: the leader stopped the replica
constexpr unsigned char kDrainRequested = 202;  // leader: Replica/Drain asked it to drain

// After the drain, the most that stopping the engine and telling the other
// ranks may take before the process exits anyway.
constexpr std::chrono::seconds kTeardownTimeout{10};

// Bounds what follows the drain: past kTeardownTimeout, exit 0 anyway.
void StartTeardownWatchdog() {
  std::thread([] {
    std::this_thread::sleep_for(kTeardownTimeout);
    spdlog::warn("{}: teardown did not finish within {} s; exiting", kProgram,
                 std::chrono::duration_cast<std::chrono::seconds>(kTeardownTimeout).count());
    ExitNow(0);
  }).detach();
}

void PostEvent(unsigned char event) {
  [[maybe_unused]] const ssize_t written = write(termination_pipe[1], &event, 1);
}

// Waits up to `timeout` (forever if negative) for SIGINT/SIGTERM or a posted
// event; returns the signal number or event, or 0 if none came.
int WaitForTerminationSignal(std::chrono::milliseconds timeout) {
  pollfd readable{termination_pipe[0], POLLIN, 0};
  const int ready = poll(&readable, 1, static_cast<int>(timeout.count()));
  unsigned char byte = 0;
  if (ready > 0 && read(termination_pipe[0], &byte, 1) == 1) return byte;
  return 0;  // timeout, or EINTR (the byte is read on the next call)
}

}  // namespace

int main(int argc, char** argv) {
  strata::TuneProcessForServing();
  if (!InstallTerminationHandlers()) return Fail("cannot install SIGINT/SIGTERM handlers");

  CLI::App app{"strata-worker: serves a model over strata.v1.Inference (gRPC)."};
  strata::engine::EngineOptions options;
  std::string listen_address = "127.0.0.1:50051";
  std::string metrics_address = "127.0.0.1:9400";
  std::string weight_dtype_name;
  std::string log_format = "text";
  std::string log_level = "info";
  std::string ready_file;
  bool no_prefix_cache = false;
  bool no_chunked_prefill = false;
  double drain_seconds = 5;
  app.add_option("--model", options.model.model_dir,
                 "Hugging Face model folder (config.json, safetensors, tokenizer.json)")
      ->envname("STRATA_MODEL")
      ->required();
  app.add_option("--tokenizer", options.tokenizer_path,
                 "tokenizer.json or its folder (default: the model folder)");
  app.add_option("--listen", listen_address, "gRPC address HOST:PORT (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--metrics-listen", metrics_address,
                 "Prometheus /metrics address HOST:PORT (port 0: any free port; empty: off)")
      ->capture_default_str();
  app.add_flag("--random-weights", options.model.random_weights,
               "Build the model from config.json with seeded random weights (no safetensors)");
  app.add_option("--random-seed", options.model.random_seed, "Seed for --random-weights")
      ->capture_default_str();
  app.add_option("--weight-dtype", weight_dtype_name,
                 "Keep weights as F32, F16 or BF16 (default: as stored; BF16 for random weights)");
  options.model.device = "auto";
  app.add_option("--device", options.model.device,
                 "cpu, cuda, or auto (cuda when this build has it and a GPU is visible)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  app.add_option("--cuda-device", options.model.cuda_device, "CUDA device ordinal")
      ->capture_default_str();
  app.add_flag_function(
      "--no-cuda-graphs", [&](int64_t) { options.model.cuda_graphs = false; },
      "Launch CUDA ops one by one instead of replaying decode steps as CUDA graphs");
  app.add_option("--threads", options.model.num_threads, "CPU threads for kernels (0: all cores)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--kv-blocks", options.model.kv_num_blocks,
                 "KV cache blocks (0: enough for 4 full contexts)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--block-size", options.model.kv_block_size, "Tokens per KV cache block")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  std::string kv_cache_memory;
  app.add_option("--kv-cache-memory", kv_cache_memory,
                 "KV cache size, e.g. 2GiB or 512MiB (instead of --kv-blocks)");
  app.add_flag("--no-prefix-cache", no_prefix_cache,
               "Do not reuse KV blocks of cached prompt prefixes");
  app.add_flag("--no-chunked-prefill", no_chunked_prefill,
               "Prefill each prompt in one step instead of chunks under the token budget");
  app.add_option("--max-num-seqs", options.scheduler.max_running_sequences,
                 "Most requests in the running batch")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-num-batched-tokens", options.scheduler.max_batched_tokens,
                 "Most tokens per engine step (decode tokens plus prefill chunks)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--log-format", log_format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  app.add_option("--ready-file", ready_file,
                 "Write {\"listen\", \"metrics\", \"pid\"} as JSON here once SERVING");
  app.add_option("--drain-timeout,--drain-seconds", drain_seconds,
                 "On SIGINT/SIGTERM or a drain request, let calls in flight finish for this "
                 "many seconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  strata::parallel::BootstrapFlags bootstrap_flags;
  strata::parallel::AddBootstrapFlags(app, &bootstrap_flags);
  CLI11_PARSE(app, argc, argv);
  options.scheduler.enable_prefix_caching = !no_prefix_cache;
  options.scheduler.chunked_prefill = !no_chunked_prefill;

  if (absl::Status status = strata::InitLogging(log_format, log_level); !status.ok()) {
    return Fail(std::string(status.message()));
  }
  if (!kv_cache_memory.empty()) {
    if (options.model.kv_num_blocks != 0) {
      return Fail("--kv-cache-memory and --kv-blocks both size the KV cache; give one");
    }
    absl::StatusOr<uint64_t> bytes = strata::engine::ParseByteSize(kv_cache_memory);
    if (!bytes.ok()) return Fail(absl::StrCat("--kv-cache-memory: ", bytes.status().message()));
    options.kv_cache_memory_bytes = *bytes;
  }
  if (!weight_dtype_name.empty()) {
    absl::StatusOr<strata::DType> dtype = strata::ParseDType(weight_dtype_name);
    if (!dtype.ok()) return Fail(absl::StrCat("--weight-dtype: ", dtype.status().message()));
    options.model.weight_dtype = *dtype;
  }
  absl::StatusOr<strata::parallel::BootstrapConfig> bootstrap =
      strata::parallel::ResolveBootstrapConfig(bootstrap_flags,
                                               strata::parallel::LeaderWorkerSetEnvironment());
  if (!bootstrap.ok()) return Fail(std::string(bootstrap.status().message()));
  const bool sharded = bootstrap->world_size > 1;
  const int rank = bootstrap->rank;
  const bool leader = rank == 0;
  if (sharded) {
    // The ranks of a replica talk over Gloo, which moves host memory: a
    // sharded replica runs on the CPU backend until NCCL is wired in here.
    if (options.model.device == "cuda") {
      return Fail(
          "--device cuda with tp * pp > 1: sharded replicas run on the CPU backend (Gloo) "
          "in this version; use --device cpu, or tp = pp = 1 on a GPU");
    }
    options.model.device = "cpu";
  }

  strata::service::WorkerMetrics metrics;
  // Every rank exports its collective errors, 0 while healthy.
  metrics.ExportCollectiveErrors(rank);
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string bound_metrics_address = "off";
  if (!metrics_address.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(metrics_address);
    } catch (const std::exception& error) {
      return Fail(absl::StrCat("--metrics-listen ", metrics_address, ": ", error.what()));
    }
    exposer->RegisterCollectable(metrics.registry());
    exposer->RegisterCollectable(metrics.engine_collector());
    exposer->RegisterCollectable(metrics.rank_step_collector());
    bound_metrics_address =
        strata::BoundAddress(metrics_address, exposer->GetListeningPorts().at(0));
  }

  strata::service::InferenceService service(&metrics);
  // Load reports for routers (strata.v1.Replica), on the leader.
  strata::service::ReplicaService::Options replica_options;
  replica_options.block_size = options.model.kv_block_size;
  strata::service::ReplicaService replica_service(replica_options);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen_address, grpc::InsecureServerCredentials(), &port);
  // Followers answer health checks only; the leader is the replica's endpoint.
  if (leader) {
    builder.RegisterService(&service);
    builder.RegisterService(&replica_service);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    ExitNow(Fail(absl::StrCat("--listen ", listen_address, ": cannot listen there")));
  }
  const std::string bound_address = strata::BoundAddress(listen_address, port);
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  // "" is the server as a whole; probes may ask for either name.
  const auto set_serving = [health, leader](bool serving) {
    health->SetServingStatus("", serving);
    if (leader) {
      health->SetServingStatus(std::string(strata::v1::Inference::service_full_name()), serving);
    }
  };
  set_serving(false);
  // A drain request takes the SIGTERM path below: NOT_SERVING before Drain
  // answers (routers stop sending calls here at once), then the main thread
  // drains and exits.
  std::atomic<bool> draining = false;
  replica_service.SetDrainHandler([&](const strata::service::DrainRequestInfo& request) {
    strata::service::DrainOutcome outcome;
    outcome.generate_calls_in_flight = service.GenerateCallsInFlight();
    outcome.drain_timeout_seconds = drain_seconds;
    outcome.already_draining = draining.exchange(true);
    const std::string who = request.requested_by.empty()
                                ? request.peer
                                : absl::StrCat(request.requested_by, " (", request.peer, ")");
    if (outcome.already_draining) {
      spdlog::info("{}: drain requested again by {}: already draining", kProgram, who);
      return outcome;
    }
    spdlog::warn("{}: drain requested by {}: {}; {} calls in flight", kProgram, who,
                 request.reason.empty() ? "no reason given" : request.reason,
                 outcome.generate_calls_in_flight);
    set_serving(false);
    PostEvent(kDrainRequested);
    return outcome;
  });
  std::printf(
      "%s: listening on %s metrics %s, loading %s%s\n", kProgram, bound_address.c_str(),
      bound_metrics_address.c_str(), options.model.model_dir.c_str(),
      sharded ? absl::StrCat(" as rank ", rank, " of ", bootstrap->world_size).c_str() : "");
  std::fflush(stdout);

  // The model loads on its own thread so that a termination signal during a
  // long load (or a long wait for the other ranks) is answered at once.
  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<strata::engine::Engine>> loaded;
  std::unique_ptr<strata::distributed::ReplicaRank> follower;  // ranks > 0
  const strata::model::Model* rank_model = nullptr;            // this rank's shard, for its metrics
  uint64_t shard_weight_bytes = 0;
  int32_t shard_kv_blocks = 0;
  uint64_t shard_kv_bytes_per_token = 0;
  std::atomic<bool> load_done = false;
  std::thread loader([&] {
    if (!sharded) {
      absl::StatusOr<std::unique_ptr<strata::tokenizer::Tokenizer>> tokenizer =
          strata::tokenizer::Tokenizer::Load(
              options.tokenizer_path.empty() ? options.model.model_dir : options.tokenizer_path);
      absl::StatusOr<std::unique_ptr<strata::model::Model>> model =
          tokenizer.ok() ? strata::engine::LoadModel(options) : tokenizer.status();
      if (!model.ok()) {
        loaded = model.status();
      } else {
        rank_model = model->get();  // owned by the engine from here on
        loaded = strata::engine::CreateEngine(options, *std::move(model), *std::move(tokenizer));
      }
    } else {
      strata::distributed::ReplicaOptions replica;
      replica.bootstrap = *bootstrap;
      replica.model = options.model;
      replica.kv_cache_memory_bytes = options.kv_cache_memory_bytes;
      // The process exits soon after a failure; the count is right while it lives.
      replica.on_collective_error = [&metrics, rank](std::string_view op, const absl::Status&) {
        metrics.RecordCollectiveError(rank, op);
      };
      absl::StatusOr<std::unique_ptr<strata::distributed::ReplicaRank>> started =
          strata::distributed::ReplicaRank::Start(replica);
      if (!started.ok()) {
        loaded = started.status();
      } else {
        strata::distributed::ReplicaRank& shard = **started;
        rank_model = &shard.shard_model();  // lives as long as the rank or the leader model
        shard_weight_bytes = shard.shard_model().weight_bytes();
        shard_kv_blocks = shard.shard_model().kv_num_blocks();
        shard_kv_bytes_per_token =
            strata::model::KvBytesPerToken(shard.shard_model().config(), shard.shard());
        if (!leader) {
          follower = *std::move(started);
        } else {
          absl::StatusOr<std::unique_ptr<strata::tokenizer::Tokenizer>> tokenizer =
              strata::tokenizer::Tokenizer::Load(options.tokenizer_path.empty()
                                                     ? options.model.model_dir
                                                     : options.tokenizer_path);
          if (!tokenizer.ok()) {
            loaded = tokenizer.status();
          } else {
            // A lost rank: NOT_SERVING at once (routers stop sending here), then
            // the main thread fails what is in flight and exits.
            auto model = strata::distributed::ReplicaRank::MakeLeaderModel(
                *std::move(started), [set_serving](const absl::Status&) {
                  set_serving(false);
                  PostEvent(kReplicaFailed);
                });
            loaded = strata::engine::CreateEngine(options, std::move(model), *std::move(tokenizer));
          }
        }
      }
    }
    load_done.store(true);
  });
  while (!load_done.load()) {
    if (const int event = WaitForTerminationSignal(std::chrono::milliseconds(50)); event != 0) {
      spdlog::info("{}: {} while loading the model; exiting", kProgram,
                   event == kDrainRequested ? "drain request" : "signal");
      replica_service.Stop();  // a Drain call's answer goes out first
      server->Shutdown(std::chrono::system_clock::now());
      // The loader cannot be interrupted; leave without joining it.
      ExitNow(0);
    }
  }
  loader.join();
  if (!loaded.ok() && follower == nullptr) {
    server->Shutdown(std::chrono::system_clock::now());
    ExitNow(Fail(sharded ? absl::StrCat("rank ", rank, ": ", loaded.status().message())
                         : std::string(loaded.status().message())));
  }
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  const nlohmann::json ready = {{"listen", bound_address},
                                {"metrics", bound_metrics_address},
                                {"pid", static_cast<int>(getpid())},
                                {"rank", rank}};

  metrics.SetRankModel(rank_model, rank);
  if (follower != nullptr) {
    metrics.SetRankMemory(rank, shard_weight_bytes,
                          shard_kv_bytes_per_token * options.model.kv_block_size * shard_kv_blocks);
    set_serving(true);
    spdlog::info("{}: rank {} ready in {:.2f} s ({} of weights); resident memory {}", kProgram,
                 rank, load_seconds, strata::HumanBytes(shard_weight_bytes),
                 strata::HumanBytes(strata::ResidentMemoryBytes()));
    if (!ready_file.empty() && !WriteReadyFile(ready_file, ready)) {
      spdlog::error("cannot write --ready-file {}", ready_file);
    }
    absl::Status follower_status;
    std::thread steps([&] {
      follower_status = follower->RunFollower();
      PostEvent(follower_status.ok() ? kLeaderShutDown : kReplicaFailed);
    });
    int event = 0;
    while (event == 0) event = WaitForTerminationSignal(std::chrono::milliseconds(-1));
    if (event != kReplicaFailed && event != kLeaderShutDown) {
      // The leader's calls in flight need every rank until they finish, and
      // when the whole group is stopped at once the leader drains first: keep
      // stepping until it shuts the replica down, for at most its drain
      // timeout plus its teardown. A second signal stops at once.
      const auto signalled_at = std::chrono::steady_clock::now();
      const auto wait_limit =
          std::chrono::milliseconds(static_cast<int64_t>(drain_seconds * 1000.0)) +
          kTeardownTimeout;
      spdlog::info(
          "{}: rank {}: signal {}; serving until the leader shuts the replica down "
          "(at most {} s)",
          kProgram, rank, event,
          std::chrono::duration_cast<std::chrono::seconds>(wait_limit).count());
      int next = 0;
      while (next == 0) {
        const auto waited = std::chrono::steady_clock::now() - signalled_at;
        if (waited >= wait_limit) break;
        next = WaitForTerminationSignal(
            std::chrono::duration_cast<std::chrono::milliseconds>(wait_limit - waited) +
            std::chrono::milliseconds(1));
      }
      if (next == 0) {
        spdlog::warn("{}: rank {}: the leader did not shut the replica down within {} s; exiting",
                     kProgram, rank,
                     std::chrono::duration_cast<std::chrono::seconds>(wait_limit).count());
      } else if (next != kReplicaFailed && next != kLeaderShutDown) {
        spdlog::info("{}: rank {}: second signal {}; exiting now", kProgram, rank, next);
      } else {
        event = next;
      }
    }
    health->Shutdown();
    server->Shutdown(std::chrono::system_clock::now());
    if (event == kReplicaFailed) {
      ExitNow(Fail(absl::StrCat("rank ", rank, ": replica lost: ", follower_status.message())));
    }
    if (event == kLeaderShutDown) {
      steps.join();
      spdlog::info("{}: rank {}: the leader shut the replica down; exiting", kProgram, rank);
      // Closing the session says goodbye to the leader's store, so the
      // leader does not report this rank lost.
      StartTeardownWatchdog();
      follower.reset();
    }
    // Otherwise the step thread may be inside a collective: leave without joining it.
    ExitNow(0);
  }

  std::unique_ptr<strata::engine::Engine> engine = *std::move(loaded);
  const strata::model::ModelConfig& config = engine->model_config();
  strata::service::ModelDescription description;
  description.model_name = ModelName(options.model.model_dir);
  description.weight_dtype = std::string(strata::DTypeName(options.model.weight_dtype.value_or(
      options.model.random_weights ? strata::DType::kBF16 : config.torch_dtype)));
  description.parameter_count = config.ParameterCount();
  description.tensor_parallel_size = bootstrap->tp;
  description.pipeline_parallel_size = bootstrap->pp;
  service.AttachEngine(engine.get(), description);
  replica_service.AttachEngine(engine.get());
  metrics.SetEngine(engine.get(), options.model.kv_block_size, bootstrap->world_size);
  if (sharded) {
    metrics.SetRankMemory(rank, shard_weight_bytes,
                          shard_kv_bytes_per_token * options.model.kv_block_size * shard_kv_blocks);
  } else {
    // One rank holds the whole model: its weights as kept in memory and the KV cache pool.
    const strata::DType weight_dtype = options.model.weight_dtype.value_or(
        options.model.random_weights ? strata::DType::kBF16 : config.torch_dtype);
    const uint64_t weight_bytes =
        static_cast<uint64_t>(description.parameter_count) * strata::DTypeSize(weight_dtype);
    const uint64_t kv_cache_bytes = strata::engine::KvBytesPerToken(config) *
                                    static_cast<uint64_t>(options.model.kv_block_size) *
                                    static_cast<uint64_t>(engine->Stats().kv_blocks_total);
    metrics.SetRankMemory(/*rank=*/0, weight_bytes, kv_cache_bytes);
  }
  set_serving(true);
  spdlog::info("{}: {} ({}, {} parameters, {}{}) loaded in {:.2f} s; resident memory {}", kProgram,
               description.model_name, config.architecture, description.parameter_count,
               description.weight_dtype,
               sharded ? absl::StrCat(", tp ", bootstrap->tp, " pp ", bootstrap->pp) : "",
               load_seconds, strata::HumanBytes(strata::ResidentMemoryBytes()));
  std::printf("%s: serving on %s metrics %s\n", kProgram, bound_address.c_str(),
              bound_metrics_address.c_str());
  std::fflush(stdout);
  if (!ready_file.empty() && !WriteReadyFile(ready_file, ready)) {
    spdlog::error("cannot write --ready-file {}", ready_file);
  }

  int event = 0;
  while (event == 0) event = WaitForTerminationSignal(std::chrono::milliseconds(-1));
  if (event == kReplicaFailed) {
    // Health is already NOT_SERVING. Calls in flight fail with UNAVAILABLE as
    // the engine's steps fail; give them a moment to reach their clients.
    health->Shutdown();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (service.GenerateCallsInFlight() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    replica_service.Stop();
    server->Shutdown(std::chrono::system_clock::now());
    ExitNow(Fail("the replica lost a rank (see the error above); exiting so that it is restarted"));
  }
  draining.store(true);  // a Drain request from here on says so
  if (event == kDrainRequested) {
    spdlog::info("{}: draining on request: {} calls in flight", kProgram,
                 service.GenerateCallsInFlight());
  } else {
    spdlog::info("{}: shutting down on signal {}", kProgram, event);
  }
  health->Shutdown();  // every service NOT_SERVING from here on
  // Generate calls in flight get --drain-timeout to finish; then whatever is
  // left (long-lived health watches included) is cancelled.
  const auto drain_deadline =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(drain_seconds * 1000.0));
  while (service.GenerateCallsInFlight() > 0 && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Tearing the replica down talks to the other ranks; one that hangs must
  // not keep the process past its grace period (the kubelet's SIGKILL would
  // turn a clean stop into a failure).
  StartTeardownWatchdog();
  replica_service.Stop();
  server->Shutdown(std::chrono::system_clock::now());
  // Calls are done; stop the engine before anything it calls back into goes.
  engine->Shutdown();
  metrics.SetEngine(nullptr);
  metrics.SetRankModel(nullptr, rank);
  // A leader's model tells the followers to exit as it is destroyed.
  engine.reset();
  ExitNow(0);
}
