#include "common/server_process.h"

#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "spdlog/spdlog.h"

namespace strata {

std::string BoundAddress(const std::string& address, int port) {
  return absl::StrCat(address.substr(0, address.rfind(':')), ":", port);
}

bool WriteFileAtomically(const std::string& path, const std::string& contents) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary);
    out << contents;
    if (!out) return false;
  }
  return std::rename(temporary.c_str(), path.c_str()) == 0;
}

void TuneProcessForServing() {
  // Fixed thresholds also turn off glibc's dynamic mmap threshold.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

[[noreturn]] void ExitServerProcess(int code) {
  // Flush, never drop, the loggers: threads still running (a store
  // connection noting a rank gone, a watchdog) may be logging right now, and
  // spdlog::shutdown() would destroy the logger under them.
  if (std::shared_ptr<spdlog::logger> logger = spdlog::default_logger()) logger->flush();
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

int PrintStartupError(const char* program, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", program, message.c_str());
  std::fflush(stderr);
  return 1;
}

}  // namespace strata
