// STRATA_CHECK: aborts the process when an engine invariant is broken (a bug,
// never bad input: bad input gets an absl::Status). Prints the condition,
// where it failed and a message to stderr first.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace strata::engine::internal {

[[noreturn]] inline void CheckFailed(const char* condition, const char* file, int line,
                                     const std::string& message) {
  std::fprintf(stderr, "%s:%d: check failed: %s %s\n", file, line, condition, message.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace strata::engine::internal

#define STRATA_CHECK(condition, message)                                                  \
  do {                                                                                    \
    if (!(condition)) {                                                                   \
      ::strata::engine::internal::CheckFailed(#condition, __FILE__, __LINE__, (message)); \
    }                                                                                     \
  } while (0)
