// Typed access to tokenizer.json fields with errors that name the field, for
// the parsers of each tokenizer stage. `where` is the JSON location of
// `object` (e.g. "pre_tokenizer.pretokenizers[1]"); errors read
// "<where>.<key>: <problem>".
//
// Thread-safety: pure functions.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/regex.h"

namespace strata::tokenizer {

// An InvalidArgument error "<where>.<key>: <problem>" ("<where>: ..." when
// `key` is empty, just the problem when both are).
absl::Status FieldError(const std::string& where, std::string_view key, std::string_view problem);

// The member `key` of `object`, or nullptr when `object` is not an object or
// the member is absent or null.
const nlohmann::json* FindField(const nlohmann::json& object, std::string_view key);

absl::StatusOr<std::string> RequiredString(const nlohmann::json& object, std::string_view key,
                                           const std::string& where);
absl::StatusOr<std::string> OptionalString(const nlohmann::json& object, std::string_view key,
                                           std::string_view fallback, const std::string& where);
absl::StatusOr<bool> OptionalBool(const nlohmann::json& object, std::string_view key, bool fallback,
                                  const std::string& where);
absl::StatusOr<int64_t> OptionalInt(const nlohmann::json& object, std::string_view key,
                                    int64_t fallback, const std::string& where);

// A pattern object {"Regex": "..."} or {"String": "..."} (member `key`).
absl::StatusOr<std::unique_ptr<Regex>> RequiredPattern(const nlohmann::json& object,
                                                       std::string_view key,
                                                       const std::string& where);

// The JSON location of `key` inside `where` ("a.b", or "b" at the top).
std::string FieldPath(const std::string& where, std::string_view key);

}  // namespace strata::tokenizer
