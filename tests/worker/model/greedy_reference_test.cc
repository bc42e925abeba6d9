// Greedy generation at model level from every prompt of the bundled model's
// reference.json (outputs of llama2.c's run.c) reproduces its generated ids
// exactly, one sequence at a time and all prompts batched together.

#include "gtest/gtest.h"
#include "tests/worker/model/model_reference.h"
#include "tests/worker/model/model_runner.h"
#include "worker/model/model.h"

namespace strata::model {
namespace {

using testing::Argmax;
using testing::ModelRunner;
using testing::TestSequence;

using testing::IsStop;
using testing::ReadReference;
using testing::ReferenceCase;

std::unique_ptr<Model> LoadBundled() {
  LoadOptions options;
  options.model_dir = STRATA_MODEL_DIR;
  options.num_threads = 2;
  auto model = Model::Load(options);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(model).value() : nullptr;
}

TEST(GreedyReferenceTest, EveryPromptReproducesGeneratedIds) {
  auto model = LoadBundled();
  ASSERT_NE(model, nullptr);
  const auto cases = ReadReference();
  ASSERT_EQ(cases.size(), 4u);
  for (const ReferenceCase& c : cases) {
    SCOPED_TRACE("prompt '" + c.prompt + "'");
    ModelRunner runner(*model, 17);  // 17 blocks of 16 hold 256 positions
    TestSequence seq = runner.NewSequence();
    auto logits = runner.Feed(seq, c.prompt_ids);
    ASSERT_TRUE(logits.ok()) << logits.status();
    // run.c's logits at the last prompt position.
    ASSERT_EQ(logits->size(), c.first_step_logits.size());
    EXPECT_LE(testing::MaxRelativeError(*logits, c.first_step_logits), 1e-4);
    // run.c runs positions [0, steps): at most steps - len(prompt) + 1 samples.
    const size_t max_new = c.steps - c.prompt_ids.size() + 1;
    std::vector<int32_t> generated = {Argmax(*logits)};
    while (generated.size() < max_new && !IsStop(generated.back())) {
      logits = runner.Feed(seq, {generated.back()});
      ASSERT_TRUE(logits.ok()) << logits.status();
      generated.push_back(Argmax(*logits));
    }
    EXPECT_EQ(generated, c.generated_ids);
  }
}

TEST(GreedyReferenceTest, AllPromptsBatchedTogetherReproduceGeneratedIds) {
  auto model = LoadBundled();
  ASSERT_NE(model, nullptr);
  const auto cases = ReadReference();
  ModelRunner runner(*model, 17);  // 17 blocks of 16 hold 256 positions
  std::vector<TestSequence> seqs;
  for (size_t i = 0; i < cases.size(); ++i) seqs.push_back(runner.NewSequence());
  std::vector<std::vector<int32_t>> generated(cases.size());
  std::vector<size_t> active;
  std::vector<std::vector<int32_t>> chunks;
  for (size_t i = 0; i < cases.size(); ++i) {
    active.push_back(i);
    chunks.push_back(cases[i].prompt_ids);
  }
  while (!active.empty()) {
    std::vector<TestSequence*> batch;
    for (size_t i : active) batch.push_back(&seqs[i]);
    auto rows = runner.Step(batch, chunks);
    ASSERT_TRUE(rows.ok()) << rows.status();
    std::vector<size_t> still_active;
    chunks.clear();
    for (size_t r = 0; r < active.size(); ++r) {
      const size_t i = active[r];
      generated[i].push_back(Argmax((*rows)[r]));
      const size_t max_new = cases[i].steps - cases[i].prompt_ids.size() + 1;
      if (generated[i].size() < max_new && !IsStop(generated[i].back())) {
        still_active.push_back(i);
        chunks.push_back({generated[i].back()});
      }
    }
    active = still_active;
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(generated[i], cases[i].generated_ids) << "prompt '" << cases[i].prompt << "'";
  }
}

}  // namespace
}  // namespace strata::model
