// strata-model-bench: how fast the model runs on this machine, and how close
// decode gets to the memory-bandwidth bound.
//
// Prints the BLAS build, the read bandwidth measured in this run (a
// multithreaded streaming read over a buffer far larger than the last-level
// cache), the bytes of weights one decode step reads, decode tokens/s at
// batch 1 with its share of the bound (bandwidth / bytes per token), and
// prefill tokens/s for 128- and 512-token prompts; for the bundled model and
// a random-weights model of TinyLlama-1.1B's shape.
#include <cblas.h>
#include <immintrin.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "common/dtype.h"
#include "common/process_memory.h"
#include "spdlog/spdlog.h"
#include "worker/backend/cpu/gemv_kernels.h"
#include "worker/backend/cpu/thread_pool.h"
#include "worker/backend/host_buffer.h"
#include "worker/model/model.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Sums a [begin, end) slice of floats with independent accumulators; the
// result is printed so the loads cannot be optimised away.
float ReadSlice(const float* data, int64_t begin, int64_t end) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  for (int64_t i = begin; i + 32 <= end; i += 32) {
    acc0 = _mm256_add_ps(acc0, _mm256_load_ps(data + i));
    acc1 = _mm256_add_ps(acc1, _mm256_load_ps(data + i + 8));
    acc2 = _mm256_add_ps(acc2, _mm256_load_ps(data + i + 16));
    acc3 = _mm256_add_ps(acc3, _mm256_load_ps(data + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

constexpr int kBandwidthRepeats = 8;

// Multithreaded streaming reads over a buffer far larger than the last-level
// cache: what the memory system delivers to this process, now.
class BandwidthProbe {
 public:
  BandwidthProbe(int threads, size_t bytes) : pool_(threads) {
    auto buffer = backend::HostBuffer::Allocate(bytes);
    if (!buffer.ok()) {
      spdlog::error("{}", std::string(buffer.status().message()));
      return;
    }
    buffer_ = std::move(buffer).value();
    data_ = static_cast<float*>(buffer_->data());
    count_ = static_cast<int64_t>(bytes / sizeof(float)) / 32 * 32;
    // Write every page first, from the pool, so pages spread as they will.
    pool_.ParallelFor(count_, 1 << 20, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) data_[i] = static_cast<float>(i & 7);
    });
  }

  // One pass over the buffer; bytes per second.
  double ReadOnce() {
    if (data_ == nullptr) return 0;
    std::vector<float> partial(pool_.num_threads(), 0.0f);
    const auto start = Clock::now();
    pool_.ParallelFor(count_ / 32, 1, [&](int64_t b, int64_t e, int thread) {
      partial[thread] += ReadSlice(data_, b * 32, e * 32);
    });
    const double seconds = Seconds(start);
    for (float p : partial) checksum_ += p;
    return static_cast<double>(count_) * sizeof(float) / seconds;
  }

  double Best(int repeats) {
    double best = 0;
    for (int i = 0; i < repeats; ++i) best = std::max(best, ReadOnce());
    return best;
  }

 private:
  backend::ThreadPool pool_;
  std::unique_ptr<backend::HostBuffer> buffer_;
  float* data_ = nullptr;
  int64_t count_ = 0;
  float checksum_ = 0;
};

// Other processes competing for the cores skew every figure: say how busy
// the machine was.
void PrintLoad(const char* label) {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  char text[128] = {0};
  if (f != nullptr) {
    if (std::fgets(text, sizeof(text), f) == nullptr) text[0] = 0;
    std::fclose(f);
  }
  std::printf("%s: %s", label, text[0] ? text : "unknown\n");
}

struct BenchOptions {
  int threads = 0;
  int decode_tokens = 32;
  bool use_avx512 = true;
  std::vector<int> prefill_lengths = {128, 512};
};

std::vector<int32_t> RandomTokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(2 + rng() % (vocab - 2));
  return ids;
}

// A batch of one sequence at positions [start, start + tokens.size()).
model::ForwardBatch OneSequence(const std::vector<int32_t>& tokens, int32_t start,
                                const std::vector<int32_t>& blocks) {
  model::ForwardBatch batch;
  batch.token_ids = tokens;
  for (size_t i = 0; i < tokens.size(); ++i) batch.positions.push_back(start + i);
  model::BatchSequence seq;
  seq.num_tokens = static_cast<int32_t>(tokens.size());
  seq.context_len = start + seq.num_tokens;
  seq.block_table = blocks;
  batch.sequences.push_back(seq);
  return batch;
}

void BenchModel(const std::string& label, const model::LoadOptions& load_options,
                const BenchOptions& options, double bandwidth, BandwidthProbe& probe) {
  std::printf("\n== %s\n", label.c_str());
  const auto load_start = Clock::now();
  auto loaded = model::Model::Load(load_options);
  if (!loaded.ok()) {
    std::printf("load failed: %s\n", std::string(loaded.status().message()).c_str());
    return;
  }
  model::Model& m = **loaded;
  const double load_seconds = Seconds(load_start);
  const model::ModelConfig& config = m.config();
  std::vector<int32_t> blocks(m.kv_num_blocks());
  for (int32_t i = 0; i < m.kv_num_blocks(); ++i) blocks[i] = i;
  std::vector<float> logits;

  const double bytes_per_token = static_cast<double>(m.decode_read_bytes());
  std::printf("weights %s, %.1f M parameters, loaded in %.2f s, resident %s\n",
              std::string(DTypeName(m.weight_dtype())).c_str(),
              static_cast<double>(config.ParameterCount()) / 1e6, load_seconds,
              HumanBytes(ResidentMemoryBytes()).c_str());

  // Decode at batch 1 after a short prompt; the first decode step warms up.
  const std::vector<int32_t> prompt = RandomTokens(16, config.vocab_size, 1);
  if (!m.Forward(OneSequence(prompt, 0, blocks), logits).ok()) return;
  int32_t position = static_cast<int32_t>(prompt.size());
  int32_t next =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  auto step = [&]() {
    auto status = m.Forward(OneSequence({next}, position, blocks), logits);
    if (!status.ok()) spdlog::error("{}", std::string(status.message()));
    ++position;
    next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  };
  for (int i = 0; i < 2; ++i) step();
  // Per-token times: the mean over all tokens, and the best window of
  // kWindow consecutive tokens (what the machine does when nothing else
  // competes for its cores; on a shared machine the two differ).
  constexpr int kWindow = 8;
  std::vector<double> token_seconds;
  for (int i = 0; i < options.decode_tokens; ++i) {
    const auto start = Clock::now();
    step();
    token_seconds.push_back(Seconds(start));
  }
  double total = 0;
  for (double t : token_seconds) total += t;
  double best_window = total;
  for (size_t i = 0; i + kWindow <= token_seconds.size(); ++i) {
    double window = 0;
    for (int j = 0; j < kWindow; ++j) window += token_seconds[i + j];
    best_window = std::min(best_window, window * token_seconds.size() / kWindow);
  }
  const double mean_rate = token_seconds.size() / total;
  const double best_rate = token_seconds.size() / best_window;
  const double bound = bandwidth / bytes_per_token;
  std::printf(
      "bandwidth bound: %.2f tokens/s (%.2f GB/s / %.1f MB of weights per token)%s\n", bound,
      bandwidth / 1e9, bytes_per_token / 1e6,
      bytes_per_token < 64e6 ? "; the weights fit in cache, so the bound does not apply" : "");
  std::printf(
      "decode batch 1, mean of %d tokens: %.2f tokens/s (%.2f ms/token) = %.1f%% of the "
      "bound\n",
      options.decode_tokens, mean_rate, 1e3 / mean_rate, 100.0 * mean_rate / bound);
  std::printf(
      "decode batch 1, best %d-token window: %.2f tokens/s (%.2f ms/token) = %.1f%% of "
      "the bound\n",
      kWindow, best_rate, 1e3 / best_rate, 100.0 * best_rate / bound);

  // Paired rounds: a bandwidth pass right before a few decode tokens, so both
  // see the same contention; the median ratio is the figure least skewed by
  // other processes. (Pointless when the weights fit in cache.)
  constexpr int kRounds = 8;
  constexpr int kRoundTokens = 4;
  std::vector<double> ratios;
  if (bytes_per_token >= 64e6) {
    for (int round = 0; round < kRounds; ++round) {
      const double round_bandwidth = probe.ReadOnce();
      const auto start = Clock::now();
      for (int i = 0; i < kRoundTokens; ++i) step();
      const double rate = kRoundTokens / Seconds(start);
      ratios.push_back(rate / (round_bandwidth / bytes_per_token));
    }
    std::sort(ratios.begin(), ratios.end());
    std::printf(
        "decode vs bandwidth measured just before it, %d rounds of %d tokens: median %.1f%%, "
        "best %.1f%% of the bound\n",
        kRounds, kRoundTokens, 100.0 * (ratios[kRounds / 2 - 1] + ratios[kRounds / 2]) / 2,
        100.0 * ratios.back());
  }

  for (int length : options.prefill_lengths) {
    if (length > config.max_position_embeddings || length > m.kv_num_blocks() * m.kv_block_size()) {
      continue;
    }
    const std::vector<int32_t> tokens = RandomTokens(length, config.vocab_size, length);
    double best = 1e30;
    const int reps = length <= 128 ? 2 : 1;
    for (int rep = 0; rep < reps; ++rep) {
      const auto start = Clock::now();
      if (!m.Forward(OneSequence(tokens, 0, blocks), logits).ok()) return;
      best = std::min(best, Seconds(start));
    }
    const double flops =
        2.0 * length * static_cast<double>(bytes_per_token) / DTypeSize(m.weight_dtype());
    std::printf("prefill %d tokens: %.1f tokens/s (%.3f s, %.0f GFLOP/s in matrix products)\n",
                length, length / best, best, flops / best / 1e9);
  }
}

int Main(int argc, char** argv) {
  CLI::App app{"strata-model-bench: model decode/prefill throughput vs memory bandwidth"};
  BenchOptions options;
  std::string model_dir = STRATA_MODEL_DIR;
  std::string large_dir = std::string(STRATA_BENCH_CONFIG_DIR) + "/tinyllama-1.1b";
  std::vector<std::string> dtypes = {"bf16"};
  bool skip_bundled = false;
  bool no_avx512 = false;
  size_t bandwidth_mib = 0;
  app.add_option("--threads", options.threads, "kernel threads (0: all cores)");
  app.add_option("--decode-tokens", options.decode_tokens, "decode steps to time");
  app.add_option("--model-dir", model_dir, "model folder benchmarked with its own weights");
  app.add_option("--large-config-dir", large_dir,
                 "folder with the config.json benchmarked with random weights");
  app.add_option("--dtypes", dtypes, "weight dtypes for the random-weights model (bf16 f16 f32)")
      ->delimiter(',');
  app.add_option("--prefill", options.prefill_lengths, "prefill prompt lengths")->delimiter(',');
  app.add_option("--bandwidth-mib", bandwidth_mib,
                 "size of the bandwidth test buffer (default: 2x the L3, 1 to 2 GiB)");
  app.add_flag("--skip-bundled", skip_bundled, "only the random-weights model");
  app.add_flag("--no-avx512", no_avx512, "use the AVX2 kernels");
  CLI11_PARSE(app, argc, argv);
  options.use_avx512 = !no_avx512;
  spdlog::set_level(spdlog::level::warn);

  const int threads =
      options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  std::printf("OpenBLAS: %s | %s\n", openblas_get_corename(), openblas_get_config());
  PrintLoad("load average at start");
  std::printf("CPU kernels: %s, %d threads\n",
              options.use_avx512 && backend::CpuHasAvx512() ? "avx512" : "avx2", threads);
  if (bandwidth_mib == 0) {
    // Far larger than the last-level cache (the L3 the VM reports may be the
    // whole host's), bounded so the first touch stays quick.
    const long l3 = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
    bandwidth_mib = std::max<size_t>(1024, l3 > 0 ? 2 * (static_cast<size_t>(l3) >> 20) : 0);
    bandwidth_mib = std::min<size_t>(bandwidth_mib, 2048);
  }
  BandwidthProbe probe(threads, bandwidth_mib << 20);
  const double bandwidth = probe.Best(kBandwidthRepeats);
  std::printf("memory read bandwidth: %.2f GB/s (%d threads, %zu MiB buffer, best of %d)\n",
              bandwidth / 1e9, threads, bandwidth_mib, kBandwidthRepeats);

  model::LoadOptions base;
  base.num_threads = options.threads;
  base.use_avx512 = options.use_avx512;
  base.kv_num_blocks = 64;  // 1024 tokens: the longest prompt here plus decode
  if (!skip_bundled) {
    model::LoadOptions bundled = base;
    bundled.model_dir = model_dir;
    BenchModel("bundled model (" + model_dir + ", weights as stored)", bundled, options, bandwidth,
               probe);
  }
  for (const std::string& name : dtypes) {
    auto dtype = ParseDType(name);
    if (!dtype.ok()) {
      std::fprintf(stderr, "--dtypes: %s\n", std::string(dtype.status().message()).c_str());
      return 2;
    }
    model::LoadOptions large = base;
    large.model_dir = large_dir;
    large.random_weights = true;
    large.random_seed = 1;
    large.weight_dtype = *dtype;
    BenchModel(
        large_dir + "/config.json with random " + std::string(DTypeName(*dtype)) + " weights",
        large, options, bandwidth, probe);
  }
  PrintLoad("\nload average at end");
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) { return strata::Main(argc, argv); }
