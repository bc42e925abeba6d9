// The worker opens the CUDA backend module (libstrata_backend_cuda.so) at run
// time. These tests need no GPU: they pin that a worker with cuBLAS loaded
// still serves /metrics (linking cuBLAS in made prometheus-cpp's CivetServer
// fail to start), and that --device cuda without a device is refused with
// one actionable line instead of falling back silently.
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/integration/test_servers.h"
#include "worker/backend/cuda/cuda_backend.h"

namespace strata::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(CudaModuleWorkerTest, AutoDeviceLoadsTheModuleAndStillServesMetrics) {
  TempDir logs;
  auto worker = LaunchWorker(STRATA_MODEL_DIR, {"--device", "auto"}, logs.path());
  ASSERT_TRUE(worker.ok()) << worker.status();
  ASSERT_TRUE(WaitUntilServing(*worker).ok()) << worker->process->Stderr();
  // "auto" asked the module for devices: it and cuBLAS are in the process.
  const std::string maps = ReadFile("/proc/" + std::to_string(worker->process->pid()) + "/maps");
  EXPECT_NE(maps.find("libstrata_backend_cuda.so"), std::string::npos);
  EXPECT_NE(maps.find("libcublasLt"), std::string::npos);
  auto metrics = HttpGet(worker->metrics_address, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(MetricValue(*metrics, "strata_model_loaded"), 1.0) << *metrics;
}

TEST(CudaModuleWorkerTest, CudaDeviceWithoutAGpuExitsWithOneLine) {
  if (backend::CudaBackend::DeviceCount().ok()) {
    GTEST_SKIP() << "a CUDA device is visible: --device cuda serves instead";
  }
  TempDir logs;
  auto worker = LaunchWorker(STRATA_MODEL_DIR, {"--device", "cuda"}, logs.path());
  ASSERT_TRUE(worker.ok()) << worker.status();
  const std::optional<int> code = worker->process->WaitForExit(std::chrono::seconds(30));
  ASSERT_TRUE(code.has_value()) << "the worker kept running without a GPU";
  EXPECT_EQ(*code, 1);
  const std::string stderr_text = worker->process->Stderr();
  EXPECT_NE(stderr_text.find("CUDA"), std::string::npos) << stderr_text;
}

}  // namespace
}  // namespace strata::testing
