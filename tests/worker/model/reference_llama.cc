#include "tests/worker/model/reference_llama.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <numbers>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace strata::model::testing {
namespace {

// The simplest safetensors reading there is: the whole file in memory.
class TensorFile {
 public:
  absl::Status Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(path);
    std::ostringstream s;
    s << in.rdbuf();
    bytes_ = s.str();
    uint64_t n = 0;
    std::memcpy(&n, bytes_.data(), 8);
    header_ = nlohmann::json::parse(bytes_.substr(8, n));
    data_start_ = 8 + n;
    return absl::OkStatus();
  }
  bool Has(const std::string& name) const { return header_.contains(name); }
  std::string StoredDType(const std::string& name) const {
    return header_.at(name).at("dtype").get<std::string>();
  }

  std::vector<float> Get(const std::string& name, std::optional<DType> round_to) const {
    const auto& entry = header_.at(name);
    const std::string dtype = entry.at("dtype");
    const size_t begin = entry.at("data_offsets")[0];
    const size_t end = entry.at("data_offsets")[1];
    const char* p = bytes_.data() + data_start_ + begin;
    std::vector<float> out;
    if (dtype == "F32") {
      out.resize((end - begin) / 4);
      std::memcpy(out.data(), p, end - begin);
    } else {
      out.resize((end - begin) / 2);
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = dtype == "BF16" ? Bf16ToF32(h) : F16ToF32(h);
      }
    }
    if (round_to == DType::kBF16) {
      for (float& v : out) v = Bf16ToF32(F32ToBf16(v));
    } else if (round_to == DType::kF16) {
      for (float& v : out) v = F16ToF32(F32ToF16(v));
    }
    return out;
  }

 private:
  std::string bytes_;
  nlohmann::json header_;
  size_t data_start_ = 0;
};

void RmsNorm(float* out, const float* x, const float* w, int n, float eps) {
  float ss = 0.0f;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  ss = 1.0f / std::sqrt(ss / n + eps);
  for (int i = 0; i < n; ++i) out[i] = w[i] * (ss * x[i]);
}

// Hugging Face rotate-half: pairs (i, i + half) of each head.
void Rotate(float* vec, int heads, int head_dim, int pos, const std::vector<float>& inv_freq) {
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    float* v = vec + h * head_dim;
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos) * inv_freq[i];
      const float c = std::cos(angle);
      const float s = std::sin(angle);
      const float a = v[i];
      const float b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

}  // namespace

void ReferenceLlama::MatVec(float* out, const float* x, const std::vector<float>& w,
                            const std::vector<float>& b, int n, int d) const {
  std::vector<float> rounded;
  if (round_x_) {
    rounded.resize(n);
    for (int j = 0; j < n; ++j) rounded[j] = Bf16ToF32(F32ToBf16(x[j]));
    x = rounded.data();
  }
  for (int i = 0; i < d; ++i) {
    float sum = 0.0f;
    for (int j = 0; j < n; ++j) sum += w[static_cast<size_t>(i) * n + j] * x[j];
    out[i] = sum + (b.empty() ? 0.0f : b[i]);
  }
}

absl::StatusOr<ReferenceLlama> ReferenceLlama::Load(const std::string& dir,
                                                    std::optional<DType> round_to,
                                                    bool bf16_activations) {
  ReferenceLlama ref;
  auto config = ModelConfig::FromDirectory(dir);
  if (!config.ok()) return config.status();
  ref.config_ = *config;
  const ModelConfig& c = ref.config_;
  TensorFile file;
  if (auto status = file.Read(dir + "/model.safetensors"); !status.ok()) return status;
  const std::optional<DType> no_rounding;
  const bool bf16_matrices =
      round_to.has_value() ? *round_to == DType::kBF16
                           : file.StoredDType("model.layers.0.self_attn.q_proj.weight") == "BF16";
  ref.round_x_ = bf16_activations && bf16_matrices;
  ref.embed_ = file.Get("model.embed_tokens.weight", round_to);
  ref.final_norm_ = file.Get("model.norm.weight", no_rounding);
  ref.lm_head_ = (!c.tie_word_embeddings && file.Has("lm_head.weight"))
                     ? file.Get("lm_head.weight", round_to)
                     : ref.embed_;
  const int kv_dim = c.num_key_value_heads * c.head_dim;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    Layer layer;
    layer.input_norm = file.Get(p + "input_layernorm.weight", no_rounding);
    layer.post_norm = file.Get(p + "post_attention_layernorm.weight", no_rounding);
    layer.wq = file.Get(p + "self_attn.q_proj.weight", round_to);
    layer.wk = file.Get(p + "self_attn.k_proj.weight", round_to);
    layer.wv = file.Get(p + "self_attn.v_proj.weight", round_to);
    layer.wo = file.Get(p + "self_attn.o_proj.weight", round_to);
    if (c.attention_bias) {
      layer.bq = file.Get(p + "self_attn.q_proj.bias", no_rounding);
      layer.bk = file.Get(p + "self_attn.k_proj.bias", no_rounding);
      layer.bv = file.Get(p + "self_attn.v_proj.bias", no_rounding);
    }
    layer.w_gate = file.Get(p + "mlp.gate_proj.weight", round_to);
    layer.w_up = file.Get(p + "mlp.up_proj.weight", round_to);
    layer.w_down = file.Get(p + "mlp.down_proj.weight", round_to);
    layer.key_cache.assign(static_cast<size_t>(c.max_position_embeddings) * kv_dim, 0.0f);
    layer.value_cache.assign(static_cast<size_t>(c.max_position_embeddings) * kv_dim, 0.0f);
    ref.layers_.push_back(std::move(layer));
  }
  // inv_freq[i] = theta^(-2i/d), with Llama 3.1's frequency-dependent scaling.
  for (int i = 0; i < c.head_dim / 2; ++i) {
    float f = 1.0f / std::pow(c.rope_theta, static_cast<float>(2 * i) / c.head_dim);
    if (c.rope_scaling.has_value()) {
      const RopeScaling& s = *c.rope_scaling;
      const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
      const float low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
      const float high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
      if (wavelen < high_wavelen) {
        // high frequency: unchanged
      } else if (wavelen > low_wavelen) {
        f /= s.factor;
      } else {
        const float smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                             (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    ref.inv_freq_.push_back(f);
  }
  return ref;
}

void ReferenceLlama::Reset() {
  for (Layer& layer : layers_) {
    std::fill(layer.key_cache.begin(), layer.key_cache.end(), 0.0f);
    std::fill(layer.value_cache.begin(), layer.value_cache.end(), 0.0f);
  }
}

std::vector<float> ReferenceLlama::Forward(int token, int pos) {
  const ModelConfig& c = config_;
  const int dim = c.hidden_size;
  const int hd = c.head_dim;
  const int q_dim = c.num_attention_heads * hd;
  const int kv_dim = c.num_key_value_heads * hd;
  const int group = c.num_attention_heads / c.num_key_value_heads;
  const std::vector<float> none;

  std::vector<float> x(embed_.begin() + static_cast<size_t>(token) * dim,
                       embed_.begin() + static_cast<size_t>(token + 1) * dim);
  std::vector<float> xb(dim), q(q_dim), att_out(q_dim), proj(dim);
  std::vector<float> hb(c.intermediate_size), hb2(c.intermediate_size);
  std::vector<float> att(pos + 1);

  for (Layer& layer : layers_) {
    RmsNorm(xb.data(), x.data(), layer.input_norm.data(), dim, c.rms_norm_eps);
    float* k = layer.key_cache.data() + static_cast<size_t>(pos) * kv_dim;
    float* v = layer.value_cache.data() + static_cast<size_t>(pos) * kv_dim;
    MatVec(q.data(), xb.data(), layer.wq, layer.bq, dim, q_dim);
    MatVec(k, xb.data(), layer.wk, layer.bk, dim, kv_dim);
    MatVec(v, xb.data(), layer.wv, layer.bv, dim, kv_dim);
    Rotate(q.data(), c.num_attention_heads, hd, pos, inv_freq_);
    Rotate(k, c.num_key_value_heads, hd, pos, inv_freq_);

    for (int h = 0; h < c.num_attention_heads; ++h) {
      const float* qh = q.data() + h * hd;
      const int kv_head = h / group;
      for (int t = 0; t <= pos; ++t) {
        const float* kt = layer.key_cache.data() + static_cast<size_t>(t) * kv_dim + kv_head * hd;
        float score = 0.0f;
        for (int i = 0; i < hd; ++i) score += qh[i] * kt[i];
        att[t] = score / std::sqrt(static_cast<float>(hd));
      }
      float max_val = att[0];
      for (int t = 1; t <= pos; ++t) max_val = std::max(max_val, att[t]);
      float sum = 0.0f;
      for (int t = 0; t <= pos; ++t) {
        att[t] = std::exp(att[t] - max_val);
        sum += att[t];
      }
      float* out = att_out.data() + h * hd;
      std::fill(out, out + hd, 0.0f);
      for (int t = 0; t <= pos; ++t) {
        const float* vt = layer.value_cache.data() + static_cast<size_t>(t) * kv_dim + kv_head * hd;
        for (int i = 0; i < hd; ++i) out[i] += att[t] / sum * vt[i];
      }
    }
    MatVec(proj.data(), att_out.data(), layer.wo, none, q_dim, dim);
    for (int i = 0; i < dim; ++i) x[i] += proj[i];

    RmsNorm(xb.data(), x.data(), layer.post_norm.data(), dim, c.rms_norm_eps);
    MatVec(hb.data(), xb.data(), layer.w_gate, none, dim, c.intermediate_size);
    MatVec(hb2.data(), xb.data(), layer.w_up, none, dim, c.intermediate_size);
    for (int i = 0; i < c.intermediate_size; ++i) {
      hb[i] = hb[i] / (1.0f + std::exp(-hb[i])) * hb2[i];
    }
    MatVec(proj.data(), hb.data(), layer.w_down, none, c.intermediate_size, dim);
    for (int i = 0; i < dim; ++i) x[i] += proj[i];
  }
  RmsNorm(x.data(), x.data(), final_norm_.data(), dim, c.rms_norm_eps);
  std::vector<float> logits(c.vocab_size);
  MatVec(logits.data(), x.data(), lm_head_, none, dim, c.vocab_size);
  return logits;
}

}  // namespace strata::model::testing
