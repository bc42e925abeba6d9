#include "bench/load/workload.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace strata::bench {
namespace {

// A random stream per purpose: which run, which request or group, what for.
uint64_t StreamSeed(uint64_t seed, uint64_t run, uint64_t kind, uint64_t index) {
  return MixBits(MixBits(MixBits(MixBits(seed) ^ run) ^ kind) ^ index);
}

constexpr uint64_t kPrefixStream = 1;
constexpr uint64_t kPromptStream = 2;
constexpr uint64_t kLengthStream = 3;

int32_t DrawLength(int32_t n, bool uniform, std::mt19937_64& random) {
  if (!uniform) return n;
  const int32_t low = std::max(1, n / 2);
  const int32_t high = std::max(low, n + n / 2);
  return std::uniform_int_distribution<int32_t>(low, high)(random);
}

}  // namespace

absl::StatusOr<Workload> Workload::Create(const WorkloadOptions& options, int32_t vocab_size) {
  if (options.prompt_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--prompt-tokens must be >= 1, got ", options.prompt_tokens));
  }
  if (options.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-tokens must be >= 1, got ", options.max_tokens));
  }
  if (options.shared_prefix_groups < 0 || options.shared_prefix_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shared-prefix-groups and --shared-prefix-tokens must be >= 0, got ",
                     options.shared_prefix_groups, " and ", options.shared_prefix_tokens));
  }
  if ((options.shared_prefix_groups > 0) != (options.shared_prefix_tokens > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a shared-prefix workload needs both --shared-prefix-groups and --shared-prefix-tokens "
        "(got ",
        options.shared_prefix_groups, " groups of ", options.shared_prefix_tokens, " tokens)"));
  }
  if (vocab_size <= 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model's vocabulary has ", vocab_size, " ids; prompts need more than 3"));
  }
  return Workload(options, vocab_size);
}

void Workload::AppendRandomIds(uint64_t stream, int32_t count, std::vector<int32_t>& ids) const {
  std::mt19937_64 random(stream);
  std::uniform_int_distribution<int32_t> id(3, vocab_size_ - 1);
  for (int32_t i = 0; i < count; ++i) ids.push_back(id(random));
}

BenchRequest Workload::Make(uint32_t run, uint64_t index) const {
  BenchRequest request;
  std::mt19937_64 lengths(StreamSeed(options_.seed, run, kLengthStream, index));
  const int32_t prompt_tokens =
      DrawLength(options_.prompt_tokens, options_.uniform_lengths, lengths);
  request.max_tokens = DrawLength(options_.max_tokens, options_.uniform_lengths, lengths);
  if (options_.shared_prefix_groups > 0) {
    request.group = static_cast<int32_t>(index % options_.shared_prefix_groups);
    AppendRandomIds(StreamSeed(options_.seed, run, kPrefixStream, request.group),
                    options_.shared_prefix_tokens, request.prompt_ids);
  }
  AppendRandomIds(StreamSeed(options_.seed, run, kPromptStream, index), prompt_tokens,
                  request.prompt_ids);
  return request;
}

}  // namespace strata::bench
