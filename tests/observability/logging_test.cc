// Log lines: JSON lines stay valid JSON whatever the message holds, and carry
// the request id while (and only while) a ScopedRequestId is alive.
#include "common/logging.h"

#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "spdlog/logger.h"
#include "spdlog/sinks/ostream_sink.h"

namespace strata {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class LogCapture {
 public:
  explicit LogCapture(const std::string& format)
      : sink_(std::make_shared<spdlog::sinks::ostream_sink_st>(out_)), logger_("test", sink_) {
    absl::StatusOr<std::unique_ptr<spdlog::formatter>> formatter = MakeLogFormatter(format);
    EXPECT_TRUE(formatter.ok()) << formatter.status();
    sink_->set_formatter(*std::move(formatter));
    logger_.set_level(spdlog::level::trace);
  }
  spdlog::logger& logger() { return logger_; }
  // The lines logged since the last call.
  std::string Take() {
    std::string text = out_.str();
    out_.str("");
    return text;
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_st> sink_;
  spdlog::logger logger_;
};

TEST(JsonEscapeTest, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(JsonEscape(R"(say "hi" \ bye)"), R"(say \"hi\" \\ bye)");
  EXPECT_EQ(JsonEscape("a\nb\rc\td"), R"(a\nb\rc\td)");
  EXPECT_EQ(JsonEscape(std::string("\x01\x1f\x7f", 3)), R"(\u0001\u001f\u007f)");
  EXPECT_EQ(JsonEscape("h\xC3\xA9llo \xF0\x9F\x98\x80"), "h\xC3\xA9llo \xF0\x9F\x98\x80");
}

TEST(JsonEscapeTest, ReplacesInvalidUtf8WithReplacementCharacter) {
  EXPECT_EQ(JsonEscape("a\xFFz"), "a\xEF\xBF\xBDz");
  EXPECT_EQ(JsonEscape("cut \xE2\x82"), "cut \xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(JsonEscape("overlong \xC0\xAF"), "overlong \xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(LoggingTest, JsonLinesParseWhateverTheMessageHolds) {
  LogCapture capture("json");
  const std::string nasty = "prompt \"quoted\" \\ back\nslash\ttab \x01 bad \xFF end";
  capture.logger().warn("request failed: {}", nasty);
  const std::string line = capture.Take();
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  const nlohmann::json parsed = nlohmann::json::parse(line);
  EXPECT_EQ(parsed["level"], "warning");
  EXPECT_EQ(parsed["msg"],
            "request failed: prompt \"quoted\" \\ back\nslash\ttab \x01 bad \xEF\xBF\xBD end");
  EXPECT_TRUE(parsed["time"].is_string());
  EXPECT_TRUE(parsed["pid"].is_number_integer());
  EXPECT_FALSE(parsed.contains("request_id"));
}

TEST(LoggingTest, JsonLinesCarryTheRequestIdOnlyInsideItsScope) {
  LogCapture capture("json");
  {
    const ScopedRequestId outer("rtr-1\"x");
    capture.logger().info("outer");
    EXPECT_EQ(nlohmann::json::parse(capture.Take())["request_id"], "rtr-1\"x");
    {
      const ScopedRequestId inner("req-2");
      capture.logger().info("inner");
      EXPECT_EQ(nlohmann::json::parse(capture.Take())["request_id"], "req-2");
    }
    capture.logger().info("outer again");
    EXPECT_EQ(nlohmann::json::parse(capture.Take())["request_id"], "rtr-1\"x");
    // Another thread has its own (empty) id.
    std::thread([] { EXPECT_EQ(CurrentRequestId(), ""); }).join();
  }
  capture.logger().info("after");
  EXPECT_FALSE(nlohmann::json::parse(capture.Take()).contains("request_id"));
  EXPECT_EQ(CurrentRequestId(), "");
}

TEST(LoggingTest, TextLinesShowTheRequestIdBeforeTheMessage) {
  LogCapture capture("text");
  {
    const ScopedRequestId scope("rtr-abc-7");
    capture.logger().info("relaying");
    EXPECT_THAT(capture.Take(), HasSubstr("[rtr-abc-7] relaying"));
  }
  capture.logger().info("no request");
  EXPECT_THAT(capture.Take(), Not(HasSubstr("[")));
}

TEST(LoggingTest, UnknownFormatOrLevelIsAnErrorNamingTheFlag) {
  absl::StatusOr<std::unique_ptr<spdlog::formatter>> formatter = MakeLogFormatter("xml");
  ASSERT_FALSE(formatter.ok());
  EXPECT_THAT(std::string(formatter.status().message()), StartsWith("--log-format"));
  const absl::Status status = InitLogging("json", "loud");
  EXPECT_THAT(std::string(status.message()), StartsWith("--log-level"));
}

}  // namespace
}  // namespace strata
