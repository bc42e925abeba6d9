// A worker process on the GPU, through the CUDA backend module: every
// reference prompt of the bundled model streams its reference greedy ids over
// gRPC, and /metrics is served beside it. Labelled "gpu"; skips without a
// device (cuda_module_worker_test covers that case).
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/reference_cases.h"
#include "tests/integration/test_servers.h"
#include "worker/backend/cuda/cuda_backend.h"

namespace strata::testing {
namespace {

TEST(CudaWorkerTest, ServesTheReferenceGreedyIdsFromTheGpu) {
  if (!backend::CudaBackend::DeviceCount().ok()) {
    GTEST_SKIP() << "no CUDA device: " << backend::CudaBackend::DeviceCount().status();
  }
  TempDir logs;
  auto worker = LaunchWorker(STRATA_MODEL_DIR, {"--device", "cuda"}, logs.path());
  ASSERT_TRUE(worker.ok()) << worker.status();
  ASSERT_TRUE(WaitUntilServing(*worker).ok()) << worker->process->Stderr();
  for (const ReferenceCase& reference : LoadReference()) {
    SCOPED_TRACE(absl::StrCat("prompt '", reference.prompt, "'"));
    v1::GenerateRequest request = ReferenceRequest(reference);
    request.mutable_token_ids()->mutable_ids()->Add(reference.prompt_ids.begin(),
                                                    reference.prompt_ids.end());
    const Generation generation = Generate(worker->address, request);
    ASSERT_TRUE(generation.status.ok()) << generation.status;
    EXPECT_THAT(generation.ids, ::testing::ElementsAreArray(ExpectedIds(reference)));
  }
  auto metrics = HttpGet(worker->metrics_address, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(MetricValue(*metrics, "strata_model_loaded"), 1.0);
  EXPECT_NE(worker->process->Stderr().find("cuda backend on device"), std::string::npos)
      << worker->process->Stderr();
}

}  // namespace
}  // namespace strata::testing
