#include "bench/load/progress_line.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_format.h"

namespace strata::bench {

ProgressLine::ProgressLine(std::string label, int64_t total_requests, double duration_s,
                           std::function<Snapshot()> poll, bool enabled)
    : label_(std::move(label)),
      total_requests_(total_requests),
      duration_s_(duration_s),
      poll_(std::move(poll)),
      start_(std::chrono::steady_clock::now()) {
  if (enabled && isatty(STDERR_FILENO)) thread_ = std::thread([this] { Loop(); });
}

ProgressLine::~ProgressLine() {
  if (!thread_.joinable()) return;
  stop_ = true;
  thread_.join();
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

void ProgressLine::Loop() {
  while (!stop_) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    Draw(poll_(), elapsed);
    for (int i = 0; i < 4 && !stop_; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

void ProgressLine::Draw(const Snapshot& snapshot, double elapsed_s) const {
  double fraction = 0.0;
  if (total_requests_ > 0) fraction = static_cast<double>(snapshot.done) / total_requests_;
  if (duration_s_ > 0) fraction = std::max(fraction, elapsed_s / duration_s_);
  fraction = std::clamp(fraction, 0.0, 1.0);
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar(filled, '#');
  bar.append(kWidth - filled, '.');
  const std::string of =
      total_requests_ > 0 ? absl::StrFormat("/%d", total_requests_) : std::string();
  const double rate = elapsed_s > 0 ? snapshot.output_tokens / elapsed_s : 0.0;
  std::fprintf(stderr, "\r\033[K%s [%s] %d%s requests  %.1f s  %.1f tok/s", label_.c_str(),
               bar.c_str(), static_cast<int>(snapshot.done), of.c_str(), elapsed_s, rate);
  std::fflush(stderr);
}

}  // namespace strata::bench
