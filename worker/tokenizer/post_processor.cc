#include "worker/tokenizer/post_processor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "worker/tokenizer/json_fields.h"

namespace strata::tokenizer {
namespace {

using nlohmann::json;

// The ids of special token `name` from TemplateProcessing's "special_tokens".
absl::StatusOr<std::vector<int32_t>> TemplateSpecialIds(const json& config, const std::string& name,
                                                        const std::string& where) {
  const json* specials = FindField(config, "special_tokens");
  const json* entry = specials != nullptr ? FindField(*specials, name) : nullptr;
  const json* ids = entry != nullptr ? FindField(*entry, "ids") : nullptr;
  if (ids == nullptr || !ids->is_array()) {
    return FieldError(where, "special_tokens",
                      absl::StrCat("has no ids for \"", name, "\" used in \"single\""));
  }
  std::vector<int32_t> out;
  for (const json& id : *ids) {
    if (!id.is_number_integer()) {
      return FieldError(where, "special_tokens", absl::StrCat("ids of \"", name, "\""));
    }
    out.push_back(id.get<int32_t>());
  }
  return out;
}

absl::StatusOr<SpecialTokenTemplate> ParseTemplate(const json& config, const std::string& where) {
  const json* single = FindField(config, "single");
  if (single == nullptr) return FieldError(where, "single", "missing");
  // Pieces of the template: special token names, or "" for the sequence.
  std::vector<std::string> pieces;
  if (single->is_string()) {  // "<s> $A </s>", optionally with ":type_id"
    for (absl::string_view item :
         absl::StrSplit(single->get<std::string>(), ' ', absl::SkipEmpty())) {
      std::string name(item.substr(0, item.rfind(':')));
      pieces.push_back(name.starts_with("$") ? "" : name);
    }
  } else if (single->is_array()) {
    for (const json& item : *single) {
      if (const json* special = FindField(item, "SpecialToken"); special != nullptr) {
        STRATA_ASSIGN_OR_RETURN(std::string id, RequiredString(*special, "id", where));
        pieces.push_back(id);
      } else if (FindField(item, "Sequence") != nullptr) {
        pieces.push_back("");
      } else {
        return FieldError(where, "single", "items must be SpecialToken or Sequence");
      }
    }
  } else {
    return FieldError(where, "single", "must be a list or a string");
  }
  SpecialTokenTemplate result;
  bool after_sequence = false;
  for (const std::string& piece : pieces) {
    if (piece.empty()) {
      after_sequence = true;
      continue;
    }
    STRATA_ASSIGN_OR_RETURN(std::vector<int32_t> ids, TemplateSpecialIds(config, piece, where));
    auto& side = after_sequence ? result.suffix : result.prefix;
    side.insert(side.end(), ids.begin(), ids.end());
  }
  return result;
}

// The id of a ["token", id] pair (Roberta/Bert "cls" and "sep").
absl::StatusOr<int32_t> PairId(
    const json& config, std::string_view key,
    const std::function<std::optional<int32_t>(std::string_view)>& token_to_id,
    const std::string& where) {
  const json* pair = FindField(config, key);
  if (pair == nullptr || !pair->is_array() || pair->size() != 2 || !(*pair)[0].is_string()) {
    return FieldError(where, key, "must be [\"token\", id]");
  }
  if ((*pair)[1].is_number_integer()) return (*pair)[1].get<int32_t>();
  std::optional<int32_t> id = token_to_id((*pair)[0].get<std::string>());
  if (!id.has_value()) return FieldError(where, key, "token is not in the vocabulary");
  return *id;
}

}  // namespace

absl::StatusOr<SpecialTokenTemplate> ParsePostProcessor(
    const json& config, const std::function<std::optional<int32_t>(std::string_view)>& token_to_id,
    const std::string& where) {
  if (config.is_null()) return SpecialTokenTemplate{};
  STRATA_ASSIGN_OR_RETURN(std::string type, RequiredString(config, "type", where));
  if (type == "ByteLevel") return SpecialTokenTemplate{};
  if (type == "TemplateProcessing") return ParseTemplate(config, where);
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    STRATA_ASSIGN_OR_RETURN(int32_t cls, PairId(config, "cls", token_to_id, where));
    STRATA_ASSIGN_OR_RETURN(int32_t sep, PairId(config, "sep", token_to_id, where));
    return SpecialTokenTemplate{{cls}, {sep}};
  }
  if (type == "Sequence") {
    const json* list = FindField(config, "processors");
    if (list == nullptr || !list->is_array()) {
      return FieldError(where, "processors", "must be a list");
    }
    // Each processor wraps what the ones before it produced.
    SpecialTokenTemplate result;
    for (size_t i = 0; i < list->size(); ++i) {
      STRATA_ASSIGN_OR_RETURN(
          SpecialTokenTemplate stage,
          ParsePostProcessor((*list)[i], token_to_id,
                             absl::StrCat(FieldPath(where, "processors"), "[", i, "]")));
      stage.prefix.insert(stage.prefix.end(), result.prefix.begin(), result.prefix.end());
      result.prefix = std::move(stage.prefix);
      result.suffix.insert(result.suffix.end(), stage.suffix.begin(), stage.suffix.end());
    }
    return result;
  }
  return FieldError(where, "type", absl::StrCat("unsupported post-processor \"", type, "\""));
}

}  // namespace strata::tokenizer
