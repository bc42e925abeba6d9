#include "worker/engine/batching_engine.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/metrics_catalogue.h"
#include "spdlog/spdlog.h"
#include "worker/engine/check.h"

namespace strata::engine {

absl::StatusOr<std::unique_ptr<BatchingEngine>> BatchingEngine::Create(
    std::unique_ptr<model::Model> model, std::unique_ptr<tokenizer::Tokenizer> tokenizer,
    const SchedulerOptions& options) {
  if (model == nullptr || tokenizer == nullptr) {
    return absl::InvalidArgumentError("engine needs a model and a tokenizer");
  }
  if (absl::Status valid = ValidateSchedulerOptions(options); !valid.ok()) return valid;
  if (model->kv_num_blocks() <= 0 || model->kv_block_size() <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("model has no KV cache (",
                                                      model->kv_num_blocks(), " blocks of ",
                                                      model->kv_block_size(), " tokens)"));
  }
  if (model->config().vocab_size <= 0 || model->config().max_position_embeddings <= 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("model config has vocab_size ", model->config().vocab_size,
                     " and max_position_embeddings ", model->config().max_position_embeddings));
  }
  return std::unique_ptr<BatchingEngine>(
      new BatchingEngine(std::move(model), std::move(tokenizer), options));
}

BatchingEngine::BatchingEngine(std::unique_ptr<model::Model> model,
                               std::unique_ptr<tokenizer::Tokenizer> tokenizer,
                               const SchedulerOptions& options)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      scheduler_(options, model_->kv_num_blocks(), model_->kv_block_size()),
      max_running_sequences_(options.max_running_sequences),
      step_seconds_(metrics::StepDurationBuckets()),
      step_tokens_(metrics::BatchSizeBuckets()),
      step_sequences_(metrics::BatchSizeBuckets()) {
  limits_.vocab_size = model_->config().vocab_size;
  limits_.max_context = model_->config().max_position_embeddings;
  limits_.kv_capacity_tokens =
      static_cast<int64_t>(model_->kv_num_blocks()) * model_->kv_block_size();
  {
    absl::MutexLock lock(&mu_);
    stats_.kv_blocks_total = scheduler_.blocks().num_total();
    stats_.kv_blocks_free = scheduler_.blocks().num_free();
    stats_.step_seconds = step_seconds_;
    stats_.step_tokens = step_tokens_;
    stats_.step_sequences = step_sequences_;
  }
  step_thread_ = std::thread([this] { StepLoop(); });
}

BatchingEngine::~BatchingEngine() { Shutdown(); }

absl::Status BatchingEngine::Submit(GenerationRequest request, OutputCallback on_output) {
  if (!on_output) return absl::InvalidArgumentError("on_output callback is empty");
  // Validation and tokenization run on the caller's thread, outside the lock.
  absl::StatusOr<PreparedPrompt> prepared = PrepareRequest(request, *tokenizer_, limits_);
  if (!prepared.ok()) return prepared.status();

  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("engine is shutting down");
  std::string request_id = request.request_id;
  if (request_id.empty()) {
    do {
      request_id = absl::StrCat("req-", next_generated_id_++);
    } while (in_flight_ids_.contains(request_id));
  } else if (in_flight_ids_.contains(request_id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("request_id \"", request_id, "\" is already in flight"));
  }
  in_flight_ids_.insert(request_id);
  incoming_.push_back(std::make_unique<Sequence>(
      std::move(request_id), request, *std::move(prepared), std::move(on_output),
      model_->config().eos_token_ids, *tokenizer_, next_arrival_++));
  return absl::OkStatus();
}

void BatchingEngine::Cancel(std::string_view request_id) {
  absl::MutexLock lock(&mu_);
  std::string id(request_id);
  if (in_flight_ids_.contains(id)) cancel_requested_.insert(std::move(id));
}

EngineStats BatchingEngine::Stats() const {
  absl::MutexLock lock(&mu_);
  EngineStats stats = stats_;
  stats.waiting += static_cast<int32_t>(incoming_.size());
  return stats;
}

void BatchingEngine::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
  }
  if (step_thread_.joinable()) step_thread_.join();
}

void BatchingEngine::StepLoop() {
  while (true) {
    std::vector<std::unique_ptr<Sequence>> arrivals;
    absl::flat_hash_set<std::string> cancels;
    bool shutting_down = false;
    {
      const bool idle = sequences_.empty() && in_flight_.empty();
      absl::MutexLock lock(&mu_);
      auto has_news = [this, idle]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return shutting_down_ || !incoming_.empty() || !cancel_requested_.empty() || !idle;
      };
      mu_.Await(absl::Condition(&has_news));
      arrivals.swap(incoming_);
      // Until the next Deliver publishes the scheduler's count, they still count as waiting.
      stats_.waiting += static_cast<int32_t>(arrivals.size());
      cancels.swap(cancel_requested_);
      shutting_down = shutting_down_;
    }
    std::vector<Delivery> deliveries;
    for (auto& arrival : arrivals) {
      Sequence* sequence = arrival.get();
      std::string id = sequence->request_id();
      sequences_.emplace(std::move(id), std::move(arrival));
      // PrepareRequest already refused what can never fit; this is the scheduler's own guard.
      if (absl::Status queued = scheduler_.Enqueue(sequence); !queued.ok()) {
        GenerationOutput output;
        sequence->FinishWithError(std::move(queued), output);
        Retire(sequence, std::move(output), deliveries);
      }
    }

    // Cancellations free their resources before the next step, so no step is
    // launched for them; one in a step still running waits for that step.
    deferred_cancels_.insert(cancels.begin(), cancels.end());
    RetireDeferredCancels(deliveries);
    if (shutting_down) {
      while (!in_flight_.empty()) CompleteStep(deliveries);
      CancelAll(deliveries);
      Deliver(deliveries);
      return;
    }

    // Launch steps while the model takes more in flight (a pipeline-parallel
    // replica: one per stage, over disjoint sequences), then complete the
    // oldest.
    const int32_t max_in_flight = std::max(1, model_->max_batches_in_flight());
    while (static_cast<int32_t>(in_flight_.size()) < max_in_flight) {
      // Pipelined: each micro-batch takes an equal share of the sequences, so
      // that every stage has work.
      int32_t share = std::numeric_limits<int32_t>::max();
      if (max_in_flight > 1) {
        const int32_t sequences =
            std::min(scheduler_.num_running() + scheduler_.num_waiting(), max_running_sequences_);
        share = std::max(1, (sequences + max_in_flight - 1) / max_in_flight);
      }
      const StepPlan plan = scheduler_.Schedule(std::chrono::system_clock::now(), share);
      for (Sequence* sequence : plan.expired) {
        GenerationOutput output;
        sequence->FinishWithError(
            absl::DeadlineExceededError(absl::StrCat("deadline passed after ",
                                                     sequence->num_output(), " generated tokens")),
            output);
        Retire(sequence, std::move(output), deliveries);
      }
      if (plan.chunks.empty()) break;
      LaunchStep(plan.chunks);
    }
    // Every accepted request fits the whole cache and the step budget covers
    // every running sequence, so with nothing in flight, work left over
    // always yields chunks; otherwise this loop would spin.
    STRATA_CHECK(!in_flight_.empty() || sequences_.empty(),
                 absl::StrCat(sequences_.size(), " sequences but nothing to schedule"));
    if (!in_flight_.empty()) CompleteStep(deliveries);
    RetireDeferredCancels(deliveries);
    Deliver(deliveries);
  }
}

void BatchingEngine::CancelAll(std::vector<Delivery>& deliveries) {
  std::vector<Sequence*> remaining;
  for (auto& [id, sequence] : sequences_) remaining.push_back(sequence.get());
  std::sort(remaining.begin(), remaining.end(), [](const Sequence* a, const Sequence* b) {
    return a->arrival_order() < b->arrival_order();
  });
  for (Sequence* sequence : remaining) {
    GenerationOutput output;
    sequence->FinishWithoutToken(FinishReason::kCancelled, output);
    Retire(sequence, std::move(output), deliveries);
  }
}

void BatchingEngine::LaunchStep(const std::vector<ScheduledChunk>& chunks) {
  model::ForwardBatch batch;
  batch.sequences.reserve(chunks.size());
  const auto now = std::chrono::steady_clock::now();
  for (const ScheduledChunk& chunk : chunks) {
    Sequence& sequence = *chunk.sequence;
    if (!sequence.first_scheduled.has_value()) sequence.first_scheduled = now;
    model::BatchSequence entry;
    entry.first_token = batch.num_tokens();
    entry.num_tokens = chunk.num_tokens;
    entry.context_len = sequence.num_computed + chunk.num_tokens;
    entry.block_table = sequence.block_table;
    entry.wants_logits = entry.context_len == sequence.num_tokens();
    for (int32_t position = sequence.num_computed; position < entry.context_len; ++position) {
      batch.token_ids.push_back(sequence.token_ids()[position]);
      batch.positions.push_back(position);
    }
    batch.sequences.push_back(std::move(entry));
  }
  InFlightStep step;
  step.chunks = chunks;
  step.wants_logits.reserve(chunks.size());
  for (const model::BatchSequence& entry : batch.sequences) {
    step.wants_logits.push_back(entry.wants_logits);
  }
  step.logit_rows = batch.NumLogitRows();
  step.launched_at = now;
  step_tokens_.Observe(batch.num_tokens());
  step_sequences_.Observe(static_cast<double>(chunks.size()));
  // A model that runs one batch at a time computes it here; a pipelined one
  // starts it, and CompleteStep collects the logits.
  step.status = model_->max_batches_in_flight() > 1 ? model_->StartForward(batch)
                                                    : model_->Forward(batch, step.logits);
  step.started = step.status.ok() && model_->max_batches_in_flight() > 1;
  ++steps_;
  in_flight_.push_back(std::move(step));
}

void BatchingEngine::CompleteStep(std::vector<Delivery>& deliveries) {
  InFlightStep step = std::move(in_flight_.front());
  in_flight_.pop_front();
  FinishStep(step, deliveries);
  step_seconds_.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - step.launched_at).count());
}

void BatchingEngine::FinishStep(InFlightStep& step, std::vector<Delivery>& deliveries) {
  absl::Status status = step.status;
  if (step.started) status = model_->FinishForward(step.logits);
  const int32_t vocab = limits_.vocab_size;
  const size_t expected_logits = static_cast<size_t>(step.logit_rows) * vocab;
  if (status.ok() && step.logits.size() != expected_logits) {
    status = absl::InternalError(
        absl::StrCat("model returned ", step.logits.size(), " logits, expected ", expected_logits));
  }
  if (!status.ok()) {
    // The cache of these sequences is in an unknown state: fail them, keep serving the rest.
    spdlog::error("forward step failed for {} sequences: {}", step.chunks.size(),
                  std::string(status.message()));
    for (const ScheduledChunk& chunk : step.chunks) {
      GenerationOutput output;
      chunk.sequence->FinishWithError(status, output);
      Retire(chunk.sequence, std::move(output), deliveries);
    }
    return;
  }

  size_t row = 0;
  for (size_t i = 0; i < step.chunks.size(); ++i) {
    Sequence& sequence = *step.chunks[i].sequence;
    const int32_t before = sequence.num_computed;
    scheduler_.CompleteChunk(step.chunks[i]);
    prompt_tokens_ += std::max(0, std::min(sequence.num_computed, sequence.prompt_len()) -
                                      std::min(before, sequence.prompt_len()));
    if (!step.wants_logits[i]) continue;
    GenerationOutput output;
    sequence.AppendFromLogits(std::span<float>(step.logits.data() + row * vocab, vocab), output);
    ++row;
    ++generated_tokens_;
    if (sequence.finished()) {
      Retire(&sequence, std::move(output), deliveries);
    } else {
      ReportFirstScheduled(sequence, output);
      deliveries.push_back({sequence.on_output(), std::move(output)});
    }
  }
}

void BatchingEngine::ReportFirstScheduled(Sequence& sequence, GenerationOutput& output) {
  if (sequence.first_scheduled_reported) return;
  sequence.first_scheduled_reported = true;
  output.first_scheduled = sequence.first_scheduled;
}

void BatchingEngine::RetireDeferredCancels(std::vector<Delivery>& deliveries) {
  for (auto it = deferred_cancels_.begin(); it != deferred_cancels_.end();) {
    auto found = sequences_.find(*it);
    if (found == sequences_.end()) {
      deferred_cancels_.erase(it++);
      continue;
    }
    if (found->second->in_flight) {
      ++it;
      continue;
    }
    GenerationOutput output;
    found->second->FinishWithoutToken(FinishReason::kCancelled, output);
    Retire(found->second.get(), std::move(output), deliveries);
    deferred_cancels_.erase(it++);
  }
}

void BatchingEngine::Retire(Sequence* sequence, GenerationOutput output,
                            std::vector<Delivery>& deliveries) {
  STRATA_CHECK(sequence->finished(), "retiring an unfinished sequence");
  ReportFirstScheduled(*sequence, output);
  scheduler_.Remove(sequence);
  deliveries.push_back({sequence->on_output(), std::move(output)});
  std::string request_id = sequence->request_id();
  ++requests_finished_;
  cached_tokens_ += std::max(0, sequence->cached_prompt_tokens);
  sequences_.erase(request_id);  // destroys *sequence
  retired_ids_.push_back(std::move(request_id));
}

void BatchingEngine::Deliver(std::vector<Delivery>& deliveries) {
  {
    absl::MutexLock lock(&mu_);
    for (const std::string& id : retired_ids_) {
      in_flight_ids_.erase(id);
      cancel_requested_.erase(id);
    }
    const KvBlockManager& blocks = scheduler_.blocks();
    stats_.running = scheduler_.num_running();
    stats_.waiting = scheduler_.num_waiting();
    stats_.kv_blocks_free = blocks.num_free();
    stats_.kv_blocks_used = blocks.num_used();
    stats_.kv_blocks_cached = blocks.num_cached();
    // The held prefixes (for routers' load reports) cost a walk over every
    // block: refreshed at most every 100 ms, not every step.
    const auto now = std::chrono::steady_clock::now();
    if (now - prefix_hashes_refreshed_ >= std::chrono::milliseconds(100)) {
      stats_.prefix_block_hashes = blocks.PrefixHashes();
      prefix_hashes_refreshed_ = now;
    }
    stats_.preemptions = scheduler_.num_preemptions();
    stats_.prefix_cache_queries = scheduler_.prefix_cache_queries();
    stats_.prefix_cache_hits = scheduler_.prefix_cache_hits();
    stats_.cached_tokens = cached_tokens_;
    stats_.requests_finished = requests_finished_;
    stats_.prompt_tokens = prompt_tokens_;
    stats_.generated_tokens = generated_tokens_;
    stats_.steps = steps_;
    stats_.step_seconds = step_seconds_;
    stats_.step_tokens = step_tokens_;
    stats_.step_sequences = step_sequences_;
  }
  retired_ids_.clear();
  for (Delivery& delivery : deliveries) (*delivery.callback)(std::move(delivery.output));
  deliveries.clear();
}

}  // namespace strata::engine
