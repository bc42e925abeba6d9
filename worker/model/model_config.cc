#include "worker/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace strata::model {
namespace {

using Json = nlohmann::json;

constexpr const char* kSupportedArchitectures[] = {"LlamaForCausalLM", "MistralForCausalLM",
                                                   "Qwen2ForCausalLM"};

absl::Status FieldError(const std::string& source, const std::string& field,
                        const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field '", field, "' ", problem));
}

bool Present(const Json& json, const char* key) {
  auto it = json.find(key);
  return it != json.end() && !it->is_null();
}

// An integer field; accepts floats with an integral value (some exporters
// write 4096.0).
absl::StatusOr<std::optional<int64_t>> OptionalInt(const Json& json, const char* key,
                                                   const std::string& source) {
  if (!Present(json, key)) return std::optional<int64_t>();
  const Json& value = json.at(key);
  if (value.is_number_integer()) return std::optional<int64_t>(value.get<int64_t>());
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
      return std::optional<int64_t>(static_cast<int64_t>(d));
    }
  }
  return FieldError(source, key, absl::StrCat("must be an integer, got ", value.dump()));
}

absl::StatusOr<int32_t> RequiredPositiveInt(const Json& json, const char* key,
                                            const std::string& source) {
  STRATA_ASSIGN_OR_RETURN(std::optional<int64_t> value, OptionalInt(json, key, source));
  if (!value.has_value()) return FieldError(source, key, "is missing");
  if (*value <= 0 || *value > INT32_MAX) {
    return FieldError(source, key, absl::StrCat("must be a positive integer, got ", *value));
  }
  return static_cast<int32_t>(*value);
}

absl::StatusOr<std::optional<double>> OptionalNumber(const Json& json, const char* key,
                                                     const std::string& source) {
  if (!Present(json, key)) return std::optional<double>();
  const Json& value = json.at(key);
  if (!value.is_number()) {
    return FieldError(source, key, absl::StrCat("must be a number, got ", value.dump()));
  }
  return std::optional<double>(value.get<double>());
}

absl::StatusOr<std::optional<bool>> OptionalBool(const Json& json, const char* key,
                                                 const std::string& source) {
  if (!Present(json, key)) return std::optional<bool>();
  const Json& value = json.at(key);
  if (!value.is_boolean()) {
    return FieldError(source, key, absl::StrCat("must be true or false, got ", value.dump()));
  }
  return std::optional<bool>(value.get<bool>());
}

// eos_token_id: an integer, a list of integers, or null.
absl::Status AppendTokenIds(const Json& json, const char* key, const std::string& source,
                            std::vector<int32_t>& ids) {
  if (!Present(json, key)) return absl::OkStatus();
  const Json& value = json.at(key);
  std::vector<Json> items;
  if (value.is_array()) {
    items.assign(value.begin(), value.end());
  } else {
    items.push_back(value);
  }
  for (const Json& item : items) {
    if (!item.is_number_integer() || item.get<int64_t>() < 0 || item.get<int64_t>() > INT32_MAX) {
      return FieldError(
          source, key,
          absl::StrCat("must be a token id or a list of token ids, got ", value.dump()));
    }
    const auto id = static_cast<int32_t>(item.get<int64_t>());
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  return absl::OkStatus();
}

absl::StatusOr<Json> ParseJson(const std::string& text, const std::string& source) {
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a JSON object"));
  }
  return json;
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open (missing file?)"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return text.str();
}

absl::StatusOr<std::string> ResolveArchitecture(const Json& json, const std::string& source) {
  std::string architecture;
  if (Present(json, "architectures")) {
    const Json& list = json.at("architectures");
    if (!list.is_array() || list.empty() || !list.front().is_string()) {
      return FieldError(source, "architectures",
                        absl::StrCat("must be a non-empty list of names, got ", list.dump()));
    }
    architecture = list.front().get<std::string>();
  } else if (Present(json, "model_type") && json.at("model_type").is_string()) {
    // Older exports name only the model type.
    const std::string type = json.at("model_type").get<std::string>();
    if (type == "llama") architecture = "LlamaForCausalLM";
    if (type == "mistral") architecture = "MistralForCausalLM";
    if (type == "qwen2") architecture = "Qwen2ForCausalLM";
    if (architecture.empty()) architecture = type;
  } else {
    return FieldError(source, "architectures", "is missing");
  }
  for (const char* supported : kSupportedArchitectures) {
    if (architecture == supported) return architecture;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": unsupported architecture '", architecture,
                   "' (supported: ", absl::StrJoin(kSupportedArchitectures, ", "), ")"));
}

absl::StatusOr<std::optional<RopeScaling>> ParseRopeScaling(const Json& json,
                                                            const std::string& source) {
  if (!Present(json, "rope_scaling")) return std::optional<RopeScaling>();
  const Json& value = json.at("rope_scaling");
  if (!value.is_object()) {
    return FieldError(source, "rope_scaling",
                      absl::StrCat("must be an object or null, got ", value.dump()));
  }
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    if (Present(value, key) && value.at(key).is_string()) {
      type = value.at(key).get<std::string>();
      break;
    }
  }
  if (type == "default") return std::optional<RopeScaling>();
  if (type != "llama3") {
    return FieldError(
        source, "rope_scaling",
        absl::StrCat("has type '", type, "', which is not supported (supported: llama3)"));
  }
  RopeScaling scaling;
  scaling.type = type;
  const std::string field_source = absl::StrCat(source, " (rope_scaling)");
  STRATA_ASSIGN_OR_RETURN(auto factor, OptionalNumber(value, "factor", field_source));
  STRATA_ASSIGN_OR_RETURN(auto low, OptionalNumber(value, "low_freq_factor", field_source));
  STRATA_ASSIGN_OR_RETURN(auto high, OptionalNumber(value, "high_freq_factor", field_source));
  STRATA_ASSIGN_OR_RETURN(auto original,
                          OptionalInt(value, "original_max_position_embeddings", field_source));
  if (factor) scaling.factor = static_cast<float>(*factor);
  if (low) scaling.low_freq_factor = static_cast<float>(*low);
  if (high) scaling.high_freq_factor = static_cast<float>(*high);
  if (original) scaling.original_max_position_embeddings = static_cast<int32_t>(*original);
  if (!(scaling.factor > 0) || !(scaling.low_freq_factor > 0) ||
      !(scaling.high_freq_factor > scaling.low_freq_factor) ||
      scaling.original_max_position_embeddings <= 0) {
    return FieldError(source, "rope_scaling",
                      absl::StrCat("has invalid llama3 parameters: ", value.dump()));
  }
  return std::optional<RopeScaling>(scaling);
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const std::string& json_text,
                                                  const std::string& source) {
  STRATA_ASSIGN_OR_RETURN(Json json, ParseJson(json_text, source));
  ModelConfig config;
  STRATA_ASSIGN_OR_RETURN(config.architecture, ResolveArchitecture(json, source));
  if (Present(json, "model_type") && json.at("model_type").is_string()) {
    config.model_type = json.at("model_type").get<std::string>();
  }
  STRATA_ASSIGN_OR_RETURN(config.hidden_size, RequiredPositiveInt(json, "hidden_size", source));
  STRATA_ASSIGN_OR_RETURN(config.intermediate_size,
                          RequiredPositiveInt(json, "intermediate_size", source));
  STRATA_ASSIGN_OR_RETURN(config.num_hidden_layers,
                          RequiredPositiveInt(json, "num_hidden_layers", source));
  STRATA_ASSIGN_OR_RETURN(config.num_attention_heads,
                          RequiredPositiveInt(json, "num_attention_heads", source));
  STRATA_ASSIGN_OR_RETURN(config.vocab_size, RequiredPositiveInt(json, "vocab_size", source));
  STRATA_ASSIGN_OR_RETURN(config.max_position_embeddings,
                          RequiredPositiveInt(json, "max_position_embeddings", source));
  config.num_key_value_heads = config.num_attention_heads;
  if (Present(json, "num_key_value_heads")) {
    STRATA_ASSIGN_OR_RETURN(config.num_key_value_heads,
                            RequiredPositiveInt(json, "num_key_value_heads", source));
  }
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    return FieldError(
        source, "num_key_value_heads",
        absl::StrCat("(", config.num_key_value_heads, ") must divide num_attention_heads (",
                     config.num_attention_heads, ")"));
  }
  if (Present(json, "head_dim")) {
    STRATA_ASSIGN_OR_RETURN(config.head_dim, RequiredPositiveInt(json, "head_dim", source));
  } else {
    if (config.hidden_size % config.num_attention_heads != 0) {
      return FieldError(
          source, "hidden_size",
          absl::StrCat("(", config.hidden_size, ") must be a multiple of num_attention_heads (",
                       config.num_attention_heads, ") when head_dim is not given"));
    }
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }
  if (config.head_dim % 2 != 0) {
    return FieldError(source, "head_dim",
                      absl::StrCat("must be even for rotary embeddings, got ", config.head_dim));
  }
  STRATA_ASSIGN_OR_RETURN(auto eps, OptionalNumber(json, "rms_norm_eps", source));
  if (eps) config.rms_norm_eps = static_cast<float>(*eps);
  if (!(config.rms_norm_eps > 0)) {
    return FieldError(source, "rms_norm_eps", absl::StrCat("must be positive, got ", *eps));
  }
  STRATA_ASSIGN_OR_RETURN(auto theta, OptionalNumber(json, "rope_theta", source));
  if (theta) config.rope_theta = static_cast<float>(*theta);
  if (!(config.rope_theta > 0)) {
    return FieldError(source, "rope_theta", absl::StrCat("must be positive, got ", *theta));
  }
  STRATA_ASSIGN_OR_RETURN(config.rope_scaling, ParseRopeScaling(json, source));
  STRATA_ASSIGN_OR_RETURN(auto attention_bias, OptionalBool(json, "attention_bias", source));
  config.attention_bias =
      attention_bias.value_or(false) || config.architecture == "Qwen2ForCausalLM";
  STRATA_ASSIGN_OR_RETURN(auto mlp_bias, OptionalBool(json, "mlp_bias", source));
  if (mlp_bias.value_or(false)) {
    return FieldError(source, "mlp_bias", "is true, which is not supported");
  }
  if (Present(json, "hidden_act")) {
    const Json& act = json.at("hidden_act");
    if (!act.is_string() || act.get<std::string>() != "silu") {
      return FieldError(source, "hidden_act", absl::StrCat("must be \"silu\", got ", act.dump()));
    }
  }
  STRATA_ASSIGN_OR_RETURN(auto tie, OptionalBool(json, "tie_word_embeddings", source));
  config.tie_word_embeddings = tie.value_or(false);
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (!Present(json, key)) continue;
    const Json& value = json.at(key);
    auto dtype = value.is_string() ? ParseDType(value.get<std::string>())
                                   : absl::InvalidArgumentError("not a string");
    if (!dtype.ok()) {
      return FieldError(source, key,
                        absl::StrCat("must be float32, float16 or bfloat16, got ", value.dump()));
    }
    config.torch_dtype = *dtype;
    break;
  }
  STRATA_ASSIGN_OR_RETURN(auto bos, OptionalInt(json, "bos_token_id", source));
  if (bos) {
    if (*bos < 0 || *bos > INT32_MAX) {
      return FieldError(source, "bos_token_id", absl::StrCat("must be a token id, got ", *bos));
    }
    config.bos_token_id = static_cast<int32_t>(*bos);
  }
  STRATA_RETURN_IF_ERROR(AppendTokenIds(json, "eos_token_id", source, config.eos_token_ids));
  return config;
}

absl::StatusOr<ModelConfig> ModelConfig::FromDirectory(const std::string& dir) {
  const std::string config_path = absl::StrCat(dir, "/config.json");
  STRATA_ASSIGN_OR_RETURN(std::string text, ReadTextFile(config_path));
  STRATA_ASSIGN_OR_RETURN(ModelConfig config, FromJson(text, config_path));
  const std::string generation_path = absl::StrCat(dir, "/generation_config.json");
  std::ifstream probe(generation_path);
  if (!probe) return config;  // optional file
  STRATA_ASSIGN_OR_RETURN(std::string generation_text, ReadTextFile(generation_path));
  STRATA_ASSIGN_OR_RETURN(Json generation, ParseJson(generation_text, generation_path));
  STRATA_RETURN_IF_ERROR(
      AppendTokenIds(generation, "eos_token_id", generation_path, config.eos_token_ids));
  if (!config.bos_token_id.has_value()) {
    STRATA_ASSIGN_OR_RETURN(auto bos, OptionalInt(generation, "bos_token_id", generation_path));
    if (bos && *bos >= 0 && *bos <= INT32_MAX) config.bos_token_id = static_cast<int32_t>(*bos);
  }
  return config;
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t hidden = hidden_size;
  const int64_t q_dim = static_cast<int64_t>(num_attention_heads) * head_dim;
  const int64_t kv_dim = static_cast<int64_t>(num_key_value_heads) * head_dim;
  int64_t per_layer = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden  // q, k, v, o
                      + 3 * hidden * intermediate_size                       // gate, up, down
                      + 2 * hidden;                                          // norms
  if (attention_bias) per_layer += q_dim + 2 * kv_dim;
  int64_t total =
      per_layer * num_hidden_layers + static_cast<int64_t>(vocab_size) * hidden + hidden;
  if (!tie_word_embeddings) total += static_cast<int64_t>(vocab_size) * hidden;
  return total;
}

}  // namespace strata::model
