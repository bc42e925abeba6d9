#include "common/progress.h"

#include <unistd.h>

#include <cstdio>

#include "spdlog/spdlog.h"

namespace strata {

Progress::Progress(std::string what, uint64_t total)
    : what_(std::move(what)), total_(total == 0 ? 1 : total), terminal_(::isatty(STDERR_FILENO)) {
  Draw();
}

Progress::~Progress() {
  if (done_ < total_) done_ = total_;
  Draw();
  if (terminal_) std::fputc('\n', stderr);
}

void Progress::Advance(uint64_t amount) {
  done_ += amount;
  if (done_ > total_) done_ = total_;
  Draw();
}

void Progress::Draw() {
  const int percent = static_cast<int>(100 * done_ / total_);
  if (terminal_) {
    constexpr int kWidth = 40;
    const int filled = percent * kWidth / 100;
    std::fprintf(stderr, "\r%s [%.*s%*s] %3d%%", what_.c_str(), filled,
                 "########################################", kWidth - filled, "", percent);
    std::fflush(stderr);
    return;
  }
  const int decile = percent / 10;
  if (decile != last_decile_) {
    last_decile_ = decile;
    spdlog::info("{}: {}%", what_, percent);
  }
}

}  // namespace strata
