#include "common/logging.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace strata {

absl::Status InitLogging(std::string_view format, std::string_view level) {
  const spdlog::level::level_enum parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-level: unknown level '", std::string(level), "' (trace, debug, info, warn, error)"));
  }
  auto logger = spdlog::stderr_color_mt("strata");
  if (format == "json") {
    // Messages are escaped by the caller-facing helpers only where they hold
    // user text; plain messages contain no quotes by convention.
    logger->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","pid":%P,"msg":"%v"})",
                        spdlog::pattern_time_type::utc);
  } else if (format == "text") {
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%L%$ %P %v");
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format: unknown format '", std::string(format), "' (text, json)"));
  }
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

}  // namespace strata
