// strata-matmul-bench: GFLOP/s of the CPU backend's matrix products,
// y[n, out] = x[n, in] · W[out, in]^T, for the weight shapes of one layer of a
// model (TinyLlama-1.1B's by default) and a range of row counts n, through
// both paths of CpuMatMul: our kernels (weights widened in registers) and
// OpenBLAS sgemm over widened tiles. The fastest of --repeats runs counts.
// Prints numbers; not a test. It is what CpuMatMul's default row limits are chosen from.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "common/dtype.h"
#include "worker/backend/backend.h"
#include "worker/backend/cpu/gemv_kernels.h"
#include "worker/backend/cpu/matmul.h"
#include "worker/backend/cpu/thread_pool.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  int64_t out;
  int64_t in;
};

std::vector<uint16_t> RandomWeights(int64_t count, DType dtype, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<uint16_t> w(count);
  for (uint16_t& v : w) {
    const float f = normal(rng);
    v = dtype == DType::kBF16 ? F32ToBf16(f) : F32ToF16(f);
  }
  return w;
}

int Main(int argc, char** argv) {
  CLI::App app{"strata-matmul-bench: GFLOP/s of the CPU matrix products per row count"};
  int threads = 0;
  int64_t hidden = 2048;
  int64_t intermediate = 5632;
  int64_t kv_dim = 256;
  std::vector<int64_t> rows = {1, 4, 8, 16, 32, 64, 128, 256};
  std::string dtype_name = "bf16";
  int repeats = 5;
  bool no_avx512 = false;
  app.add_option("--threads", threads, "kernel threads (0: all cores)");
  app.add_option("--hidden", hidden, "hidden size (q, o: hidden x hidden)");
  app.add_option("--intermediate", intermediate, "MLP size (gate, up, down)");
  app.add_option("--kv-dim", kv_dim, "k and v output size (kv heads x head dim)");
  app.add_option("--rows", rows, "row counts n of x");
  app.add_option("--dtype", dtype_name, "weight dtype: bf16 or f16")
      ->check(CLI::IsMember({"bf16", "f16"}));
  app.add_option("--repeats", repeats, "runs per measurement; the fastest counts")
      ->check(CLI::PositiveNumber);
  app.add_flag("--no-avx512", no_avx512, "use the AVX2 kernels");
  CLI11_PARSE(app, argc, argv);
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  const DType dtype = dtype_name == "bf16" ? DType::kBF16 : DType::kF16;

  const std::vector<Shape> shapes = {
      {hidden, hidden},       {kv_dim, hidden},       {kv_dim, hidden},      {hidden, hidden},
      {intermediate, hidden}, {intermediate, hidden}, {hidden, intermediate}};
  std::mt19937 rng(7);
  std::vector<std::vector<uint16_t>> storage;
  std::vector<backend::Weight> weights;
  int64_t weights_per_layer = 0;
  for (const Shape& s : shapes) {
    storage.push_back(RandomWeights(s.out * s.in, dtype, rng));
    backend::Weight w;
    w.data = storage.back().data();
    w.dtype = dtype;
    w.rows = s.out;
    w.cols = s.in;
    weights.push_back(std::move(w));
    weights_per_layer += s.out * s.in;
  }
  const int64_t max_rows = *std::max_element(rows.begin(), rows.end());
  const int64_t max_dim = std::max(hidden, intermediate);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(max_rows * max_dim);
  for (float& v : x) v = uniform(rng);
  std::vector<float> y(max_rows * max_dim);

  backend::ThreadPool pool(threads);
  const bool avx512 = !no_avx512 && backend::CpuHasAvx512();
  backend::cpu::CpuMatMul kernels(pool, avx512, /*kernel_row_limit=*/max_rows);
  backend::cpu::CpuMatMul sgemm(pool, avx512, /*kernel_row_limit=*/0);
  const backend::cpu::CpuMatMul default_choice(pool, avx512);
  std::printf(
      "one layer: %lld weights (%s), %d threads, %s kernels; default kernel row limit %lld\n",
      static_cast<long long>(weights_per_layer), dtype_name.c_str(), threads,
      avx512 ? "AVX-512" : "AVX2", static_cast<long long>(default_choice.kernel_row_limit()));
  std::printf("%6s %14s %14s\n", "rows", "kernels GF/s", "sgemm GF/s");
  for (const int64_t n : rows) {
    double gflops[2];
    backend::cpu::CpuMatMul* paths[2] = {&kernels, &sgemm};
    for (int p = 0; p < 2; ++p) {
      double best = 1e30;
      for (int r = 0; r < repeats; ++r) {
        const auto start = Clock::now();
        for (const backend::Weight& w : weights) paths[p]->Run(x.data(), n, w, nullptr, y.data());
        best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
      }
      gflops[p] =
          2.0 * static_cast<double>(weights_per_layer) * static_cast<double>(n) / best / 1e9;
    }
    std::printf("%6lld %14.1f %14.1f\n", static_cast<long long>(n), gflops[0], gflops[1]);
  }
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) { return strata::Main(argc, argv); }
