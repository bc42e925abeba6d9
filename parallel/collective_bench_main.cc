// strata-collective-bench: all-reduce latency over Gloo on loopback, with the
// ranks as separate processes (as a replica runs them).
//
//   strata-collective-bench --ranks 2 --sizes 4096,4194304 --iterations 200
//
// Prints, per message size, the first call (which prepares Gloo's options)
// and the median / p90 of the steady-state calls, as seen by rank 0.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "parallel/communicator_groups.h"
#include "parallel/gloo_communicator.h"
#include "parallel/tcp_store.h"

namespace strata::parallel {
namespace {

struct Timing {
  double first_us = 0;
  double median_us = 0;
  double p90_us = 0;
};

// Runs one rank; rank 0 returns its timings per size.
absl::StatusOr<std::vector<Timing>> RunRank(const std::string& store_address, int rank, int ranks,
                                            const std::vector<size_t>& sizes, int iterations) {
  auto store = TcpStore::Connect(store_address);
  if (!store.ok()) return store.status();
  if (auto s = (*store)->RegisterPresence(rank); !s.ok()) return s;
  auto factory = GlooCommunicatorFactory::Create(store->get(), rank, GlooOptions{});
  if (!factory.ok()) return factory.status();
  std::vector<int> world(ranks);
  for (int r = 0; r < ranks; ++r) world[r] = r;
  auto communicator = (*factory)->Create(GroupSpec{"bench", world});
  if (!communicator.ok()) return communicator.status();

  std::vector<Timing> timings;
  for (size_t bytes : sizes) {
    std::vector<float> data(bytes / sizeof(float), 1.0f);
    std::vector<double> samples;
    Timing timing;
    for (int i = 0; i <= iterations; ++i) {
      if (auto s = (*communicator)->Barrier(); !s.ok()) return s;
      const auto start = std::chrono::steady_clock::now();
      if (auto s = (*communicator)->AllReduceSum(data.data(), data.size()); !s.ok()) return s;
      const double us =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
              .count();
      if (i == 0) {
        timing.first_us = us;
      } else {
        samples.push_back(us);
      }
    }
    std::sort(samples.begin(), samples.end());
    timing.median_us = samples[samples.size() / 2];
    timing.p90_us = samples[samples.size() * 9 / 10];
    timings.push_back(timing);
  }
  return timings;
}

int Main(int argc, char** argv) {
  CLI::App app{"All-reduce latency over Gloo, ranks as processes on 127.0.0.1"};
  int ranks = 2;
  int iterations = 100;
  std::string sizes_text = "4096,4194304";
  app.add_option("--ranks", ranks, "Processes (ranks)")->capture_default_str();
  app.add_option("--iterations", iterations, "Timed calls per size")->capture_default_str();
  app.add_option("--sizes", sizes_text, "Message sizes in bytes, comma-separated")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::vector<size_t> sizes;
  for (absl::string_view piece : absl::StrSplit(sizes_text, ',')) {
    size_t bytes = 0;
    if (!absl::SimpleAtoi(piece, &bytes) || bytes < sizeof(float)) {
      std::fprintf(stderr, "bad --sizes entry \"%s\"\n", std::string(piece).c_str());
      return 2;
    }
    sizes.push_back(bytes);
  }
  if (ranks < 2 || iterations < 1) {
    std::fprintf(stderr, "--ranks must be >= 2 and --iterations >= 1\n");
    return 2;
  }

  auto server = TcpStoreServer::Start("127.0.0.1:0");
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  const std::string address = "127.0.0.1:" + std::to_string((*server)->port());
  std::vector<pid_t> children;
  for (int rank = 1; rank < ranks; ++rank) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      auto result = RunRank(address, rank, ranks, sizes, iterations);
      if (!result.ok()) {
        std::fprintf(stderr, "rank %d: %s\n", rank, std::string(result.status().message()).c_str());
      }
      ::_exit(result.ok() ? 0 : 1);
    }
    children.push_back(pid);
  }
  auto timings = RunRank(address, 0, ranks, sizes, iterations);
  int failures = 0;
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failures;
  }
  if (!timings.ok() || failures > 0) {
    std::fprintf(stderr, "rank 0: %s; %d other ranks failed\n",
                 timings.ok() ? "ok" : std::string(timings.status().message()).c_str(), failures);
    return 1;
  }
  std::printf("gloo all_reduce (ring), %d processes on 127.0.0.1, %d timed calls per size\n", ranks,
              iterations);
  std::printf("%12s %14s %14s %14s\n", "bytes", "first_call_us", "median_us", "p90_us");
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::printf("%12zu %14.1f %14.1f %14.1f\n", sizes[i], (*timings)[i].first_us,
                (*timings)[i].median_us, (*timings)[i].p90_us);
  }
  return 0;
}

}  // namespace
}  // namespace strata::parallel

int main(int argc, char** argv) { return strata::parallel::Main(argc, argv); }
