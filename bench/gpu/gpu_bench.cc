// strata-gpu-bench: the CUDA backend on one GPU with a Llama-3-8B-shaped
// model (random BF16 weights): decode tokens/s at several batch sizes and
// prefill tokens/s for long prompts, each set against a limit measured in
// the same run on the same device:
//   - decode: weight bytes read per step / device bandwidth (a device-to-
//     device copy, counted as read + write) gives the batch-1 bound;
//   - prefill: FLOPs per prompt / dense BF16 tensor-core peak (a large
//     cuBLAS GEMM, BF16 in, F32 accumulate).
// Lines starting "RESULT " are the figures scripts/gpu-check.sh reports.
// Prints numbers; not a test.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "worker/backend/cpu/cpu_backend.h"
#include "worker/backend/cuda/cuda_backend.h"
#include "worker/model/llama_model.h"
#include "worker/model/model_config.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool CudaOk(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return true;
  std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(error));
  return false;
}

// Seconds per run of `work` on the legacy stream, from CUDA events.
template <typename Work>
double TimeOnDevice(int iterations, Work work) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  work();  // warm-up
  cudaEventRecord(start);
  for (int i = 0; i < iterations; ++i) work();
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms * 1e-3 / iterations;
}

// Device memory bandwidth in bytes/s: a 2 GiB device-to-device copy moves
// every byte twice (read + write).
double MeasureBandwidth() {
  const size_t bytes = size_t{2} << 30;
  void* a = nullptr;
  void* b = nullptr;
  if (!CudaOk(cudaMalloc(&a, bytes), "cudaMalloc") ||
      !CudaOk(cudaMalloc(&b, bytes), "cudaMalloc")) {
    return 0;
  }
  const double seconds =
      TimeOnDevice(10, [&] { cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice); });
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / seconds;
}

// Dense BF16 tensor-core FLOP/s of cuBLAS on an m = n = k = 8192 GEMM.
double MeasureGemmPeak() {
  const int size = 8192;
  const size_t bytes = static_cast<size_t>(size) * size * 2;
  void *a = nullptr, *b = nullptr, *c = nullptr;
  if (!CudaOk(cudaMalloc(&a, bytes), "cudaMalloc") ||
      !CudaOk(cudaMalloc(&b, bytes), "cudaMalloc") ||
      !CudaOk(cudaMalloc(&c, bytes * 2), "cudaMalloc")) {
    return 0;
  }
  cudaMemset(a, 0, bytes);
  cudaMemset(b, 0, bytes);
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return 0;
  const float alpha = 1.0f, beta = 0.0f;
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  const double seconds = TimeOnDevice(20, [&] {
    status = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, size, size, size, &alpha, a,
                          CUDA_R_16BF, size, b, CUDA_R_16BF, size, &beta, c, CUDA_R_32F, size,
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  });
  cublasDestroy(handle);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  if (status != CUBLAS_STATUS_SUCCESS) return 0;
  return 2.0 * size * size * static_cast<double>(size) / seconds;
}

struct Sequence {
  std::vector<int32_t> blocks;
  int32_t context_len = 0;
};

// One step: chunks[i] are the next tokens of *sequences[i].
model::ForwardBatch MakeBatch(const std::vector<Sequence*>& sequences,
                              const std::vector<std::vector<int32_t>>& chunks) {
  model::ForwardBatch batch;
  for (size_t i = 0; i < sequences.size(); ++i) {
    model::BatchSequence seq;
    seq.first_token = batch.num_tokens();
    seq.num_tokens = static_cast<int32_t>(chunks[i].size());
    seq.context_len = sequences[i]->context_len + seq.num_tokens;
    seq.block_table = sequences[i]->blocks;
    for (int32_t t = 0; t < seq.num_tokens; ++t) {
      batch.token_ids.push_back(chunks[i][t]);
      batch.positions.push_back(sequences[i]->context_len + t);
    }
    batch.sequences.push_back(std::move(seq));
  }
  return batch;
}

struct Options {
  std::string config_dir = STRATA_GPU_BENCH_CONFIG_DIR "/llama-3-8b";
  std::vector<int> batches = {1, 16, 64};
  int decode_context = 128;  // prompt tokens before decode steps
  int decode_steps = 32;
  int prompt_tokens = 2048;
  int prefill_runs = 3;
  int device = 0;
  std::string backend = "cuda";
};

int Run(const Options& options) {
  auto config = model::ModelConfig::FromDirectory(options.config_dir);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<backend::Backend> backend;
  backend::CudaBackend* cuda = nullptr;  // owned by backend, then by the model
  double bandwidth = 0;
  double peak = 0;
  if (options.backend == "cpu") {
    // Checks the benchmark itself on a machine without a GPU (no limits).
    backend = std::make_unique<backend::CpuBackend>(backend::CpuBackendOptions{});
    std::printf("RESULT device: cpu (no bandwidth or GEMM limits measured)\n");
  } else {
    auto cuda_backend = backend::CudaBackend::Create({.device = options.device});
    if (!cuda_backend.ok()) {
      std::fprintf(stderr, "no CUDA backend: %s\n",
                   std::string(cuda_backend.status().message()).c_str());
      return 1;
    }
    std::printf("RESULT device: %s\n", (*cuda_backend)->device_description().c_str());
    cuda = cuda_backend->get();
    backend = *std::move(cuda_backend);
    bandwidth = MeasureBandwidth();
    peak = MeasureGemmPeak();
  }
  if (bandwidth > 0) {
    std::printf("RESULT bandwidth: %.0f GB/s (device-to-device copy, read + write)\n",
                bandwidth / 1e9);
    std::printf("RESULT BF16 GEMM peak: %.0f TFLOP/s (cuBLAS 8192^3, F32 accumulate)\n",
                peak / 1e12);
  }

  // Blocks: every decode sequence of the largest batch, plus one prompt.
  const int max_batch = *std::max_element(options.batches.begin(), options.batches.end());
  const int block_size = 16;
  const int decode_blocks =
      (options.decode_context + 2 * (options.decode_steps + 2) + block_size - 1) / block_size;
  const int prompt_blocks = (options.prompt_tokens + block_size - 1) / block_size;
  model::LoadOptions load;
  load.model_dir = options.config_dir;
  load.random_weights = true;
  load.random_seed = 1;
  load.weight_dtype = DType::kBF16;
  load.kv_block_size = block_size;
  load.kv_num_blocks = std::max(max_batch * decode_blocks, prompt_blocks);
  const auto load_start = Clock::now();
  auto loaded = model::LlamaModel::Create(*config, load, std::move(backend));
  if (!loaded.ok()) {
    std::fprintf(stderr, "load: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  model::LlamaModel& m = **loaded;
  const double bytes_per_step = static_cast<double>(m.decode_read_bytes());
  std::printf("model: %s shape, %.2f B parameters, BF16, loaded in %.1f s; %d KV blocks\n",
              options.config_dir.c_str(), static_cast<double>(config->ParameterCount()) / 1e9,
              SecondsSince(load_start), m.kv_num_blocks());
  if (bandwidth > 0) {
    std::printf("RESULT weights read per decode step: %.2f GB; batch-1 bound %.1f tokens/s\n",
                bytes_per_step / 1e9, bandwidth / bytes_per_step);
  }

  std::mt19937 rng(7);
  auto random_tokens = [&](int n) {
    std::vector<int32_t> ids(n);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % config->vocab_size);
    return ids;
  };
  std::vector<float> logits;
  bool ok = true;
  auto forward = [&](const model::ForwardBatch& batch) {
    const absl::Status status = m.Forward(batch, logits);
    if (!status.ok()) {
      std::fprintf(stderr, "forward: %s\n", std::string(status.message()).c_str());
      ok = false;
    }
    return status.ok();
  };

  for (int batch_size : options.batches) {
    std::vector<Sequence> sequences(batch_size);
    std::vector<Sequence*> members;
    std::vector<std::vector<int32_t>> chunks;
    for (int s = 0; s < batch_size; ++s) {
      for (int b = 0; b < decode_blocks; ++b) sequences[s].blocks.push_back(s * decode_blocks + b);
      members.push_back(&sequences[s]);
      chunks.push_back(random_tokens(options.decode_context));
    }
    if (!forward(MakeBatch(members, chunks))) return 1;
    for (Sequence& s : sequences) s.context_len = options.decode_context;
    auto decode_step = [&] {
      for (auto& chunk : chunks) chunk = random_tokens(1);
      const bool stepped = forward(MakeBatch(members, chunks));
      for (Sequence& s : sequences) ++s.context_len;
      return stepped;
    };
    // Ops launched one by one, then (CUDA) decode steps replayed as graphs.
    for (const bool graphs : {false, true}) {
      if (graphs && cuda == nullptr) break;
      if (cuda != nullptr) cuda->SetStepGraphs(graphs);
      // Warm-up; with graphs the second step captures.
      if (!decode_step() || !decode_step()) return 1;
      const auto start = Clock::now();
      for (int i = 0; i < options.decode_steps; ++i) {
        if (!decode_step()) return 1;
      }
      const double seconds = SecondsSince(start);
      const double tokens_per_second = batch_size * options.decode_steps / seconds;
      const double step_ms = seconds / options.decode_steps * 1e3;
      const char* mode = graphs ? "graphs" : "eager";
      if (batch_size == 1 && bandwidth > 0) {
        const double fraction = tokens_per_second / (bandwidth / bytes_per_step);
        std::printf(
            "RESULT decode batch 1 (%s): %.1f tokens/s (%.2f ms/step), %.0f%% of the bandwidth "
            "bound (target >= 85%%) %s\n",
            mode, tokens_per_second, step_ms, fraction * 100, fraction >= 0.85 ? "MET" : "MISSED");
      } else {
        std::printf("RESULT decode batch %d (%s): %.1f tokens/s (%.2f ms/step)\n", batch_size, mode,
                    tokens_per_second, step_ms);
      }
    }
    if (cuda != nullptr) cuda->SetStepGraphs(false);
  }

  // Prefill: one prompt in one step. FLOPs: every layer matrix once per token,
  // the LM head once (last token only), and causal attention (QK^T and PV).
  const double n = options.prompt_tokens;
  const double layer_params = static_cast<double>(config->ParameterCount()) -
                              2.0 * config->vocab_size * static_cast<double>(config->hidden_size);
  const double q_dim = static_cast<double>(config->num_attention_heads) * config->head_dim;
  const double flops = 2.0 * layer_params * n +
                       2.0 * config->vocab_size * static_cast<double>(config->hidden_size) +
                       4.0 * config->num_hidden_layers * q_dim * n * (n + 1) / 2;
  Sequence prompt;
  for (int b = 0; b < prompt_blocks; ++b) prompt.blocks.push_back(b);
  double best = 1e30;
  for (int run = 0; run <= options.prefill_runs; ++run) {  // run 0 warms up
    prompt.context_len = 0;
    const auto batch = MakeBatch({&prompt}, {random_tokens(options.prompt_tokens)});
    const auto start = Clock::now();
    if (!forward(batch)) return 1;
    if (run > 0) best = std::min(best, SecondsSince(start));
  }
  const double achieved = flops / best;
  if (peak <= 0) {
    std::printf("RESULT prefill %d tokens: %.0f tokens/s (%.1f ms), %.3f TFLOP/s\n",
                options.prompt_tokens, n / best, best * 1e3, achieved / 1e12);
    return ok ? 0 : 1;
  }
  std::printf(
      "RESULT prefill %d tokens: %.0f tokens/s (%.1f ms), %.0f TFLOP/s, %.0f%% of the GEMM peak "
      "(target >= 50%%) %s\n",
      options.prompt_tokens, n / best, best * 1e3, achieved / 1e12, achieved / peak * 100,
      achieved >= 0.5 * peak ? "MET" : "MISSED");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  strata::Options options;
  CLI::App app{"Decode and prefill throughput of the CUDA backend (Llama-3-8B shape, BF16)"};
  app.add_option("--config", options.config_dir, "folder with the config.json to build");
  app.add_option("--batches", options.batches, "decode batch sizes")->delimiter(',');
  app.add_option("--decode-context", options.decode_context, "prompt tokens before decoding");
  app.add_option("--decode-steps", options.decode_steps, "timed decode steps per batch size");
  app.add_option("--prompt-tokens", options.prompt_tokens, "prefill prompt length");
  app.add_option("--prefill-runs", options.prefill_runs, "timed prefill runs (best is kept)");
  app.add_option("--device", options.device, "CUDA device ordinal");
  app.add_option("--backend", options.backend, "cuda, or cpu to check the benchmark without a GPU")
      ->check(CLI::IsMember({"cuda", "cpu"}));
  CLI11_PARSE(app, argc, argv);
  return strata::Run(options);
}
