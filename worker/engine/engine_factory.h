// Builds the engine a worker serves: loads the tokenizer and the model from a
// Hugging Face folder, or takes ones the caller built (tests inject fakes).
//
// Thread-safety: CreateEngine may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/engine/engine.h"
#include "worker/engine/fcfs_scheduler.h"
#include "worker/model/model.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::engine {

struct EngineOptions {
  // Model folder, random weights, KV cache size, kernel threads.
  model::LoadOptions model;
  // tokenizer.json or the folder holding it; empty: model.model_dir.
  std::string tokenizer_path;
  SchedulerOptions scheduler;
};

// Loads the tokenizer (Tokenizer::Load) and the model (Model::Load) and starts
// the engine. Errors name the file and the problem.
absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(const EngineOptions& options);

// Starts the engine on a model and tokenizer the caller built; options.model
// and options.tokenizer_path are not used.
absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(
    const EngineOptions& options, std::unique_ptr<model::Model> model,
    std::unique_ptr<tokenizer::Tokenizer> tokenizer);

}  // namespace strata::engine
