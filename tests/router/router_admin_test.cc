// The router's admin API (RouterAdminService) in-process on 127.0.0.1, in
// front of scripted backends whose Replica service is the worker's own
// ReplicaService with a drain handler the test installs: DrainBackend takes a
// backend out of rotation at once and reaches its leader's handler with the
// reason; unknown addresses are NOT_FOUND; a leader that does not confirm
// fails the call but stays out; a drained address that comes back SERVING
// (a new process) takes calls again; ListBackends shows all of it. Also the
// leader's side alone: Drain without a handler, and a repeated Drain.
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "router/admin_service.h"
#include "strata/v1/replica.grpc.pb.h"
#include "strata/v1/router_admin.grpc.pb.h"
#include "tests/router/router_harness.h"
#include "worker/service/replica_service.h"

namespace strata::router {
namespace {

using testing::Eventually;
using ::testing::HasSubstr;
using testing::InProcessRouter;
using testing::InProcessRouterOptions;
using testing::RunGenerate;
using testing::ScriptedBackend;
using testing::ServeBackend;
using testing::ServedBackend;

// A leader's Replica service with a drain handler that records what it was
// asked and, like the worker, reports whether it was draining already.
class RecordingLeader {
 public:
  explicit RecordingLeader(int32_t calls_in_flight) : replica_({}) {
    replica_.SetDrainHandler([this, calls_in_flight](const service::DrainRequestInfo& request) {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(request);
      service::DrainOutcome outcome;
      outcome.generate_calls_in_flight = calls_in_flight;
      outcome.already_draining = requests_.size() > 1;
      outcome.drain_timeout_seconds = 42.0;
      return outcome;
    });
  }

  service::ReplicaService& replica() { return replica_; }
  std::vector<service::DrainRequestInfo> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  service::ReplicaService replica_;
  std::mutex mu_;
  std::vector<service::DrainRequestInfo> requests_;
};

// The admin service over a router's pool, on its own server.
class AdminServer {
 public:
  explicit AdminServer(BackendPool& pool) : service_(pool, Options()) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    stub_ = v1::RouterAdmin::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  ~AdminServer() { server_->Shutdown(std::chrono::system_clock::now()); }

  grpc::Status Drain(const std::string& address, const std::string& reason,
                     v1::DrainBackendResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::DrainBackendRequest request;
    request.set_address(address);
    request.set_reason(reason);
    return stub_->DrainBackend(&context, request, response);
  }

  // The state of `address` in ListBackends; fails the test when absent.
  v1::BackendState State(const std::string& address) {
    grpc::ClientContext context;
    v1::ListBackendsResponse response;
    const grpc::Status status = stub_->ListBackends(&context, {}, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    for (const v1::BackendState& state : response.backends()) {
      if (state.address() == address) return state;
    }
    ADD_FAILURE() << address << " is not listed";
    return {};
  }

 private:
  static RouterAdminService::Options Options() {
    RouterAdminService::Options options;
    options.requested_by = "router under test";
    return options;
  }

  RouterAdminService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::RouterAdmin::Stub> stub_;
};

InProcessRouterOptions RoundRobin() {
  InProcessRouterOptions options;
  options.policy = "round_robin";
  options.routing.no_backend_wait = std::chrono::milliseconds(300);
  options.pool.watch_load = false;
  return options;
}

v1::GenerateRequest ShortRequest() {
  v1::GenerateRequest request;
  request.set_text("hello");
  request.mutable_stopping()->set_max_tokens(2);
  return request;
}

TEST(RouterAdminTest, DrainOfAnUnknownBackendIsNotFoundAndNamesTheKnownOnes) {
  ScriptedBackend scripted;
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouter router({backend.address}, RoundRobin());
  AdminServer admin(router.pool());
  v1::DrainBackendResponse response;
  grpc::Status status = admin.Drain("127.0.0.1:1", "test", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("no backend 127.0.0.1:1"));
  EXPECT_THAT(status.error_message(), HasSubstr(backend.address));
  status = admin.Drain("", "test", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_FALSE(admin.State(backend.address).draining());
}

TEST(RouterAdminTest, DrainedBackendGetsNoNewCallsWhileItsHealthIsStillServing) {
  ScriptedBackend first_scripted;
  ScriptedBackend second_scripted;
  RecordingLeader first_leader(/*calls_in_flight=*/7);
  ServedBackend first = ServeBackend(&first_scripted, &first_leader.replica());
  ServedBackend second = ServeBackend(&second_scripted);
  InProcessRouter router({first.address, second.address}, RoundRobin());
  ASSERT_TRUE(router.WaitForHealthy(2));
  AdminServer admin(router.pool());

  v1::DrainBackendResponse response;
  const grpc::Status status = admin.Drain(first.address, "rollout to v2", &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.generate_calls_in_flight(), 7);
  EXPECT_EQ(response.router_calls_in_flight(), 0);
  EXPECT_FALSE(response.already_draining());
  EXPECT_EQ(response.drain_timeout_seconds(), 42.0);
  const std::vector<service::DrainRequestInfo> asked = first_leader.requests();
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].reason, "rollout to v2");
  EXPECT_THAT(asked[0].requested_by, HasSubstr("router under test"));
  EXPECT_FALSE(asked[0].peer.empty());

  // The scripted leader never turns NOT_SERVING: only the drain keeps calls away.
  const v1::BackendState state = admin.State(first.address);
  EXPECT_TRUE(state.serving());
  EXPECT_TRUE(state.draining());
  EXPECT_FALSE(state.available());
  for (int i = 0; i < 6; ++i) {
    const testing::GenerateOutcome outcome = RunGenerate(router.stub(), ShortRequest());
    EXPECT_TRUE(outcome.status.ok()) << outcome.status.error_message();
  }
  EXPECT_EQ(first_scripted.calls_.load(), 0);
  EXPECT_EQ(second_scripted.calls_.load(), 6);

  // Again: harmless, and says so.
  ASSERT_TRUE(admin.Drain(first.address, "again", &response).ok());
  EXPECT_TRUE(response.already_draining());
}

TEST(RouterAdminTest, ListBackendsShowsCallsInFlightPerBackend) {
  ScriptedBackend scripted;
  scripted.responses_ = 40;
  scripted.interval_ = std::chrono::milliseconds(25);
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouter router({backend.address}, RoundRobin());
  ASSERT_TRUE(router.WaitForHealthy(1));
  AdminServer admin(router.pool());
  v1::BackendState idle = admin.State(backend.address);
  EXPECT_TRUE(idle.serving());
  EXPECT_TRUE(idle.available());
  EXPECT_FALSE(idle.draining());
  EXPECT_FALSE(idle.ejected());
  EXPECT_EQ(idle.in_flight(), 0);
  std::thread stream([&] { EXPECT_TRUE(RunGenerate(router.stub(), ShortRequest()).status.ok()); });
  EXPECT_TRUE(Eventually([&] { return admin.State(backend.address).in_flight() == 1; }));
  stream.join();
  EXPECT_EQ(admin.State(backend.address).in_flight(), 0);
}

TEST(RouterAdminTest, LeaderThatDoesNotConfirmFailsTheDrainButStaysOut) {
  ScriptedBackend first_scripted;  // serves no Replica service: UNIMPLEMENTED
  ScriptedBackend second_scripted;
  ServedBackend first = ServeBackend(&first_scripted);
  ServedBackend second = ServeBackend(&second_scripted);
  InProcessRouter router({first.address, second.address}, RoundRobin());
  ASSERT_TRUE(router.WaitForHealthy(2));
  AdminServer admin(router.pool());
  v1::DrainBackendResponse response;
  const grpc::Status status = admin.Drain(first.address, "test", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_THAT(status.error_message(), HasSubstr("did not confirm the drain"));
  EXPECT_THAT(status.error_message(), HasSubstr("no new calls"));
  EXPECT_TRUE(admin.State(first.address).draining());
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(RunGenerate(router.stub(), ShortRequest()).status.ok());
  EXPECT_EQ(first_scripted.calls_.load(), 0);
}

TEST(RouterAdminTest, DrainedAddressTakesCallsAgainOnceItComesBackServing) {
  ScriptedBackend scripted;
  RecordingLeader leader(0);
  ServedBackend backend = ServeBackend(&scripted, &leader.replica());
  InProcessRouter router({backend.address}, RoundRobin());
  ASSERT_TRUE(router.WaitForHealthy(1));
  AdminServer admin(router.pool());
  v1::DrainBackendResponse response;
  ASSERT_TRUE(admin.Drain(backend.address, "restart", &response).ok());
  EXPECT_EQ(RunGenerate(router.stub(), ShortRequest()).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // SERVING alone does not end the drain; going down and coming back does.
  backend.SetServing(true);
  EXPECT_TRUE(admin.State(backend.address).draining());
  backend.SetServing(false);
  ASSERT_TRUE(Eventually([&] { return !admin.State(backend.address).serving(); }));
  EXPECT_TRUE(admin.State(backend.address).draining());
  backend.SetServing(true);
  ASSERT_TRUE(Eventually([&] { return admin.State(backend.address).available(); }));
  EXPECT_FALSE(admin.State(backend.address).draining());
  EXPECT_TRUE(RunGenerate(router.stub(), ShortRequest()).status.ok());
  EXPECT_EQ(scripted.calls_.load(), 1);
}

TEST(ReplicaServiceDrainTest, WithoutAHandlerDrainIsUnimplemented) {
  ScriptedBackend scripted;
  service::ReplicaService replica({});
  ServedBackend backend = ServeBackend(&scripted, &replica);
  auto stub = v1::Replica::NewStub(
      grpc::CreateChannel(backend.address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::DrainResponse response;
  const grpc::Status status = stub->Drain(&context, {}, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_THAT(status.error_message(), HasSubstr("drain"));
}

TEST(ReplicaServiceDrainTest, HandlerSeesReasonRequesterAndPeerAndAnswersEachCall) {
  ScriptedBackend scripted;
  RecordingLeader leader(3);
  ServedBackend backend = ServeBackend(&scripted, &leader.replica());
  auto stub = v1::Replica::NewStub(
      grpc::CreateChannel(backend.address, grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext context;
    v1::DrainRequest request;
    request.set_reason("node maintenance");
    request.set_requested_by("operator");
    v1::DrainResponse response;
    const grpc::Status status = stub->Drain(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.generate_calls_in_flight(), 3);
    EXPECT_EQ(response.already_draining(), i == 1);
    EXPECT_EQ(response.drain_timeout_seconds(), 42.0);
  }
  const std::vector<service::DrainRequestInfo> asked = leader.requests();
  ASSERT_EQ(asked.size(), 2u);
  EXPECT_EQ(asked[0].reason, "node maintenance");
  EXPECT_EQ(asked[0].requested_by, "operator");
  EXPECT_THAT(asked[0].peer, HasSubstr("127.0.0.1"));
}

}  // namespace
}  // namespace strata::router
