// The router's proxy and health watcher against a scripted backend served
// in-process on 127.0.0.1 (port 0).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "router/backend.h"
#include "router/health_watcher.h"
#include "router/inference_proxy.h"
#include "router/router_metrics.h"
#include "strata/v1/inference.grpc.pb.h"

namespace strata::router {
namespace {

using ::testing::HasSubstr;

template <typename Condition>
bool Eventually(Condition condition, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

// A port nothing listens on (bound, then released).
int UnusedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

// Streams `responses` responses ("r0", "r1", ...) `interval` apart, or fails
// with `error` when set; records what it saw of each call.
class ScriptedBackend final : public v1::Inference::Service {
 public:
  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_request_ = *request;
      last_deadline_ = context->deadline();
    }
    calls_.fetch_add(1);
    if (!error_.ok()) return error_;
    for (int i = 0; i < responses_; ++i) {
      if (context->IsCancelled()) {
        cancelled_.store(true);
        return grpc::Status::CANCELLED;
      }
      v1::GenerateResponse response;
      response.set_text(absl::StrCat("r", i));
      response.add_token_ids(i);
      response.set_request_id(request->request_id());
      if (i + 1 == responses_) {
        response.set_finish_reason(v1::FINISH_REASON_LENGTH);
        response.mutable_usage()->set_completion_tokens(responses_);
      }
      if (!writer->Write(response)) {
        cancelled_.store(true);
        return grpc::Status::CANCELLED;
      }
      std::this_thread::sleep_for(interval_);
    }
    if (context->IsCancelled()) cancelled_.store(true);
    return grpc::Status::OK;
  }

  grpc::Status Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override {
    for (char c : request->text()) response->add_ids(c);
    return grpc::Status::OK;
  }

  grpc::Status Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* request,
                          v1::DetokenizeResponse* response) override {
    if (request->ids_size() == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "ids: empty");
    }
    for (int32_t id : request->ids()) response->mutable_text()->push_back(static_cast<char>(id));
    return grpc::Status::OK;
  }

  grpc::Status GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                            v1::ModelInfo* response) override {
    response->set_model_name("scripted");
    response->set_vocab_size(99);
    return grpc::Status::OK;
  }

  int responses_ = 5;
  std::chrono::milliseconds interval_{0};
  grpc::Status error_ = grpc::Status::OK;
  std::atomic<bool> cancelled_{false};
  std::atomic<int> calls_{0};
  std::mutex mu_;
  v1::GenerateRequest last_request_;
  std::chrono::system_clock::time_point last_deadline_;
};

std::unique_ptr<grpc::Server> Serve(grpc::Service* service, int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

class RouterTest : public ::testing::Test {
 protected:
  void StartBackend() {
    int port = 0;
    backend_server_ = Serve(&scripted_, &port);
    ASSERT_NE(backend_server_, nullptr);
    StartRouter(absl::StrCat("127.0.0.1:", port));
  }

  void StartRouter(const std::string& backend_address) {
    backend_ = std::make_unique<Backend>(backend_address, &metrics_);
    proxy_ = std::make_unique<InferenceProxy>(*backend_, &metrics_);
    int port = 0;
    router_server_ = Serve(proxy_.get(), &port);
    ASSERT_NE(router_server_, nullptr);
    stub_ = v1::Inference::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    const auto soon = std::chrono::system_clock::now() + std::chrono::seconds(1);
    if (router_server_) router_server_->Shutdown(soon);
    if (backend_server_) backend_server_->Shutdown(soon);
  }

  std::string ScrapeMetrics() {
    return prometheus::TextSerializer().Serialize(metrics_.registry()->Collect());
  }

  ScriptedBackend scripted_;
  RouterMetrics metrics_;
  std::unique_ptr<grpc::Server> backend_server_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<InferenceProxy> proxy_;
  std::unique_ptr<grpc::Server> router_server_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

TEST_F(RouterTest, RelaysTheStreamInOrderWithTheFinalStatus) {
  StartBackend();
  v1::GenerateRequest request;
  request.set_text("hello");
  request.set_request_id("relay-1");
  request.mutable_stopping()->set_max_tokens(5);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, request);
  std::vector<v1::GenerateResponse> responses;
  v1::GenerateResponse response;
  while (reader->Read(&response)) responses.push_back(response);
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  ASSERT_EQ(responses.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(responses[i].text(), absl::StrCat("r", i));
    EXPECT_EQ(responses[i].request_id(), "relay-1");
  }
  EXPECT_EQ(responses.back().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(responses.back().usage().completion_tokens(), 5);
  std::lock_guard<std::mutex> lock(scripted_.mu_);
  EXPECT_EQ(scripted_.last_request_.text(), "hello");
  EXPECT_EQ(scripted_.last_request_.stopping().max_tokens(), 5);
}

TEST_F(RouterTest, PassesBackendErrorsThroughWithCodeAndMessage) {
  scripted_.error_ =
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "max_tokens must be positive, got 0");
  StartBackend();
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, v1::GenerateRequest());
  v1::GenerateResponse response;
  EXPECT_FALSE(reader->Read(&response));
  grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "max_tokens must be positive, got 0");

  grpc::ClientContext detokenize_context;
  v1::DetokenizeResponse detokenized;
  status = stub_->Detokenize(&detokenize_context, {}, &detokenized);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "ids: empty");
}

TEST_F(RouterTest, AnUnreachableBackendGivesUnavailableNamingIt) {
  const std::string backend_address = absl::StrCat("127.0.0.1:", UnusedPort());
  StartRouter(backend_address);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, v1::GenerateRequest());
  v1::GenerateResponse response;
  EXPECT_FALSE(reader->Read(&response));
  grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr(absl::StrCat("backend ", backend_address)));

  grpc::ClientContext info_context;
  v1::ModelInfo info;
  status = stub_->GetModelInfo(&info_context, {}, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr(backend_address));
}

TEST_F(RouterTest, PropagatesTheClientsDeadline) {
  StartBackend();
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(30);
  grpc::ClientContext context;
  context.set_deadline(deadline);
  auto reader = stub_->Generate(&context, v1::GenerateRequest());
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  std::lock_guard<std::mutex> lock(scripted_.mu_);
  // The deadline travels as a timeout, rounded up, measured from arrival.
  EXPECT_LE(scripted_.last_deadline_, deadline + std::chrono::seconds(1));
  EXPECT_GE(scripted_.last_deadline_, deadline - std::chrono::seconds(1));
}

TEST_F(RouterTest, AnExpiredDeadlineEndsTheBackendCall) {
  scripted_.responses_ = 1000;
  scripted_.interval_ = std::chrono::milliseconds(10);
  StartBackend();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  auto reader = stub_->Generate(&context, v1::GenerateRequest());
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(Eventually([&] { return scripted_.cancelled_.load(); }, std::chrono::seconds(2)));
}

TEST_F(RouterTest, AClientCancelCancelsTheBackendCallAtOnce) {
  scripted_.responses_ = 100000;
  scripted_.interval_ = std::chrono::milliseconds(10);
  StartBackend();
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, v1::GenerateRequest());
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  const auto cancelled_at = std::chrono::steady_clock::now();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return scripted_.cancelled_.load(); }, std::chrono::seconds(1)));
  EXPECT_LT(std::chrono::steady_clock::now() - cancelled_at, std::chrono::seconds(1));
  EXPECT_TRUE(Eventually([&] {
    return ScrapeMetrics().find("strata_router_requests_in_flight 0") != std::string::npos;
  }));
}

TEST_F(RouterTest, ForwardsUnaryCalls) {
  StartBackend();
  grpc::ClientContext tokenize_context;
  v1::TokenizeRequest tokenize;
  tokenize.set_text("ab");
  v1::TokenizeResponse tokenized;
  ASSERT_TRUE(stub_->Tokenize(&tokenize_context, tokenize, &tokenized).ok());
  EXPECT_THAT(tokenized.ids(), ::testing::ElementsAre('a', 'b'));

  grpc::ClientContext detokenize_context;
  v1::DetokenizeRequest detokenize;
  detokenize.add_ids('o');
  detokenize.add_ids('k');
  v1::DetokenizeResponse detokenized;
  ASSERT_TRUE(stub_->Detokenize(&detokenize_context, detokenize, &detokenized).ok());
  EXPECT_EQ(detokenized.text(), "ok");

  grpc::ClientContext info_context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&info_context, {}, &info).ok());
  EXPECT_EQ(info.model_name(), "scripted");
}

TEST_F(RouterTest, RelaysManyConcurrentStreams) {
  scripted_.responses_ = 20;
  StartBackend();
  constexpr int kStreams = 16;
  std::vector<std::string> outcomes(kStreams);
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      grpc::ClientContext context;
      auto reader = stub_->Generate(&context, v1::GenerateRequest());
      v1::GenerateResponse response;
      int count = 0;
      while (reader->Read(&response)) ++count;
      const grpc::Status status = reader->Finish();
      outcomes[i] =
          absl::StrCat(status.error_code(), " ", status.error_message(), ", ", count, " responses");
    });
  }
  for (auto& client : clients) client.join();
  for (const std::string& outcome : outcomes) EXPECT_EQ(outcome, "0 , 20 responses");
}

TEST_F(RouterTest, MetricsCountRelayedCallsByCode) {
  StartBackend();
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, v1::GenerateRequest());
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  const std::string text = ScrapeMetrics();
  EXPECT_THAT(text, HasSubstr("strata_router_requests_total{code=\"OK\"} 2"));
  EXPECT_THAT(text, HasSubstr("strata_router_time_to_first_token_seconds_count 2"));
  EXPECT_THAT(text, HasSubstr("strata_router_request_duration_seconds_count 2"));
  EXPECT_THAT(text, HasSubstr("strata_router_requests_in_flight 0"));
  EXPECT_THAT(text, HasSubstr("strata_router_backend_requests_in_flight{backend=\"127.0.0.1:"));
}

TEST(HealthWatcherTest, FollowsTheBackendsServingStatus) {
  ScriptedBackend scripted;
  int port = 0;
  std::unique_ptr<grpc::Server> server = Serve(&scripted, &port);
  ASSERT_NE(server, nullptr);
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  const std::string service(v1::Inference::service_full_name());
  health->SetServingStatus(service, false);

  RouterMetrics metrics;
  Backend backend(absl::StrCat("127.0.0.1:", port), &metrics);
  std::atomic<int> serving_reports{0};
  std::atomic<bool> last{false};
  HealthWatcher watcher(backend, [&](bool serving) {
    if (serving) serving_reports.fetch_add(1);
    last.store(serving);
  });
  watcher.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(backend.healthy());
  EXPECT_EQ(serving_reports.load(), 0);

  health->SetServingStatus(service, true);
  EXPECT_TRUE(Eventually([&] { return backend.healthy() && last.load(); }));
  EXPECT_THAT(
      prometheus::TextSerializer().Serialize(metrics.registry()->Collect()),
      HasSubstr(absl::StrCat("strata_router_backend_healthy{backend=\"127.0.0.1:", port, "\"} 1")));

  health->SetServingStatus(service, false);
  EXPECT_TRUE(Eventually([&] { return !backend.healthy(); }));

  health->SetServingStatus(service, true);
  EXPECT_TRUE(Eventually([&] { return backend.healthy(); }));
  // The backend going away counts as not serving.
  server->Shutdown(std::chrono::system_clock::now());
  EXPECT_TRUE(Eventually([&] { return !backend.healthy(); }));
  watcher.Stop();
}

TEST(HealthWatcherTest, StopsPromptlyWhileTheBackendIsDown) {
  Backend backend(absl::StrCat("127.0.0.1:", UnusedPort()), nullptr);
  HealthWatcher watcher(backend, [](bool) {});
  watcher.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto start = std::chrono::steady_clock::now();
  watcher.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
  EXPECT_FALSE(backend.healthy());
}

}  // namespace
}  // namespace strata::router
