#include "common/logging.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace strata {
namespace {

thread_local std::string current_request_id;

// Custom pattern flags (letters spdlog leaves free).
constexpr char kEscapedMessageFlag = 'j';  // msg, JSON-escaped
constexpr char kJsonRequestIdFlag = 'k';   // ,"request_id":"..." or nothing
constexpr char kTextRequestIdFlag = 'q';   // [id]  or nothing

void Append(std::string_view text, spdlog::memory_buf_t& dest) {
  dest.append(text.data(), text.data() + text.size());
}

class EscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    Append(JsonEscape(std::string_view(msg.payload.data(), msg.payload.size())), dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<EscapedMessage>();
  }
};

class JsonRequestId final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    if (current_request_id.empty()) return;
    Append(",\"request_id\":\"", dest);
    Append(JsonEscape(current_request_id), dest);
    Append("\"", dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonRequestId>();
  }
};

class TextRequestId final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    if (current_request_id.empty()) return;
    Append("[", dest);
    Append(current_request_id, dest);
    Append("] ", dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<TextRequestId>();
  }
};

// Length of the valid UTF-8 sequence at the start of `text`, 0 if invalid.
size_t Utf8SequenceLength(std::string_view text) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  size_t length;
  uint32_t code_point;
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    code_point = lead & 0x07;
  } else {
    return 0;
  }
  if (text.size() < length) return 0;
  for (size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (byte(i) & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
  static constexpr uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < kMinimum[length] || code_point > 0x10FFFF ||
      (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    return 0;
  }
  return length;
}

}  // namespace

std::string JsonEscape(std::string_view text) {
  std::string escaped;
  escaped.reserve(text.size() + 8);
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '"':
        escaped += "\\\"";
        break;
      case '\\':
        escaped += "\\\\";
        break;
      case '\n':
        escaped += "\\n";
        break;
      case '\r':
        escaped += "\\r";
        break;
      case '\t':
        escaped += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          static constexpr char kHex[] = "0123456789abcdef";
          escaped += "\\u00";
          escaped += kHex[c >> 4];
          escaped += kHex[c & 0xF];
        } else if (c < 0x80) {
          escaped += static_cast<char>(c);
        } else {
          const size_t length = Utf8SequenceLength(text.substr(i));
          if (length == 0) {
            escaped += "\xEF\xBF\xBD";  // U+FFFD for one bad byte
          } else {
            escaped.append(text.substr(i, length));
            i += length;
            continue;
          }
        }
    }
    ++i;
  }
  return escaped;
}

ScopedRequestId::ScopedRequestId(std::string_view request_id)
    : previous_(std::move(current_request_id)) {
  current_request_id.assign(request_id.data(), request_id.size());
}

ScopedRequestId::~ScopedRequestId() { current_request_id = std::move(previous_); }

const std::string& CurrentRequestId() { return current_request_id; }

absl::StatusOr<std::unique_ptr<spdlog::formatter>> MakeLogFormatter(std::string_view format) {
  std::string pattern;
  spdlog::pattern_time_type time_type = spdlog::pattern_time_type::local;
  if (format == "json") {
    pattern = R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","pid":%P%k,"msg":"%j"})";
    time_type = spdlog::pattern_time_type::utc;
  } else if (format == "text") {
    pattern = "%Y-%m-%d %H:%M:%S.%e %^%L%$ %P %q%v";
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format: unknown format '", std::string(format), "' (text, json)"));
  }
  auto formatter = std::make_unique<spdlog::pattern_formatter>(time_type);
  formatter->add_flag<EscapedMessage>(kEscapedMessageFlag);
  formatter->add_flag<JsonRequestId>(kJsonRequestIdFlag);
  formatter->add_flag<TextRequestId>(kTextRequestIdFlag);
  formatter->set_pattern(std::move(pattern));
  return formatter;
}

absl::Status InitLogging(std::string_view format, std::string_view level) {
  const spdlog::level::level_enum parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat("--log-level: unknown level '",
                                                   std::string(level),
                                                   "' (trace, debug, info, warn, error, off)"));
  }
  absl::StatusOr<std::unique_ptr<spdlog::formatter>> formatter = MakeLogFormatter(format);
  if (!formatter.ok()) return formatter.status();
  auto logger = spdlog::stderr_color_mt("strata");
  logger->set_formatter(*std::move(formatter));
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

}  // namespace strata
