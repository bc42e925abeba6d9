#include "worker/tokenizer/json_fields.h"

#include "absl/strings/str_cat.h"

namespace strata::tokenizer {

std::string FieldPath(const std::string& where, std::string_view key) {
  if (key.empty()) return where;
  if (where.empty()) return std::string(key);
  return absl::StrCat(where, ".", std::string(key));
}

absl::Status FieldError(const std::string& where, std::string_view key, std::string_view problem) {
  const std::string path = FieldPath(where, key);
  if (path.empty()) return absl::InvalidArgumentError(std::string(problem));
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", std::string(problem)));
}

const nlohmann::json* FindField(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(std::string(key));
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::string> RequiredString(const nlohmann::json& object, std::string_view key,
                                           const std::string& where) {
  const nlohmann::json* field = FindField(object, key);
  if (field == nullptr) return FieldError(where, key, "missing");
  if (!field->is_string()) return FieldError(where, key, "must be a string");
  return field->get<std::string>();
}

absl::StatusOr<std::string> OptionalString(const nlohmann::json& object, std::string_view key,
                                           std::string_view fallback, const std::string& where) {
  const nlohmann::json* field = FindField(object, key);
  if (field == nullptr) return std::string(fallback);
  if (!field->is_string()) return FieldError(where, key, "must be a string");
  return field->get<std::string>();
}

absl::StatusOr<bool> OptionalBool(const nlohmann::json& object, std::string_view key, bool fallback,
                                  const std::string& where) {
  const nlohmann::json* field = FindField(object, key);
  if (field == nullptr) return fallback;
  if (!field->is_boolean()) return FieldError(where, key, "must be true or false");
  return field->get<bool>();
}

absl::StatusOr<int64_t> OptionalInt(const nlohmann::json& object, std::string_view key,
                                    int64_t fallback, const std::string& where) {
  const nlohmann::json* field = FindField(object, key);
  if (field == nullptr) return fallback;
  if (!field->is_number_integer()) return FieldError(where, key, "must be an integer");
  return field->get<int64_t>();
}

absl::StatusOr<std::unique_ptr<Regex>> RequiredPattern(const nlohmann::json& object,
                                                       std::string_view key,
                                                       const std::string& where) {
  const nlohmann::json* pattern = FindField(object, key);
  if (pattern == nullptr) return FieldError(where, key, "missing");
  const std::string path = FieldPath(where, key);
  // Older files write a plain string for a String pattern.
  if (pattern->is_string()) return Regex::Compile(pattern->get<std::string>(), /*literal=*/true);
  if (const nlohmann::json* text = FindField(*pattern, "String"); text != nullptr) {
    if (!text->is_string()) return FieldError(path, "String", "must be a string");
    return Regex::Compile(text->get<std::string>(), /*literal=*/true);
  }
  if (const nlohmann::json* regex = FindField(*pattern, "Regex"); regex != nullptr) {
    if (!regex->is_string()) return FieldError(path, "Regex", "must be a string");
    absl::StatusOr<std::unique_ptr<Regex>> compiled =
        Regex::Compile(regex->get<std::string>(), /*literal=*/false);
    if (!compiled.ok()) return FieldError(path, "Regex", std::string(compiled.status().message()));
    return compiled;
  }
  return FieldError(where, key, "must be {\"Regex\": ...} or {\"String\": ...}");
}

}  // namespace strata::tokenizer
