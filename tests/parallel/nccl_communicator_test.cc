// NcclCommunicator on a real GPU. Labelled "gpu": every test skips when the
// CUDA runtime reports no device. With one GPU, an nranks = 1 communicator
// must still work end to end (bootstrap through the store included).
#include "parallel/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "parallel/communicator_groups.h"

namespace strata::parallel {
namespace {

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> devices = CudaDeviceCount();
    if (!devices.ok()) GTEST_SKIP() << "no GPU: " << devices.status();
    auto server = TcpStoreServer::Start("127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto store = TcpStore::Connect("127.0.0.1:" + std::to_string(server_->port()));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    ASSERT_TRUE(store_->RegisterPresence(0).ok());
  }

  template <typename T>
  T* DeviceCopy(const std::vector<T>& host) {
    T* device = nullptr;
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), host.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
    allocations_.push_back(device);
    return device;
  }

  template <typename T>
  std::vector<T> HostCopy(const T* device, size_t n) {
    std::vector<T> host(n);
    EXPECT_EQ(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }

  void TearDown() override {
    for (void* p : allocations_) cudaFree(p);
  }

  std::unique_ptr<TcpStoreServer> server_;
  std::unique_ptr<TcpStore> store_;
  std::vector<void*> allocations_;
};

TEST_F(NcclCommunicatorTest, SingleRankGroupsRunEveryCollective) {
  auto factory = NcclCommunicatorFactory::Create(store_.get(), 0, NcclOptions{});
  ASSERT_TRUE(factory.ok()) << factory.status();
  auto config = ParallelConfig::Create(1, 1, 0);
  auto groups = CommunicatorGroups::Create(*config, **factory);
  ASSERT_TRUE(groups.ok()) << groups.status();
  Communicator& world = (*groups)->world();

  float* data = DeviceCopy(std::vector<float>{1.5f, -2.0f, 3.0f});
  ASSERT_TRUE(world.AllReduceSum(data, 3).ok());
  EXPECT_THAT(HostCopy(data, 3), ::testing::ElementsAre(1.5f, -2.0f, 3.0f));

  float* gathered = DeviceCopy(std::vector<float>(3, 0.0f));
  ASSERT_TRUE(world.AllGather(data, 3, gathered).ok());
  EXPECT_THAT(HostCopy(gathered, 3), ::testing::ElementsAre(1.5f, -2.0f, 3.0f));

  uint8_t* bytes = DeviceCopy(std::vector<uint8_t>{7, 8, 9});
  ASSERT_TRUE(world.Broadcast(bytes, 3, 0).ok());
  EXPECT_THAT(HostCopy(bytes, 3), ::testing::ElementsAre(7, 8, 9));

  EXPECT_TRUE(world.Barrier().ok());
  EXPECT_TRUE((*groups)->tensor_parallel().Barrier().ok());
  EXPECT_EQ(world.Send(data, 4, 0).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(NcclCommunicatorTest, AsynchronousModeCompletesOnSynchronize) {
  NcclOptions options;
  options.synchronous = false;
  auto factory = NcclCommunicatorFactory::Create(store_.get(), 0, options);
  ASSERT_TRUE(factory.ok()) << factory.status();
  ASSERT_TRUE((*factory)->PrepareGroups({GroupSpec{"solo", {0}}}).ok());
  auto communicator = (*factory)->Create(GroupSpec{"solo", {0}});
  ASSERT_TRUE(communicator.ok()) << communicator.status();
  auto* nccl = static_cast<NcclCommunicator*>(communicator->get());
  std::vector<float> host(1 << 20, 0.25f);
  float* data = DeviceCopy(host);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(nccl->AllReduceSum(data, host.size()).ok());
  ASSERT_TRUE(nccl->Synchronize().ok());
  EXPECT_EQ(HostCopy(data, host.size())[12345], 0.25f);
}

TEST_F(NcclCommunicatorTest, MissingUniqueIdTimesOut) {
  NcclOptions options;
  options.bootstrap_timeout = absl::Milliseconds(200);
  auto factory = NcclCommunicatorFactory::Create(store_.get(), 0, options);
  ASSERT_TRUE(factory.ok()) << factory.status();
  auto communicator = (*factory)->Create(GroupSpec{"never-prepared", {0}});
  EXPECT_EQ(communicator.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(NcclDeviceProbeTest, ReportsNoDeviceAsAnErrorNotACrash) {
  absl::StatusOr<int> devices = CudaDeviceCount();
  if (devices.ok()) {
    EXPECT_GT(*devices, 0);
  } else {
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kUnavailable);
  }
}

}  // namespace
}  // namespace strata::parallel
