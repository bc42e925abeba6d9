// What strata-bench sends: prompts as token ids (random ids in [3, vocab), so
// no tokenizer is needed and special ids 0..2 never occur), output lengths
// fixed by max_tokens with ignore_eos, optionally a shared-prefix workload
// where every request starts with the long "system prompt" of one of G groups.
//
// Requests are a pure function of (seed, run, index): every run of a sweep
// gets its own prompts and prefixes, so a prefix cache warmed by one run never
// flatters the next, and the same flags give the same requests.
//
// Thread-safety: immutable after Create; Make() may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::bench {

struct WorkloadOptions {
  // Tokens of each request's own prompt (after the shared prefix, if any).
  int32_t prompt_tokens = 128;
  // Tokens each request generates (max_tokens with ignore_eos).
  int32_t max_tokens = 64;
  // Draw each request's prompt and output lengths uniformly from
  // [n/2, 3n/2] instead of using exactly n.
  bool uniform_lengths = false;
  // With groups > 0: request i starts with group (i mod groups)'s prefix of
  // shared_prefix_tokens ids.
  int32_t shared_prefix_groups = 0;
  int32_t shared_prefix_tokens = 0;
  uint64_t seed = 0;
};

struct BenchRequest {
  std::vector<int32_t> prompt_ids;
  int32_t max_tokens = 0;
  int32_t group = -1;  // shared-prefix group, -1 without one
};

class Workload {
 public:
  // INVALID_ARGUMENT naming the flag for non-positive lengths, a shared prefix
  // with 0 tokens or 0 groups, or a vocabulary of 3 ids or fewer.
  static absl::StatusOr<Workload> Create(const WorkloadOptions& options, int32_t vocab_size);

  // Request `index` of run `run`.
  BenchRequest Make(uint32_t run, uint64_t index) const;

  const WorkloadOptions& options() const { return options_; }
  int32_t vocab_size() const { return vocab_size_; }

 private:
  Workload(const WorkloadOptions& options, int32_t vocab_size)
      : options_(options), vocab_size_(vocab_size) {}
  void AppendRandomIds(uint64_t stream, int32_t count, std::vector<int32_t>& ids) const;

  WorkloadOptions options_;
  int32_t vocab_size_;
};

}  // namespace strata::bench
