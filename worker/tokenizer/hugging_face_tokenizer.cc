#include "worker/tokenizer/hugging_face_tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/tokenizer/json_fields.h"
#include "worker/tokenizer/unicode.h"

namespace strata::tokenizer {
namespace {

using nlohmann::json;

// Reads and parses a JSON file; errors name the file.
absl::StatusOr<json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open tokenizer file: ", std::strerror(errno)));
  }
  std::ostringstream content;
  content << in.rdbuf();
  try {
    return json::parse(content.str());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
}

absl::Status WithFile(const std::string& path, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(path, ": ", std::string(status.message())));
}

// A token named in tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
absl::StatusOr<std::optional<std::string>> ConfigTokenName(const json& config,
                                                           std::string_view key) {
  const json* field = FindField(config, key);
  if (field == nullptr) return std::optional<std::string>();
  if (field->is_string()) return std::optional<std::string>(field->get<std::string>());
  if (const json* content = FindField(*field, "content");
      content != nullptr && content->is_string()) {
    return std::optional<std::string>(content->get<std::string>());
  }
  return FieldError("", key, "must be a token string or {\"content\": ...}");
}

}  // namespace

absl::StatusOr<std::unique_ptr<HuggingFaceTokenizer>> HuggingFaceTokenizer::Load(
    const std::string& tokenizer_json) {
  STRATA_ASSIGN_OR_RETURN(json tokenizer, ReadJsonFile(tokenizer_json));
  json config;  // null when there is no tokenizer_config.json
  const std::filesystem::path config_path =
      std::filesystem::path(tokenizer_json).parent_path() / "tokenizer_config.json";
  std::error_code error;
  if (std::filesystem::is_regular_file(config_path, error)) {
    STRATA_ASSIGN_OR_RETURN(config, ReadJsonFile(config_path.string()));
  }
  absl::StatusOr<std::unique_ptr<HuggingFaceTokenizer>> built;
  try {
    built = FromJson(tokenizer, json());
    if (built.ok() && !config.is_null()) {
      if (absl::Status status = (*built)->ApplyTokenizerConfig(config); !status.ok()) {
        return WithFile(config_path.string(), status);
      }
    }
  } catch (const json::exception& e) {  // a field of an unexpected JSON type
    built = absl::InvalidArgumentError(e.what());
  }
  if (!built.ok()) return WithFile(tokenizer_json, built.status());
  return built;
}

absl::StatusOr<std::unique_ptr<HuggingFaceTokenizer>> HuggingFaceTokenizer::FromJson(
    const json& tokenizer, const json& config) {
  if (!tokenizer.is_object()) return FieldError("", "", "the top level must be an object");
  auto result = std::unique_ptr<HuggingFaceTokenizer>(new HuggingFaceTokenizer());
  if (const json* normalizer = FindField(tokenizer, "normalizer"); normalizer != nullptr) {
    STRATA_ASSIGN_OR_RETURN(result->normalizer_, ParseNormalizer(*normalizer, "normalizer"));
  }
  if (const json* pre_tokenizer = FindField(tokenizer, "pre_tokenizer"); pre_tokenizer != nullptr) {
    STRATA_ASSIGN_OR_RETURN(result->pre_tokenizer_,
                            ParsePreTokenizer(*pre_tokenizer, "pre_tokenizer"));
  }
  const json* model = FindField(tokenizer, "model");
  if (model == nullptr) return FieldError("", "model", "missing");
  STRATA_ASSIGN_OR_RETURN(result->model_, BpeModel::FromJson(*model, "model"));
  const json* added_tokens = FindField(tokenizer, "added_tokens");
  STRATA_ASSIGN_OR_RETURN(
      result->added_, AddedVocabulary::FromJson(added_tokens != nullptr ? *added_tokens : json(),
                                                result->normalizer_.get(), "added_tokens"));
  if (const json* decoder = FindField(tokenizer, "decoder"); decoder != nullptr) {
    STRATA_ASSIGN_OR_RETURN(result->decoder_, ParseDecoder(*decoder, "decoder"));
  }
  const HuggingFaceTokenizer* self = result.get();
  const json* post_processor = FindField(tokenizer, "post_processor");
  STRATA_ASSIGN_OR_RETURN(
      result->special_template_,
      ParsePostProcessor(
          post_processor != nullptr ? *post_processor : json(),
          [self](std::string_view token) { return self->TokenToId(token); }, "post_processor"));
  result->vocab_size_ = std::max(result->model_->max_id(), result->added_.max_id()) + 1;
  if (!result->special_template_.prefix.empty()) {
    result->bos_id_ = result->special_template_.prefix.front();
  }
  for (const auto* side : {&result->special_template_.prefix, &result->special_template_.suffix}) {
    for (int32_t id : *side) {
      if (id < 0 || id >= result->vocab_size_) {
        return FieldError("post_processor", "",
                          absl::StrCat("id ", id, " is not in the vocabulary"));
      }
    }
  }
  if (!config.is_null()) STRATA_RETURN_IF_ERROR(result->ApplyTokenizerConfig(config));
  return result;
}

absl::Status HuggingFaceTokenizer::ApplyTokenizerConfig(const json& config) {
  const std::string where;  // errors name the file, then the field
  if (!config.is_object()) return FieldError(where, "", "the top level must be an object");
  auto resolve = [&](std::string_view key) -> absl::StatusOr<std::optional<int32_t>> {
    absl::StatusOr<std::optional<std::string>> name = ConfigTokenName(config, key);
    if (!name.ok()) return FieldError(where, key, "must be a token string or {\"content\": ...}");
    if (!name->has_value()) return std::optional<int32_t>();
    std::optional<int32_t> id = TokenToId(**name);
    if (!id.has_value()) {
      return FieldError(where, key, absl::StrCat("\"", **name, "\" is not in the vocabulary"));
    }
    return id;
  };
  STRATA_ASSIGN_OR_RETURN(std::optional<int32_t> bos, resolve("bos_token"));
  STRATA_ASSIGN_OR_RETURN(std::optional<int32_t> eos, resolve("eos_token"));
  if (bos.has_value()) bos_id_ = bos;
  if (eos.has_value()) eos_id_ = eos;
  // Llama-style configs decide BOS/EOS themselves, overriding the template.
  if (FindField(config, "add_bos_token") != nullptr) {
    STRATA_ASSIGN_OR_RETURN(bool add_bos, OptionalBool(config, "add_bos_token", false, where));
    if (add_bos && !bos_id_.has_value()) {
      return FieldError(where, "add_bos_token", "is true but there is no bos_token");
    }
    special_template_.prefix.clear();
    if (add_bos) special_template_.prefix.push_back(*bos_id_);
  }
  if (FindField(config, "add_eos_token") != nullptr) {
    STRATA_ASSIGN_OR_RETURN(bool add_eos, OptionalBool(config, "add_eos_token", false, where));
    if (add_eos && !eos_id_.has_value()) {
      return FieldError(where, "add_eos_token", "is true but there is no eos_token");
    }
    special_template_.suffix.clear();
    if (add_eos) special_template_.suffix.push_back(*eos_id_);
  }
  return absl::OkStatus();
}

std::optional<int32_t> HuggingFaceTokenizer::TokenToId(std::string_view token) const {
  if (std::optional<int32_t> id = added_.FindByContent(token); id.has_value()) return id;
  return model_->TokenToId(token);
}

const std::string* HuggingFaceTokenizer::TokenString(int32_t id) const {
  if (const AddedToken* token = added_.FindById(id); token != nullptr) return &token->content;
  return model_->IdToToken(id);
}

std::vector<int32_t> HuggingFaceTokenizer::Encode(std::string_view text,
                                                  bool add_special_tokens) const {
  std::string repaired;
  if (ValidUtf8PrefixLength(text) != text.size()) {
    repaired = Utf8Lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (add_special_tokens) {
    ids.insert(ids.end(), special_template_.prefix.begin(), special_template_.prefix.end());
  }
  for (const TextSegment& segment : added_.Split(text, /*raw=*/true)) {
    if (segment.added_token_id.has_value()) {
      ids.push_back(*segment.added_token_id);
    } else if (segment.begin < segment.end) {
      EncodeSegment(text.substr(segment.begin, segment.end - segment.begin), segment.begin == 0,
                    ids);
    }
  }
  if (add_special_tokens) {
    ids.insert(ids.end(), special_template_.suffix.begin(), special_template_.suffix.end());
  }
  return ids;
}

void HuggingFaceTokenizer::EncodeSegment(std::string_view text, bool at_text_start,
                                         std::vector<int32_t>& ids) const {
  const std::string normalized =
      normalizer_ != nullptr ? normalizer_->Normalize(std::string(text)) : std::string(text);
  for (const TextSegment& segment : added_.Split(normalized, /*raw=*/false)) {
    if (segment.added_token_id.has_value()) {
      ids.push_back(*segment.added_token_id);
      continue;
    }
    if (segment.begin == segment.end) continue;
    std::vector<PreToken> pieces;
    pieces.push_back(PreToken{normalized.substr(segment.begin, segment.end - segment.begin),
                              at_text_start && segment.begin == 0});
    if (pre_tokenizer_ != nullptr) pre_tokenizer_->PreTokenize(pieces);
    for (const PreToken& piece : pieces) model_->Tokenize(piece.text, ids);
  }
}

std::string HuggingFaceTokenizer::Decode(std::span<const int32_t> ids,
                                         bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = TokenString(id);
    if (token == nullptr) continue;
    if (skip_special_tokens && added_.IsSpecialContent(*token)) continue;
    tokens.push_back(*token);
  }
  std::string text;
  if (decoder_ == nullptr) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) text.push_back(' ');
      text.append(tokens[i]);
    }
    return text;
  }
  for (const std::string& piece : decoder_->DecodeChain(std::move(tokens))) text.append(piece);
  return text;
}

bool HuggingFaceTokenizer::IsSpecial(int32_t id) const {
  const AddedToken* token = added_.FindById(id);
  return token != nullptr && token->special;
}

std::string HuggingFaceTokenizer::IdToToken(int32_t id) const {
  const std::string* token = TokenString(id);
  return token != nullptr ? *token : std::string();
}

bool HuggingFaceTokenizer::DecodeDependsOnNext(int32_t id) const {
  const std::string* token = TokenString(id);
  return decoder_ != nullptr && token != nullptr && decoder_->JoinsFollowingTokens(*token);
}

}  // namespace strata::tokenizer
