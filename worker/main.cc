// strata-worker: serves one model over strata.v1.Inference.
//
// Start-up order: the gRPC server listens first (health NOT_SERVING, Inference
// calls answer UNAVAILABLE "model is still loading"), then the model loads on
// a thread, then health turns SERVING and --ready-file is written. A model
// that cannot load ends the process with one line on stderr and exit code 1.
// SIGINT/SIGTERM: health NOT_SERVING, calls in flight get --drain-seconds to
// finish, then the engine stops and the process exits 0.
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
#include "prometheus/exposer.h"
#include "spdlog/spdlog.h"
#include "worker/engine/engine_factory.h"
#include "worker/service/inference_service.h"
#include "worker/service/worker_metrics.h"

namespace {

constexpr char kProgram[] = "strata-worker";

// Leaves the process once gRPC and the engine are shut down. The metrics
// exposer's web server takes up to 2 s to stop (civetweb polls with a 2 s
// quantum) and holds nothing that needs an orderly close, so it is not waited for.
[[noreturn]] void ExitNow(int code) {
  spdlog::shutdown();
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", kProgram, message.c_str());
  std::fflush(stderr);
  return 1;
}

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

// Waits up to `timeout` (forever if negative) for SIGINT/SIGTERM; returns the
// signal number, or 0 if none came.
int WaitForTerminationSignal(std::chrono::milliseconds timeout) {
  pollfd readable{termination_pipe[0], POLLIN, 0};
  const int ready = poll(&readable, 1, static_cast<int>(timeout.count()));
  unsigned char byte = 0;
  if (ready > 0 && read(termination_pipe[0], &byte, 1) == 1) return byte;
  return 0;  // timeout, or EINTR (the byte is read on the next call)
}

}  // namespace

int main(int argc, char** argv) {
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
  int drain_seconds = 5;
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
  app.add_option("--drain-seconds", drain_seconds,
                 "On SIGINT/SIGTERM, let calls in flight finish for this long")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
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

  strata::service::WorkerMetrics metrics;
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
    bound_metrics_address =
        strata::BoundAddress(metrics_address, exposer->GetListeningPorts().at(0));
  }

  strata::service::InferenceService service(&metrics);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen_address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    ExitNow(Fail(absl::StrCat("--listen ", listen_address, ": cannot listen there")));
  }
  const std::string bound_address = strata::BoundAddress(listen_address, port);
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  // "" is the server as a whole; probes may ask for either name.
  const auto set_serving = [health](bool serving) {
    health->SetServingStatus("", serving);
    health->SetServingStatus(std::string(strata::v1::Inference::service_full_name()), serving);
  };
  set_serving(false);
  std::printf("%s: listening on %s metrics %s, loading %s\n", kProgram, bound_address.c_str(),
              bound_metrics_address.c_str(), options.model.model_dir.c_str());
  std::fflush(stdout);

  // The model loads on its own thread so that a termination signal during a
  // long load is answered at once.
  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<strata::engine::Engine>> loaded;
  std::atomic<bool> load_done = false;
  std::thread loader([&] {
    loaded = strata::engine::CreateEngine(options);
    load_done.store(true);
  });
  while (!load_done.load()) {
    if (WaitForTerminationSignal(std::chrono::milliseconds(50)) != 0) {
      spdlog::info("{}: signal while loading the model; exiting", kProgram);
      server->Shutdown(std::chrono::system_clock::now());
      // The loader cannot be interrupted; leave without joining it.
      ExitNow(0);
    }
  }
  loader.join();
  if (!loaded.ok()) {
    server->Shutdown(std::chrono::system_clock::now());
    ExitNow(Fail(std::string(loaded.status().message())));
  }
  std::unique_ptr<strata::engine::Engine> engine = *std::move(loaded);

  const strata::model::ModelConfig& config = engine->model_config();
  strata::service::ModelDescription description;
  description.model_name = ModelName(options.model.model_dir);
  description.weight_dtype = std::string(strata::DTypeName(options.model.weight_dtype.value_or(
      options.model.random_weights ? strata::DType::kBF16 : config.torch_dtype)));
  description.parameter_count = config.ParameterCount();
  service.AttachEngine(engine.get(), description);
  metrics.SetEngine(engine.get(), options.model.kv_block_size, /*ranks=*/1);
  {
    // One rank holds the whole model today (tp = pp = 1): its weights as kept
    // in memory and the KV cache pool.
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
  spdlog::info("{}: {} ({}, {} parameters, {}) loaded in {:.2f} s; resident memory {}", kProgram,
               description.model_name, config.architecture, description.parameter_count,
               description.weight_dtype,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count(),
               strata::HumanBytes(strata::ResidentMemoryBytes()));
  std::printf("%s: serving on %s metrics %s\n", kProgram, bound_address.c_str(),
              bound_metrics_address.c_str());
  std::fflush(stdout);
  if (!ready_file.empty() && !WriteReadyFile(ready_file, {{"listen", bound_address},
                                                          {"metrics", bound_metrics_address},
                                                          {"pid", static_cast<int>(getpid())}})) {
    spdlog::error("cannot write --ready-file {}", ready_file);
  }

  int signal_number = 0;
  while (signal_number == 0)
    signal_number = WaitForTerminationSignal(std::chrono::milliseconds(-1));
  spdlog::info("{}: shutting down on signal {}", kProgram, signal_number);
  health->Shutdown();  // every service NOT_SERVING from here on
  // Generate calls in flight get --drain-seconds to finish; then whatever is
  // left (long-lived health watches included) is cancelled.
  const auto drain_deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(drain_seconds);
  while (service.GenerateCallsInFlight() > 0 && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  server->Shutdown(std::chrono::system_clock::now());
  // Calls are done; stop the engine before anything it calls back into goes.
  engine->Shutdown();
  metrics.SetEngine(nullptr);
  ExitNow(0);
}
