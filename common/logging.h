// Process-wide logging set-up. Everything logs through spdlog; this picks the
// format ("text" for people, "json" for log pipelines: one object per line
// with time, level, message and, where a request is concerned, request_id).
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace strata {

// REQUIRES: called once, from main, before other threads start.
// format: "text" or "json"; level: trace, debug, info, warn, error.
absl::Status InitLogging(std::string_view format, std::string_view level);

}  // namespace strata
