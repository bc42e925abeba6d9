#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace strata::engine {
namespace sampling {

void ApplyRepetitionPenalty(std::span<float> logits, const absl::flat_hash_set<int32_t>& seen,
                            float penalty) {
  if (penalty == 1.0f) return;
  const auto vocab = static_cast<int32_t>(logits.size());
  for (int32_t id : seen) {
    if (id < 0 || id >= vocab) continue;
    float& logit = logits[id];
    logit = logit > 0.0f ? logit / penalty : logit * penalty;
  }
}

void ApplyPresenceFrequencyPenalties(std::span<float> logits,
                                     const absl::flat_hash_map<int32_t, int32_t>& counts,
                                     float presence, float frequency) {
  if (presence == 0.0f && frequency == 0.0f) return;
  const auto vocab = static_cast<int32_t>(logits.size());
  for (const auto& [id, count] : counts) {
    if (id < 0 || id >= vocab || count <= 0) continue;
    logits[id] -= presence + frequency * static_cast<float>(count);
  }
}

int32_t Argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(logits.size()); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

double LogSumExp(std::span<const float> logits, std::span<const int32_t> ids) {
  const bool all = ids.empty();
  const size_t n = all ? logits.size() : ids.size();
  float max_logit = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < n; ++i) max_logit = std::max(max_logit, logits[all ? i : ids[i]]);
  if (!std::isfinite(max_logit)) return max_logit;
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i)
    sum += std::exp(static_cast<double>(logits[all ? i : ids[i]]) - max_logit);
  return max_logit + std::log(sum);
}

std::vector<int32_t> KeptTokens(std::span<const float> logits, int32_t top_k, float top_p,
                                float min_p) {
  const auto vocab = static_cast<int32_t>(logits.size());
  auto more_likely = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::vector<int32_t> kept(vocab);
  for (int32_t i = 0; i < vocab; ++i) kept[i] = i;
  const int32_t k = (top_k > 0 && top_k < vocab) ? top_k : vocab;
  std::partial_sort(kept.begin(), kept.begin() + k, kept.end(), more_likely);
  kept.resize(k);

  if (top_p < 1.0f || min_p > 0.0f) {
    // Probabilities over what top_k kept: filters apply in sequence, as vLLM does.
    const double log_z = LogSumExp(logits, kept);
    if (top_p < 1.0f) {
      // The smallest most-likely-first prefix whose mass reaches top_p.
      double mass = 0.0;
      size_t keep = 0;
      while (keep < kept.size()) {
        mass += std::exp(static_cast<double>(logits[kept[keep]]) - log_z);
        ++keep;
        if (mass >= static_cast<double>(top_p)) break;
      }
      kept.resize(std::max<size_t>(keep, 1));
    }
    if (min_p > 0.0f) {
      // p >= min_p * p_max  <=>  logit >= max_logit + log(min_p); renormalising
      // does not change the ratio, so the order of top_p and min_p's
      // normalisation does not matter.
      const double threshold = static_cast<double>(logits[kept[0]]) + std::log(min_p);
      size_t keep = 1;
      while (keep < kept.size() && static_cast<double>(logits[kept[keep]]) >= threshold) ++keep;
      kept.resize(keep);
    }
  }
  return kept;
}

}  // namespace sampling

namespace {

uint64_t RandomSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

// Uniform in [0, 1) from the top 53 bits: the same on every platform, unlike
// std::uniform_real_distribution.
double NextUniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt_ids,
                 bool want_logprobs, int32_t top_logprobs)
    : params_(params),
      want_logprobs_(want_logprobs),
      top_logprobs_(top_logprobs),
      seed_(params.seed.has_value() ? *params.seed : RandomSeed()),
      rng_(seed_) {
  if (params_.repetition_penalty != 1.0f) seen_tokens_.insert(prompt_ids.begin(), prompt_ids.end());
}

SampleResult Sampler::Sample(std::span<float> logits) {
  sampling::ApplyRepetitionPenalty(logits, seen_tokens_, params_.repetition_penalty);
  sampling::ApplyPresenceFrequencyPenalties(logits, output_token_counts_, params_.presence_penalty,
                                            params_.frequency_penalty);
  const auto vocab = static_cast<int32_t>(logits.size());
  SampleResult result;
  // `kept` empty means every token is a candidate.
  std::vector<int32_t> kept;
  double log_z = 0.0;
  if (params_.temperature < sampling::kGreedyTemperature) {
    result.token_id = sampling::Argmax(logits);
    if (want_logprobs_) log_z = sampling::LogSumExp(logits, {});
  } else {
    const float inverse_temperature = 1.0f / params_.temperature;
    for (float& logit : logits) logit *= inverse_temperature;
    const bool filtering = (params_.top_k > 0 && params_.top_k < vocab) || params_.top_p < 1.0f ||
                           params_.min_p > 0.0f;
    if (filtering) kept = sampling::KeptTokens(logits, params_.top_k, params_.top_p, params_.min_p);
    log_z = sampling::LogSumExp(logits, kept);
    // Inverse CDF over the candidates: most likely first when filtered, by id otherwise.
    const double target = NextUniform(rng_);
    const size_t n = kept.empty() ? logits.size() : kept.size();
    double mass = 0.0;
    result.token_id = kept.empty() ? vocab - 1 : kept.back();
    for (size_t i = 0; i < n; ++i) {
      const int32_t id = kept.empty() ? static_cast<int32_t>(i) : kept[i];
      mass += std::exp(static_cast<double>(logits[id]) - log_z);
      if (target < mass) {
        result.token_id = id;
        break;
      }
    }
    // Rounding can leave the total mass just under 1; the fallback above is
    // the last candidate with non-zero probability in that case.
    if (mass <= target && kept.empty()) {
      while (result.token_id > 0 && !std::isfinite(logits[result.token_id])) --result.token_id;
    }
  }

  if (want_logprobs_) {
    TokenLogprobs logprobs;
    logprobs.chosen = {result.token_id,
                       static_cast<float>(static_cast<double>(logits[result.token_id]) - log_z)};
    if (top_logprobs_ > 0) {
      // Most likely first among the tokens with non-zero probability.
      if (kept.empty()) {
        candidates_.resize(vocab);
        for (int32_t i = 0; i < vocab; ++i) candidates_[i] = i;
      } else {
        candidates_ = kept;
      }
      const size_t n = std::min<size_t>(top_logprobs_, candidates_.size());
      std::partial_sort(candidates_.begin(), candidates_.begin() + n, candidates_.end(),
                        [&](int32_t a, int32_t b) {
                          return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
                        });
      for (size_t i = 0; i < n; ++i) {
        const int32_t id = candidates_[i];
        const double logprob = static_cast<double>(logits[id]) - log_z;
        if (!std::isfinite(logprob)) break;
        logprobs.top.push_back({id, static_cast<float>(logprob)});
      }
    }
    result.logprobs = std::move(logprobs);
  }

  if (params_.repetition_penalty != 1.0f) seen_tokens_.insert(result.token_id);
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    ++output_token_counts_[result.token_id];
  }
  return result;
}

}  // namespace strata::engine
