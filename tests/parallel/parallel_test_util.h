// Helpers shared by the parallel/ tests: free ports, ranks as threads, ranks as
// forked processes that report an absl::Status back through a pipe, and one
// end-to-end check of a rank's CommunicatorGroups that every implementation
// must pass.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "parallel/communicator_groups.h"

namespace strata::parallel::testing {

// A TCP port that was free a moment ago on 127.0.0.1.
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Runs fn(rank) for every rank on its own thread; returns each rank's status.
inline std::vector<absl::Status> RunAsThreads(int ranks,
                                              const std::function<absl::Status(int)>& fn) {
  std::vector<absl::Status> results(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) threads.emplace_back([&, r] { results[r] = fn(r); });
  for (auto& t : threads) t.join();
  return results;
}

// A forked child that runs a function returning absl::Status and reports it.
// The destructor kills and reaps the child if it is still there.
class ForkedRank {
 public:
  explicit ForkedRank(const std::function<absl::Status()>& fn) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(fds[0]);
      const absl::Status status = fn();
      const std::string report =
          absl::StrCat(static_cast<int>(status.code()), "\n", std::string(status.message()));
      (void)!::write(fds[1], report.data(), report.size());
      ::_exit(0);
    }
    ::close(fds[1]);
    read_fd_ = fds[0];
  }
  ~ForkedRank() {
    Kill(SIGKILL);
    Reap();
    if (read_fd_ >= 0) ::close(read_fd_);
  }
  ForkedRank(const ForkedRank&) = delete;
  ForkedRank& operator=(const ForkedRank&) = delete;

  pid_t pid() const { return pid_; }
  void Kill(int signal) {
    if (pid_ > 0 && !reaped_) ::kill(pid_, signal);
  }
  void Reap() {
    if (pid_ > 0 && !reaped_) {
      ::waitpid(pid_, nullptr, 0);
      reaped_ = true;
    }
  }

  // The child's status, or DEADLINE_EXCEEDED if it reports nothing in time,
  // or INTERNAL if it died without a report.
  absl::Status Wait(absl::Duration timeout) {
    std::string report;
    const absl::Time deadline = absl::Now() + timeout;
    char buffer[4096];
    while (true) {
      const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left_ms <= 0) return absl::DeadlineExceededError("child reported nothing in time");
      pollfd pfd{read_fd_, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left_ms)) <= 0) continue;
      const ssize_t got = ::read(read_fd_, buffer, sizeof(buffer));
      if (got <= 0) break;
      report.append(buffer, static_cast<size_t>(got));
    }
    Reap();
    const size_t newline = report.find('\n');
    if (newline == std::string::npos) return absl::InternalError("child died without a report");
    const int code = std::stoi(report.substr(0, newline));
    return absl::Status(static_cast<absl::StatusCode>(code), report.substr(newline + 1));
  }

 private:
  pid_t pid_ = -1;
  int read_fd_ = -1;
  bool reaped_ = false;
};

namespace internal {

inline absl::Status Expect(bool ok, const std::string& what) {
  return ok ? absl::OkStatus() : absl::InternalError(what);
}

#define STRATA_TEST_RETURN_IF_ERROR(expr)        \
  do {                                           \
    absl::Status test_status_ = (expr);          \
    if (!test_status_.ok()) return test_status_; \
  } while (0)

// All-reduce of `n` floats on `communicator`: member r contributes r + i / 2.
inline absl::Status CheckAllReduce(Communicator& communicator, size_t n) {
  const int size = communicator.size();
  std::vector<float> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = communicator.rank() + 0.5f * static_cast<float>(i % 64);
  STRATA_TEST_RETURN_IF_ERROR(communicator.AllReduceSum(data.data(), n));
  const float rank_sum = size * (size - 1) / 2.0f;
  for (size_t i = 0; i < n; ++i) {
    const float want = rank_sum + size * 0.5f * static_cast<float>(i % 64);
    if (data[i] != want) {
      return absl::InternalError(absl::StrCat(communicator.group().name, " all_reduce n=", n,
                                              ": element ", i, " is ", data[i], ", want ", want));
    }
  }
  return absl::OkStatus();
}

}  // namespace internal

// Exercises every group of one rank: world all-reduce (small, multi-segment
// and a reused buffer), TP all-gather, world broadcast from the last rank,
// pipeline send/recv both ways between stage neighbours, barriers.
inline absl::Status ExerciseGroups(CommunicatorGroups& groups) {
  using internal::CheckAllReduce;
  using internal::Expect;
  const ParallelConfig& config = groups.config();
  Communicator& world = groups.world();
  STRATA_TEST_RETURN_IF_ERROR(Expect(world.size() == config.world_size(), "world size"));
  STRATA_TEST_RETURN_IF_ERROR(Expect(world.world_rank() == config.rank(), "world rank"));
  STRATA_TEST_RETURN_IF_ERROR(CheckAllReduce(world, 1));  // fewer elements than ranks
  STRATA_TEST_RETURN_IF_ERROR(CheckAllReduce(world, 3));
  STRATA_TEST_RETURN_IF_ERROR(CheckAllReduce(world, 1000));
  STRATA_TEST_RETURN_IF_ERROR(CheckAllReduce(world, 300000));  // several Gloo segments
  STRATA_TEST_RETURN_IF_ERROR(CheckAllReduce(groups.tensor_parallel(), 1000));

  {  // The same buffer twice reuses prepared state; its contents must be fresh.
    std::vector<float> data(257, 1.0f);
    STRATA_TEST_RETURN_IF_ERROR(world.AllReduceSum(data.data(), data.size()));
    std::fill(data.begin(), data.end(), 2.0f);
    STRATA_TEST_RETURN_IF_ERROR(world.AllReduceSum(data.data(), data.size()));
    STRATA_TEST_RETURN_IF_ERROR(
        Expect(data[0] == 2.0f * world.size() && data[256] == 2.0f * world.size(),
               "reused all_reduce buffer"));
  }

  {  // TP all-gather: member t contributes t * 1000 + i.
    Communicator& tp = groups.tensor_parallel();
    const size_t n = 333;
    std::vector<float> in(n), out(n * tp.size(), -1.0f);
    for (size_t i = 0; i < n; ++i) in[i] = tp.rank() * 1000.0f + i;
    STRATA_TEST_RETURN_IF_ERROR(tp.AllGather(in.data(), n, out.data()));
    for (int t = 0; t < tp.size(); ++t) {
      for (size_t i = 0; i < n; i += 37) {
        STRATA_TEST_RETURN_IF_ERROR(Expect(out[t * n + i] == t * 1000.0f + i,
                                           absl::StrCat("all_gather slot ", t, " index ", i)));
      }
    }
  }

  {  // World broadcast of a byte pattern from the last rank.
    const int root = world.size() - 1;
    std::vector<uint8_t> bytes(5000);
    for (size_t i = 0; i < bytes.size(); ++i) {
      bytes[i] = world.rank() == root ? static_cast<uint8_t>(i * 7 + 3) : 0;
    }
    STRATA_TEST_RETURN_IF_ERROR(world.Broadcast(bytes.data(), bytes.size(), root));
    for (size_t i = 0; i < bytes.size(); ++i) {
      if (bytes[i] != static_cast<uint8_t>(i * 7 + 3)) {
        return absl::InternalError(absl::StrCat("broadcast byte ", i, " differs"));
      }
    }
  }

  {  // Pipeline: hidden states forward, an acknowledgement back.
    const size_t n = 4096;
    if (Communicator* previous = groups.previous_stage()) {
      std::vector<float> hidden(n);
      STRATA_TEST_RETURN_IF_ERROR(
          previous->Recv(hidden.data(), n * sizeof(float), CommunicatorGroups::kLowerStage));
      const float sender = static_cast<float>(*config.PreviousStageRank());
      STRATA_TEST_RETURN_IF_ERROR(
          Expect(hidden[0] == sender && hidden[n - 1] == sender + n - 1, "pipeline recv"));
      const int32_t ack = config.rank();
      STRATA_TEST_RETURN_IF_ERROR(
          previous->Send(&ack, sizeof(ack), CommunicatorGroups::kLowerStage));
    }
    if (Communicator* next = groups.next_stage()) {
      std::vector<float> hidden(n);
      std::iota(hidden.begin(), hidden.end(), static_cast<float>(config.rank()));
      STRATA_TEST_RETURN_IF_ERROR(
          next->Send(hidden.data(), n * sizeof(float), CommunicatorGroups::kHigherStage));
      int32_t ack = -1;
      STRATA_TEST_RETURN_IF_ERROR(next->Recv(&ack, sizeof(ack), CommunicatorGroups::kHigherStage));
      STRATA_TEST_RETURN_IF_ERROR(Expect(ack == *config.NextStageRank(), "pipeline ack"));
    }
  }

  STRATA_TEST_RETURN_IF_ERROR(groups.tensor_parallel().Barrier());
  return world.Barrier();
}

}  // namespace strata::parallel::testing
