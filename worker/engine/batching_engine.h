// The engine: one step thread that runs the model over a batch of sequences
// per step (the decode token of every running sequence plus prefill chunks,
// as the Scheduler picks them), samples, applies stop conditions,
// detokenizes and calls each request's output callback.
//
// Life of a request: Submit validates it and encodes the prompt on the
// caller's thread, then queues it; the step thread hands it to the scheduler,
// which admits it when a running slot and KV blocks for its first chunk are
// free (reusing cached blocks of its prompt's prefix); each step feeds its
// uncomputed tokens to Model::Forward and allocates blocks as it grows; the
// logits of its last token give the next one. Under KV pressure it may be
// preempted (blocks freed) and later recomputed; that is invisible in its
// output. When it finishes (stop, eos, length, cancel, deadline, error) its
// blocks are released before its last output is delivered, so Stats() read
// from that callback already shows them free.
//
// Pipelining: a model that takes several batches in flight
// (Model::max_batches_in_flight, a pipeline-parallel replica) gets up to that
// many steps launched over disjoint sequences (the scheduler keeps in-flight
// sequences out of later batches) before the oldest is completed, so that its
// stages overlap. A cancel of a sequence in flight waits for its step.
//
// Thread-safety: as Engine. Submit, Cancel and Stats take a mutex briefly;
// callbacks run on the step thread without it held, so they may call Cancel
// and Stats (not Shutdown, which joins the step thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "worker/engine/engine.h"
#include "worker/engine/request_validator.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/sequence.h"
#include "worker/model/model.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::engine {

class BatchingEngine final : public Engine {
 public:
  // Starts the step thread. Fails when the options are inconsistent or the
  // model reports no KV cache.
  static absl::StatusOr<std::unique_ptr<BatchingEngine>> Create(
      std::unique_ptr<model::Model> model, std::unique_ptr<tokenizer::Tokenizer> tokenizer,
      const SchedulerOptions& options);

  ~BatchingEngine() override;

  absl::Status Submit(GenerationRequest request, OutputCallback on_output) override;
  void Cancel(std::string_view request_id) override;
  EngineStats Stats() const override;
  const tokenizer::Tokenizer& tokenizer() const override { return *tokenizer_; }
  const model::ModelConfig& model_config() const override { return model_->config(); }
  void Shutdown() override;

 private:
  // An output waiting to be delivered once the step's bookkeeping is done.
  struct Delivery {
    std::shared_ptr<Engine::OutputCallback> callback;
    GenerationOutput output;
  };

  BatchingEngine(std::unique_ptr<model::Model> model,
                 std::unique_ptr<tokenizer::Tokenizer> tokenizer, const SchedulerOptions& options);

  // A step launched and not yet completed.
  struct InFlightStep {
    std::vector<ScheduledChunk> chunks;
    std::vector<bool> wants_logits;  // per chunk
    int32_t logit_rows = 0;
    absl::Status status;        // of Forward or StartForward
    bool started = false;       // StartForward succeeded: FinishForward gives the logits
    std::vector<float> logits;  // [logit_rows, vocab]
    std::chrono::steady_clock::time_point launched_at;
  };

  void StepLoop();
  // Builds the batch of `chunks` and runs it (Forward) or starts it
  // (StartForward, when the model pipelines); queues it in in_flight_.
  void LaunchStep(const std::vector<ScheduledChunk>& chunks);
  // Collects the oldest step's logits and samples; finished sequences are
  // retired into `deliveries`. Records the step's duration.
  void CompleteStep(std::vector<Delivery>& deliveries);
  // CompleteStep's work on `step`, taken off in_flight_.
  void FinishStep(InFlightStep& step, std::vector<Delivery>& deliveries);
  // Puts when the sequence was first scheduled on its first output.
  static void ReportFirstScheduled(Sequence& sequence, GenerationOutput& output);
  // Retires cancelled sequences that no running step holds.
  void RetireDeferredCancels(std::vector<Delivery>& deliveries);
  // Finishes every sequence as cancelled, oldest first (shutdown).
  void CancelAll(std::vector<Delivery>& deliveries);
  // Frees a finished sequence's resources and queues its last output.
  void Retire(Sequence* sequence, GenerationOutput output, std::vector<Delivery>& deliveries);
  // Publishes counts to Stats(), forgets retired request ids, then calls the
  // callbacks in order without the mutex.
  void Deliver(std::vector<Delivery>& deliveries);

  std::unique_ptr<model::Model> model_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  RequestLimits limits_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Sequence>> incoming_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> cancel_requested_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> in_flight_ids_ ABSL_GUARDED_BY(mu_);
  EngineStats stats_ ABSL_GUARDED_BY(mu_);  // as of the last published step
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_arrival_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_generated_id_ ABSL_GUARDED_BY(mu_) = 0;

  // Owned by the step thread.
  Scheduler scheduler_;
  const int32_t max_running_sequences_;
  absl::flat_hash_map<std::string, std::unique_ptr<Sequence>> sequences_;
  std::vector<std::string> retired_ids_;               // finished since the last Deliver
  std::deque<InFlightStep> in_flight_;                 // launch order
  absl::flat_hash_set<std::string> deferred_cancels_;  // cancelled, not retired yet
  uint64_t steps_ = 0;
  std::chrono::steady_clock::time_point prefix_hashes_refreshed_;
  uint64_t requests_finished_ = 0;
  uint64_t prompt_tokens_ = 0;
  uint64_t generated_tokens_ = 0;
  uint64_t cached_tokens_ = 0;
  // Per step, published to Stats() by Deliver: wall time, tokens, sequences.
  HistogramCounts step_seconds_;
  HistogramCounts step_tokens_;
  HistogramCounts step_sequences_;

  std::thread step_thread_;
};

}  // namespace strata::engine
