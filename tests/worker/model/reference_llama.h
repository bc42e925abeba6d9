// A plain, obviously-correct Llama forward pass to check the fast one
// against, in the style of llama2.c's run.c: one sequence, one token at a
// time, no paging, no threads, its own simple loops, weights read from the
// safetensors file by a reader of its own and widened to F32 element by
// element through the scalar dtype conversions.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "worker/model/model_config.h"

namespace strata::model::testing {

class ReferenceLlama {
 public:
  // Reads <dir>/config.json and <dir>/model.safetensors. When round_to is
  // set, every matrix is rounded to that dtype (as the fast model does when
  // LoadOptions::weight_dtype converts on load). bf16_activations: when the
  // matrices are BF16, round what they multiply to BF16 too, as the CPU
  // backend's AVX512-BF16 kernels (and PyTorch in BF16) do.
  static absl::StatusOr<ReferenceLlama> Load(const std::string& dir,
                                             std::optional<DType> round_to = std::nullopt,
                                             bool bf16_activations = false);

  const ModelConfig& config() const { return config_; }
  // True when matrices multiply BF16-rounded activations (see Load).
  bool rounds_activations() const { return round_x_; }

  // Runs `token` at position `pos` (positions must come in order 0, 1, 2 ...
  // after Reset) and returns the logits [vocab].
  std::vector<float> Forward(int token, int pos);
  void Reset();

 private:
  struct Layer {
    std::vector<float> input_norm, post_norm;
    std::vector<float> wq, wk, wv, wo;  // [out, in]
    std::vector<float> bq, bk, bv;      // empty without attention bias
    std::vector<float> w_gate, w_up, w_down;
    std::vector<float> key_cache, value_cache;  // [max_positions, kv_dim]
  };

  // out[d] = W[d, n] · x[n] (+ b), x rounded to BF16 first if round_x_.
  void MatVec(float* out, const float* x, const std::vector<float>& w, const std::vector<float>& b,
              int n, int d) const;

  ModelConfig config_;
  bool round_x_ = false;
  std::vector<float> embed_;    // [vocab, hidden]
  std::vector<float> lm_head_;  // [vocab, hidden]
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
};

}  // namespace strata::model::testing
