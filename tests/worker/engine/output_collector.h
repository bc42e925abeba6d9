// Test helper: collects the outputs of one engine request and waits for the
// last one.
//
// Thread-safety: the callback runs on the engine's step thread; the accessors
// may be called from the test thread.
#pragma once

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/engine/engine.h"

namespace strata::engine {

class OutputCollector {
 public:
  Engine::OutputCallback Callback() {
    return [this](GenerationOutput output) {
      absl::MutexLock lock(&mu_);
      if (output.finished) finished_ = true;
      outputs_.push_back(std::move(output));
    };
  }

  // True when the last output arrived within `timeout`.
  bool WaitFinished(absl::Duration timeout = absl::Seconds(60)) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&finished_), timeout);
  }

  std::vector<GenerationOutput> outputs() const {
    absl::MutexLock lock(&mu_);
    return outputs_;
  }
  GenerationOutput last() const {
    absl::MutexLock lock(&mu_);
    return outputs_.empty() ? GenerationOutput{} : outputs_.back();
  }
  std::vector<int32_t> token_ids() const {
    absl::MutexLock lock(&mu_);
    std::vector<int32_t> ids;
    for (const auto& output : outputs_) {
      ids.insert(ids.end(), output.token_ids.begin(), output.token_ids.end());
    }
    return ids;
  }
  std::string text() const {
    absl::MutexLock lock(&mu_);
    std::string text;
    for (const auto& output : outputs_) text += output.text;
    return text;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<GenerationOutput> outputs_;
  bool finished_ = false;
};

}  // namespace strata::engine
