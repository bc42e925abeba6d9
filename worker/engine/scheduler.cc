#include "worker/engine/scheduler.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/engine/check.h"
#include "worker/engine/request_validator.h"

namespace strata::engine {

absl::Status ValidateSchedulerOptions(const SchedulerOptions& options) {
  if (options.max_running_sequences < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_running_sequences must be >= 1, got ", options.max_running_sequences));
  }
  if (options.max_batched_tokens < options.max_running_sequences) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_batched_tokens (", options.max_batched_tokens, ") must be >= max_running_sequences (",
        options.max_running_sequences, ") so every running sequence can decode each step"));
  }
  if (!(options.admission_watermark >= 0.0 && options.admission_watermark < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("admission_watermark must be in [0, 1), got ", options.admission_watermark));
  }
  return absl::OkStatus();
}

int32_t StepPlan::num_tokens() const {
  int32_t total = 0;
  for (const ScheduledChunk& chunk : chunks) total += chunk.num_tokens;
  return total;
}

Scheduler::Scheduler(const SchedulerOptions& options, int32_t num_blocks, int32_t block_size)
    : options_(options),
      blocks_(num_blocks, block_size, options.enable_prefix_caching),
      watermark_blocks_(
          static_cast<int32_t>(std::floor(num_blocks * options.admission_watermark))) {
  const absl::Status valid = ValidateSchedulerOptions(options_);
  STRATA_CHECK(valid.ok(), std::string(valid.message()));
}

bool Scheduler::GoesBefore(const Sequence* a, const Sequence* b) {
  if (a->priority() != b->priority()) return a->priority() > b->priority();
  return a->arrival_order() < b->arrival_order();
}

absl::Status Scheduler::Enqueue(Sequence* sequence) {
  STRATA_CHECK(sequence->state == Sequence::State::kNew,
               absl::StrCat(sequence->request_id(), " enqueued twice"));
  const int64_t needed = KvTokensNeeded(sequence->prompt_len(), sequence->max_tokens());
  const int64_t capacity = static_cast<int64_t>(blocks_.num_total()) * blocks_.block_size();
  if (needed > capacity) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "prompt (", sequence->prompt_len(), " tokens) plus max_tokens (", sequence->max_tokens(),
        ") needs ", needed, " KV cache positions but the whole cache holds ", capacity));
  }
  InsertWaiting(sequence);
  return absl::OkStatus();
}

void Scheduler::InsertWaiting(Sequence* sequence) {
  auto position = std::find_if(waiting_.begin(), waiting_.end(), [&](const Sequence* queued) {
    return GoesBefore(sequence, queued);
  });
  waiting_.insert(position, sequence);
  sequence->state = Sequence::State::kWaiting;
}

void Scheduler::Remove(Sequence* sequence) {
  switch (sequence->state) {
    case Sequence::State::kWaiting:
      waiting_.erase(std::find(waiting_.begin(), waiting_.end(), sequence));
      break;
    case Sequence::State::kRunning:
      running_.erase(std::find(running_.begin(), running_.end(), sequence));
      ReleaseBlocks(*sequence);
      break;
    case Sequence::State::kNew:
    case Sequence::State::kRemoved:
      return;
  }
  sequence->state = Sequence::State::kRemoved;
  sequence->in_flight = false;
}

void Scheduler::ReleaseBlocks(Sequence& sequence) {
  blocks_.Release(sequence.block_table);
  sequence.block_table.clear();
  sequence.num_registered_blocks = 0;
  sequence.num_computed = 0;
}

void Scheduler::HashBlocks(Sequence& sequence, int32_t count) const {
  const int32_t block_size = blocks_.block_size();
  const std::span<const int32_t> tokens = sequence.token_ids();
  while (static_cast<int32_t>(sequence.block_hashes.size()) < count) {
    const size_t index = sequence.block_hashes.size();
    const uint64_t parent = index == 0 ? KvBlockManager::kRootHash : sequence.block_hashes.back();
    sequence.block_hashes.push_back(
        KvBlockManager::HashBlock(parent, tokens.subspan(index * block_size, block_size)));
  }
}

StepPlan Scheduler::Schedule(std::chrono::system_clock::time_point now, int32_t max_sequences) {
  StepPlan plan;
  ExpireDeadlines(now, plan);
  planned_.clear();
  int32_t budget = options_.max_batched_tokens;

  // Preemption edits running_, so walk a copy and skip what left it.
  const std::vector<Sequence*> running = running_;
  auto full = [&plan, max_sequences] {
    return static_cast<int64_t>(plan.chunks.size()) >= max_sequences;
  };
  auto schedulable = [this](const Sequence* sequence) {
    return sequence->state == Sequence::State::kRunning && !sequence->in_flight &&
           !planned_.contains(sequence);
  };
  // Decodes: one token each.
  for (Sequence* sequence : running) {
    if (budget < 1 || full()) break;
    if (!schedulable(sequence) || sequence->num_uncomputed() != 1) continue;
    ScheduleRunning(sequence, 1, plan, budget);
  }
  // Prefill chunks of running sequences (new prompts, or recomputation after
  // a preemption).
  bool prefill_planned = false;
  for (Sequence* sequence : running) {
    if (budget < 1 || full()) break;
    if (!schedulable(sequence) || sequence->num_uncomputed() < 2) continue;
    const std::optional<int32_t> chunk =
        PrefillChunk(sequence->num_uncomputed(), budget, prefill_planned);
    if (!chunk.has_value()) continue;
    if (ScheduleRunning(sequence, *chunk, plan, budget)) prefill_planned = true;
  }
  // Admissions, unless this step had to preempt: there is no room to spare.
  if (plan.preempted.empty()) {
    while (!full() && AdmitHead(plan, budget, prefill_planned)) prefill_planned = true;
  }
  for (const ScheduledChunk& chunk : plan.chunks) chunk.sequence->in_flight = true;
  planned_.clear();
  return plan;
}

void Scheduler::ExpireDeadlines(std::chrono::system_clock::time_point now, StepPlan& plan) {
  auto expired = [now](const Sequence* sequence) {
    return !sequence->in_flight && sequence->deadline().has_value() && *sequence->deadline() <= now;
  };
  std::vector<Sequence*> leaving;
  for (Sequence* sequence : running_) {
    if (expired(sequence)) leaving.push_back(sequence);
  }
  for (Sequence* sequence : waiting_) {
    if (expired(sequence)) leaving.push_back(sequence);
  }
  for (Sequence* sequence : leaving) {
    Remove(sequence);
    plan.expired.push_back(sequence);
  }
}

bool Scheduler::ScheduleRunning(Sequence* sequence, int32_t num_tokens, StepPlan& plan,
                                int32_t& budget) {
  const int32_t needed =
      KvBlockManager::BlocksForTokens(sequence->num_computed + num_tokens, blocks_.block_size()) -
      static_cast<int32_t>(sequence->block_table.size());
  while (blocks_.num_free() < needed) {
    Sequence* victim = PickVictim();
    if (victim == nullptr) return false;  // only in-flight sequences hold blocks: wait
    Preempt(victim, plan, budget);
    if (victim == sequence) return false;
  }
  for (int32_t i = 0; i < needed; ++i) sequence->block_table.push_back(blocks_.Allocate());
  plan.chunks.push_back({sequence, num_tokens});
  planned_.insert(sequence);
  budget -= num_tokens;
  return true;
}

std::optional<int32_t> Scheduler::PrefillChunk(int32_t uncomputed, int32_t budget,
                                               bool prefill_planned) const {
  if (uncomputed <= budget) return uncomputed;
  if (options_.chunked_prefill) return budget;
  if (prefill_planned) return std::nullopt;
  return uncomputed;
}

bool Scheduler::AdmitHead(StepPlan& plan, int32_t& budget, bool prefill_planned) {
  if (waiting_.empty() || budget < 1 || num_running() >= options_.max_running_sequences) {
    return false;
  }
  Sequence* sequence = waiting_.front();
  const int32_t block_size = blocks_.block_size();
  // Whole cached blocks within the first num_tokens - 1 tokens: the last
  // token is always computed, for its logits.
  std::vector<int32_t> hits;
  if (blocks_.prefix_caching_enabled()) {
    const int32_t lookup_blocks = (sequence->num_tokens() - 1) / block_size;
    HashBlocks(*sequence, lookup_blocks);
    hits =
        blocks_.MatchPrefix(std::span<const uint64_t>(sequence->block_hashes).first(lookup_blocks),
                            sequence->token_ids());
  }
  const int32_t num_hits = static_cast<int32_t>(hits.size());
  const int32_t computed = num_hits * block_size;
  const int32_t uncomputed = sequence->num_tokens() - computed;
  const std::optional<int32_t> prefill = PrefillChunk(uncomputed, budget, prefill_planned);
  if (!prefill.has_value()) return false;
  const int32_t chunk = *prefill;
  // Admit only when the whole prompt (or recomputation) fits next to what the
  // running prefills still need; otherwise its later chunks would soon
  // preempt it again. Blocks are still taken chunk by chunk.
  const int32_t prompt_blocks =
      KvBlockManager::BlocksForTokens(sequence->num_tokens(), block_size) - num_hits;
  const int32_t watermark = running_.empty() ? 0 : watermark_blocks_;
  if (prompt_blocks + PendingPrefillBlocks() >
      blocks_.num_free() - blocks_.CountUnreferenced(hits) - watermark) {
    return false;
  }
  const int32_t new_blocks =
      KvBlockManager::BlocksForTokens(computed + chunk, block_size) - num_hits;

  waiting_.pop_front();
  for (int32_t id : hits) blocks_.Acquire(id);
  sequence->block_table = std::move(hits);
  sequence->num_registered_blocks = num_hits;
  for (int32_t i = 0; i < new_blocks; ++i) sequence->block_table.push_back(blocks_.Allocate());
  sequence->num_computed = computed;
  sequence->state = Sequence::State::kRunning;
  if (sequence->cached_prompt_tokens < 0) {
    sequence->cached_prompt_tokens = std::min(computed, sequence->prompt_len());
  }
  if (blocks_.prefix_caching_enabled()) {
    prefix_cache_queries_ += sequence->num_tokens();
    prefix_cache_hits_ += computed;
  }
  running_.insert(std::find_if(running_.begin(), running_.end(),
                               [&](const Sequence* other) { return GoesBefore(sequence, other); }),
                  sequence);
  plan.chunks.push_back({sequence, chunk});
  planned_.insert(sequence);
  budget -= chunk;
  return true;
}

int32_t Scheduler::PendingPrefillBlocks() const {
  int32_t pending = 0;
  for (const Sequence* sequence : running_) {
    pending +=
        std::max(0, KvBlockManager::BlocksForTokens(sequence->num_tokens(), blocks_.block_size()) -
                        static_cast<int32_t>(sequence->block_table.size()));
  }
  return pending;
}

Sequence* Scheduler::PickVictim() const {
  for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
    if (!(*it)->in_flight) return *it;
  }
  return nullptr;
}

void Scheduler::Preempt(Sequence* victim, StepPlan& plan, int32_t& budget) {
  if (planned_.erase(victim) > 0) {
    auto chunk = std::find_if(plan.chunks.begin(), plan.chunks.end(),
                              [victim](const ScheduledChunk& c) { return c.sequence == victim; });
    budget += chunk->num_tokens;
    plan.chunks.erase(chunk);
  }
  running_.erase(std::find(running_.begin(), running_.end(), victim));
  ReleaseBlocks(*victim);
  InsertWaiting(victim);
  ++victim->num_preemptions;
  ++num_preemptions_;
  plan.preempted.push_back(victim);
}

void Scheduler::CompleteChunk(const ScheduledChunk& chunk) {
  Sequence& sequence = *chunk.sequence;
  STRATA_CHECK(sequence.state == Sequence::State::kRunning && sequence.in_flight,
               absl::StrCat(sequence.request_id(), " completed but not in flight"));
  sequence.in_flight = false;
  sequence.num_computed += chunk.num_tokens;
  STRATA_CHECK(sequence.num_computed <= sequence.num_tokens(),
               absl::StrCat(sequence.request_id(), " computed past its tokens"));
  if (!blocks_.prefix_caching_enabled()) return;
  const int32_t block_size = blocks_.block_size();
  const int32_t full_blocks = sequence.num_computed / block_size;
  HashBlocks(sequence, full_blocks);
  for (int32_t i = sequence.num_registered_blocks; i < full_blocks; ++i) {
    blocks_.Register(sequence.block_table[i], sequence.block_hashes[i],
                     sequence.token_ids().subspan(static_cast<size_t>(i) * block_size, block_size));
  }
  sequence.num_registered_blocks = std::max(sequence.num_registered_blocks, full_blocks);
}

}  // namespace strata::engine
