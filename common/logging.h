// Process-wide logging set-up. Everything logs through spdlog; this picks the
// format: "text" for people, "json" for log pipelines (one JSON object per
// line with time, level, pid, msg and, while a request is concerned,
// request_id; every string is escaped, so any message yields valid JSON).
//
// Request ids: a ScopedRequestId marks the current thread as working on one
// request; every line logged on that thread until the scope ends carries the
// id (`"request_id":"..."` in JSON, `[request_id]` in text).
//
// Thread-safety: InitLogging once from main before other threads start; the
// rest may be used from any thread (the request id is per thread).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "spdlog/formatter.h"

namespace strata {

// REQUIRES: called once, from main, before other threads start.
// format: "text" or "json"; level: trace, debug, info, warn, error, off.
absl::Status InitLogging(std::string_view format, std::string_view level);

// The line formatter InitLogging installs for `format` ("text" or "json");
// INVALID_ARGUMENT naming --log-format otherwise. Tests attach it to their own sinks.
absl::StatusOr<std::unique_ptr<spdlog::formatter>> MakeLogFormatter(std::string_view format);

// `text` as the inside of a JSON string: quotes, backslashes and control
// characters escaped; bytes that are not valid UTF-8 become U+FFFD.
std::string JsonEscape(std::string_view text);

// Sets the calling thread's request id for the scope's lifetime; scopes nest
// (the outer id comes back when the inner scope ends). Not movable.
class ScopedRequestId {
 public:
  explicit ScopedRequestId(std::string_view request_id);
  ~ScopedRequestId();
  ScopedRequestId(const ScopedRequestId&) = delete;
  ScopedRequestId& operator=(const ScopedRequestId&) = delete;

 private:
  std::string previous_;
};

// The calling thread's request id; empty outside any ScopedRequestId.
const std::string& CurrentRequestId();

}  // namespace strata
