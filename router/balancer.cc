#include "router/balancer.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace strata::router {
namespace {

// KvBlockManager's constants (worker/engine/kv_block_manager.{h,cc}); the
// router cannot include engine headers. tests/worker/service checks that
// both produce the same hashes.
constexpr uint64_t kRootHash = 0x6a09e667f3bcc908ull;
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

uint64_t HashBlock(uint64_t parent, std::span<const int32_t> token_ids) {
  uint64_t hash = MixBits(parent ^ kGolden);
  for (int32_t id : token_ids) {
    hash = MixBits(hash ^ (static_cast<uint64_t>(static_cast<uint32_t>(id)) + kGolden));
  }
  return hash;
}

thread_local std::minstd_rand random_engine{std::random_device{}()};

size_t LeastLoadedIndex(std::span<const std::shared_ptr<Backend>> candidates) {
  size_t best = 0;
  double best_score = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < candidates.size(); ++i) {
    const double score = LoadScore(*candidates[i]);
    if (score < best_score) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

// Power of two choices.
size_t TwoChoices(std::span<const std::shared_ptr<Backend>> candidates) {
  if (candidates.size() == 1) return 0;
  std::uniform_int_distribution<size_t> pick(0, candidates.size() - 1);
  const size_t a = pick(random_engine);
  size_t b = pick(random_engine);
  if (b == a) b = (a + 1) % candidates.size();
  const double score_a = LoadScore(*candidates[a]);
  const double score_b = LoadScore(*candidates[b]);
  if (score_a != score_b) return score_a < score_b ? a : b;
  return std::min(a, b);
}

// Whether candidates[preferred] is within `margin` of the least loaded candidate.
bool WithinMargin(std::span<const std::shared_ptr<Backend>> candidates, size_t preferred,
                  double margin) {
  double least = std::numeric_limits<double>::infinity();
  for (const auto& backend : candidates) least = std::min(least, LoadScore(*backend));
  return LoadScore(*candidates[preferred]) <= least + margin;
}

class RoundRobinBalancer final : public Balancer {
 public:
  std::string_view name() const override { return "round_robin"; }
  Pick Choose(std::span<const std::shared_ptr<Backend>> candidates, const RouteRequest&) override {
    return {next_.fetch_add(1) % candidates.size(), PickReason::kRoundRobin};
  }

 private:
  std::atomic<uint64_t> next_{0};
};

class LeastLoadBalancer final : public Balancer {
 public:
  std::string_view name() const override { return "least_load"; }
  Pick Choose(std::span<const std::shared_ptr<Backend>> candidates, const RouteRequest&) override {
    return {TwoChoices(candidates), PickReason::kLeastLoad};
  }
};

class PrefixAffinityBalancer final : public Balancer {
 public:
  explicit PrefixAffinityBalancer(BalancerOptions options) : options_(options) {}
  std::string_view name() const override { return "prefix_affinity"; }
  bool reads_prompt() const override { return true; }

  Pick Choose(std::span<const std::shared_ptr<Backend>> candidates,
              const RouteRequest& route) override {
    if (route.request == nullptr || candidates.size() == 1) {
      return {TwoChoices(candidates), PickReason::kLeastLoad};
    }
    const v1::GenerateRequest& request = *route.request;
    if (request.has_token_ids() && request.token_ids().ids_size() > 0) {
      const std::span<const int32_t> ids(request.token_ids().ids().data(),
                                         request.token_ids().ids_size());
      if (std::optional<size_t> hit = LongestPrefixHolder(candidates, ids);
          hit && WithinMargin(candidates, *hit, options_.affinity_margin)) {
        return {*hit, PickReason::kPrefixHit};
      }
      const size_t key_tokens =
          std::min<size_t>(ids.size(), static_cast<size_t>(options_.home_key_tokens));
      const size_t home = RendezvousChoice(HashBlock(kRootHash, ids.first(key_tokens)), candidates);
      if (WithinMargin(candidates, home, options_.affinity_margin)) {
        return {home, PickReason::kPrefixHome};
      }
    } else if (request.has_text() && !request.text().empty()) {
      const std::string_view text = request.text();
      const size_t home = RendezvousChoice(
          KeyHash(text.substr(0, static_cast<size_t>(options_.home_key_bytes))), candidates);
      if (WithinMargin(candidates, home, options_.affinity_margin)) {
        return {home, PickReason::kPrefixHome};
      }
    }
    return {LeastLoadedIndex(candidates), PickReason::kLeastLoad};
  }

 private:
  // The candidate holding the most leading blocks of `ids` per its load
  // report; ties go to the rendezvous choice among the tied (the same on
  // every router). nullopt when none holds even the first block.
  std::optional<size_t> LongestPrefixHolder(std::span<const std::shared_ptr<Backend>> candidates,
                                            std::span<const int32_t> ids) {
    size_t best_blocks = 0;
    std::vector<size_t> best;
    int32_t hashed_block_size = 0;
    std::vector<uint64_t> hashes;
    for (size_t i = 0; i < candidates.size(); ++i) {
      const BackendLoad load = candidates[i]->Load();
      if (!load.reported || load.block_size <= 0 || load.prefix_hashes == nullptr ||
          load.prefix_hashes->empty()) {
        continue;
      }
      if (load.block_size != hashed_block_size) {
        hashed_block_size = load.block_size;
        hashes = PrefixBlockHashes(ids, load.block_size, ids.size());
      }
      size_t blocks = 0;
      while (blocks < hashes.size() &&
             std::binary_search(load.prefix_hashes->begin(), load.prefix_hashes->end(),
                                hashes[blocks])) {
        ++blocks;
      }
      if (blocks == 0 || blocks < best_blocks) continue;
      if (blocks > best_blocks) {
        best_blocks = blocks;
        best.clear();
      }
      best.push_back(i);
    }
    if (best.empty()) return std::nullopt;
    if (best.size() == 1) return best[0];
    std::vector<std::shared_ptr<Backend>> tied;
    for (size_t i : best) tied.push_back(candidates[i]);
    return best[RendezvousChoice(hashes.empty() ? kRootHash : hashes[0], tied)];
  }

  const BalancerOptions options_;
};

}  // namespace

uint64_t KeyHash(std::string_view text) {
  uint64_t hash = kRootHash;
  size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    uint64_t word = 0;
    for (size_t b = 0; b < 8; ++b)
      word |= static_cast<uint64_t>(static_cast<uint8_t>(text[i + b])) << (8 * b);
    hash = MixBits(hash ^ word);
  }
  for (; i < text.size(); ++i) hash = MixBits(hash ^ static_cast<uint8_t>(text[i]));
  return MixBits(hash ^ text.size());
}

std::string_view PickReasonName(PickReason reason) {
  switch (reason) {
    case PickReason::kRoundRobin:
      return "round_robin";
    case PickReason::kLeastLoad:
      return "least_load";
    case PickReason::kSession:
      return "session";
    case PickReason::kPrefixHit:
      return "prefix_hit";
    case PickReason::kPrefixHome:
      return "prefix_home";
  }
  return "unknown";
}

double LoadScore(const Backend& backend) {
  const BackendLoad load = backend.Load();
  double score = backend.in_flight();
  if (load.reported) score += load.waiting + load.running + load.kv_usage;
  return score;
}

std::vector<uint64_t> PrefixBlockHashes(std::span<const int32_t> token_ids, int32_t block_size,
                                        size_t max_blocks) {
  std::vector<uint64_t> hashes;
  if (block_size <= 0) return hashes;
  const size_t blocks = std::min(token_ids.size() / static_cast<size_t>(block_size), max_blocks);
  hashes.reserve(blocks);
  uint64_t parent = kRootHash;
  for (size_t i = 0; i < blocks; ++i) {
    parent = HashBlock(parent, token_ids.subspan(i * block_size, block_size));
    hashes.push_back(parent);
  }
  return hashes;
}

size_t RendezvousChoice(uint64_t key, std::span<const std::shared_ptr<Backend>> candidates) {
  size_t best = 0;
  uint64_t best_weight = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const std::string& address = candidates[i]->address();
    const uint64_t weight = MixBits(key ^ KeyHash(address));
    if (i == 0 || weight > best_weight) {
      best = i;
      best_weight = weight;
    }
  }
  return best;
}

absl::StatusOr<std::unique_ptr<Balancer>> CreateBalancer(std::string_view policy,
                                                         BalancerOptions options) {
  if (policy == "round_robin") return std::make_unique<RoundRobinBalancer>();
  if (policy == "least_load") return std::make_unique<LeastLoadBalancer>();
  if (policy == "prefix_affinity") return std::make_unique<PrefixAffinityBalancer>(options);
  return absl::InvalidArgumentError(
      absl::StrCat("--policy: unknown policy \"", std::string(policy),
                   "\"; expected round_robin, least_load or prefix_affinity"));
}

}  // namespace strata::router
