// The router's proxy against scripted backends served in-process on
// 127.0.0.1 (port 0): relaying, errors, deadlines, cancellation, retries
// before the first response, the mid-stream loss message, passive ejection,
// admission control and the health watcher.
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "router/backend.h"
#include "router/client_rate_limiter.h"
#include "router/health_watcher.h"
#include "router/routed_generate_call.h"
#include "router/router_metrics.h"
#include "tests/router/router_harness.h"

namespace strata::router {
namespace {

using ::testing::ElementsAre;
using testing::Eventually;
using testing::GenerateOutcome;
using ::testing::HasSubstr;
using testing::InProcessRouter;
using testing::InProcessRouterOptions;
using testing::RunGenerate;
using testing::ScriptedBackend;
using testing::ServeBackend;
using testing::ServedBackend;
using ::testing::StartsWith;

InProcessRouterOptions FastOptions(std::string policy = "least_load") {
  InProcessRouterOptions options;
  options.policy = std::move(policy);
  options.routing.no_backend_wait = std::chrono::milliseconds(300);
  options.pool.watch_load = false;
  return options;
}

TEST(RouterTest, RelaysTheStreamInOrderWithTheFinalStatus) {
  ScriptedBackend scripted;
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouter router({backend.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  v1::GenerateRequest request;
  request.set_text("hello");
  request.set_request_id("relay-1");
  request.mutable_stopping()->set_max_tokens(5);
  const GenerateOutcome outcome = RunGenerate(router.stub(), request);
  ASSERT_TRUE(outcome.status.ok()) << outcome.status.error_message();
  EXPECT_EQ(outcome.text(), "r0r1r2r3r4");
  EXPECT_THAT(outcome.token_ids(), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_EQ(outcome.responses.back().finish_reason(), v1::FINISH_REASON_LENGTH);
  std::lock_guard<std::mutex> lock(scripted.mu_);
  EXPECT_EQ(scripted.last_request_.text(), "hello");
  EXPECT_EQ(scripted.last_request_.request_id(), "relay-1");
  EXPECT_EQ(scripted.last_request_.stopping().max_tokens(), 5);
}

// Generate requests are relayed as the bytes the client sent. With a policy
// that ignores the prompt the router reads only the request id; with
// prefix_affinity it decodes the prompt. Either way the backend gets the
// request exactly as sent, a 55,000-id prompt included.
TEST(RouterTest, RelaysALargePromptExactlyAsSentUnderEveryPolicy) {
  for (const std::string policy : {"least_load", "round_robin", "prefix_affinity"}) {
    SCOPED_TRACE(policy);
    ScriptedBackend scripted;
    ServedBackend backend = ServeBackend(&scripted);
    InProcessRouter router({backend.address}, FastOptions(policy));
    ASSERT_TRUE(router.WaitForHealthy(1));
    v1::GenerateRequest request;
    request.set_request_id("large-1");
    for (int32_t i = 0; i < 55000; ++i) request.mutable_token_ids()->add_ids(i * 4099 % 200000);
    request.mutable_sampling()->set_temperature(0.5f);
    request.mutable_stopping()->set_max_tokens(3);
    const GenerateOutcome outcome = RunGenerate(router.stub(), request);
    ASSERT_TRUE(outcome.status.ok()) << outcome.status.error_message();
    EXPECT_FALSE(outcome.responses.empty());
    std::lock_guard<std::mutex> lock(scripted.mu_);
    EXPECT_EQ(scripted.last_request_.SerializeAsString(), request.SerializeAsString());
  }
}

// Bytes that are not a GenerateRequest never reach a backend.
TEST(RouterTest, MalformedGenerateBytesAreInvalidArgument) {
  ScriptedBackend scripted;
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouter router({backend.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  grpc::GenericStub generic(
      grpc::CreateChannel(router.address(), grpc::InsecureChannelCredentials()));
  // Field 3 (token_ids) claims 100 bytes; 2 follow.
  const std::string garbage("\x1a\x64\x01\x02", 4);
  grpc::Slice slice(garbage);
  const grpc::ByteBuffer request(&slice, 1);
  grpc::ClientContext context;
  grpc::CompletionQueue queue;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      generic.PrepareCall(&context, "/strata.v1.Inference/Generate", &queue);
  void* tag = nullptr;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(queue.Next(&tag, &ok));
  call->WriteLast(request, grpc::WriteOptions(), reinterpret_cast<void*>(2));
  ASSERT_TRUE(queue.Next(&tag, &ok));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  ASSERT_TRUE(queue.Next(&tag, &ok));
  EXPECT_FALSE(ok);  // no response
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  ASSERT_TRUE(queue.Next(&tag, &ok));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("not a strata.v1.GenerateRequest"));
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  EXPECT_EQ(scripted.calls_.load(), 0);
}

TEST(RouterTest, PassesBackendErrorsThroughWithCodeAndMessage) {
  ScriptedBackend scripted;
  scripted.error_ =
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "max_tokens must be positive, got 0");
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouter router({backend.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  const GenerateOutcome outcome = RunGenerate(router.stub(), v1::GenerateRequest());
  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(outcome.status.error_message(), "max_tokens must be positive, got 0");
  // Not retried: only UNAVAILABLE is.
  EXPECT_EQ(scripted.calls_.load(), 1);

  grpc::ClientContext context;
  v1::DetokenizeResponse detokenized;
  const grpc::Status status = router.stub().Detokenize(&context, {}, &detokenized);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "ids: empty");
}

TEST(RouterTest, NoHealthyBackendGivesUnavailableAfterAShortWait) {
  InProcessRouter router({absl::StrCat("127.0.0.1:", testing::UnusedPort())}, FastOptions());
  const auto start = std::chrono::steady_clock::now();
  const GenerateOutcome outcome = RunGenerate(router.stub(), v1::GenerateRequest());
  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(outcome.status.error_message(), HasSubstr("no backend available: 1 known"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_THAT(router.ScrapeMetrics(),
              HasSubstr("strata_router_rejections_total{reason=\"no_backend\"} 1"));

  grpc::ClientContext context;
  v1::ModelInfo info;
  EXPECT_EQ(router.stub().GetModelInfo(&context, {}, &info).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST(RouterTest, PropagatesTheClientsDeadline) {
  ScriptedBackend scripted;
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouter router({backend.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(30);
  grpc::ClientContext context;
  context.set_deadline(deadline);
  auto reader = router.stub().Generate(&context, v1::GenerateRequest());
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  std::lock_guard<std::mutex> lock(scripted.mu_);
  // The deadline travels as a timeout, rounded up, measured from arrival.
  EXPECT_LE(scripted.last_deadline_, deadline + std::chrono::seconds(1));
  EXPECT_GE(scripted.last_deadline_, deadline - std::chrono::seconds(1));
}

TEST(RouterTest, AnExpiredDeadlineEndsTheBackendCall) {
  ScriptedBackend scripted;
  scripted.responses_ = 1000;
  scripted.interval_ = std::chrono::milliseconds(10);
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouter router({backend.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  const GenerateOutcome outcome =
      RunGenerate(router.stub(), v1::GenerateRequest(), std::chrono::milliseconds(300));
  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(Eventually([&] { return scripted.cancelled_.load(); }, std::chrono::seconds(2)));
}

TEST(RouterTest, AClientCancelCancelsTheBackendCallAtOnce) {
  ScriptedBackend scripted;
  scripted.responses_ = 100000;
  scripted.interval_ = std::chrono::milliseconds(10);
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouter router({backend.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  grpc::ClientContext context;
  auto reader = router.stub().Generate(&context, v1::GenerateRequest());
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  const auto cancelled_at = std::chrono::steady_clock::now();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return scripted.cancelled_.load(); }, std::chrono::seconds(1)));
  EXPECT_LT(std::chrono::steady_clock::now() - cancelled_at, std::chrono::seconds(1));
  EXPECT_TRUE(Eventually([&] {
    return router.ScrapeMetrics().find("strata_router_requests_in_flight 0") != std::string::npos;
  }));
  EXPECT_TRUE(Eventually([&] { return router.proxy().GenerateCallsInFlight() == 0; }));
}

TEST(RouterTest, ForwardsUnaryCalls) {
  ScriptedBackend scripted;
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouter router({backend.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  grpc::ClientContext tokenize_context;
  v1::TokenizeRequest tokenize;
  tokenize.set_text("ab");
  v1::TokenizeResponse tokenized;
  ASSERT_TRUE(router.stub().Tokenize(&tokenize_context, tokenize, &tokenized).ok());
  EXPECT_THAT(tokenized.ids(), ::testing::ElementsAre('a', 'b'));

  grpc::ClientContext detokenize_context;
  v1::DetokenizeRequest detokenize;
  detokenize.add_ids('o');
  detokenize.add_ids('k');
  v1::DetokenizeResponse detokenized;
  ASSERT_TRUE(router.stub().Detokenize(&detokenize_context, detokenize, &detokenized).ok());
  EXPECT_EQ(detokenized.text(), "ok");

  grpc::ClientContext info_context;
  v1::ModelInfo info;
  ASSERT_TRUE(router.stub().GetModelInfo(&info_context, {}, &info).ok());
  EXPECT_EQ(info.model_name(), "scripted");
}

TEST(RouterTest, RetriesOnAnotherBackendWhenTheFirstIsUnavailableBeforeAnyResponse) {
  ScriptedBackend refusing;
  refusing.name_ = "refusing";
  refusing.error_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining");
  ScriptedBackend working;
  working.name_ = "working";
  ServedBackend a = ServeBackend(&refusing);
  ServedBackend b = ServeBackend(&working);
  InProcessRouter router({a.address, b.address}, FastOptions("round_robin"));
  ASSERT_TRUE(router.WaitForHealthy(2));
  for (int i = 0; i < 6; ++i) {
    const GenerateOutcome outcome = RunGenerate(router.stub(), v1::GenerateRequest());
    ASSERT_TRUE(outcome.status.ok()) << outcome.status.error_message();
    ASSERT_EQ(outcome.token_ids().size(), 5u);
    EXPECT_EQ(outcome.responses[0].request_id(), "working");
  }
  EXPECT_GE(refusing.calls_.load(), 1);
  EXPECT_EQ(working.calls_.load(), 6);
  EXPECT_THAT(router.ScrapeMetrics(), HasSubstr("strata_router_retries_total "));
}

TEST(RouterTest, AStreamCutAfterItsFirstResponseFailsUnavailableAsLostMidStream) {
  ScriptedBackend cutting;
  cutting.responses_ = 10;
  cutting.error_after_ = 3;
  cutting.error_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset");
  ScriptedBackend working;
  ServedBackend a = ServeBackend(&cutting);
  ServedBackend b = ServeBackend(&working);
  InProcessRouter router({a.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  router.pool().Update({a.address, b.address});
  ASSERT_TRUE(router.WaitForHealthy(2));
  router.pool().Update({a.address});
  const GenerateOutcome outcome = RunGenerate(router.stub(), v1::GenerateRequest());
  EXPECT_EQ(outcome.text(), "r0r1r2");
  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(outcome.status.error_message(),
              StartsWith(absl::StrCat(RoutedGenerateCall::kLostMidStream, " (backend ", a.address,
                                      "): connection reset")));
  // Never retried after output reached the client.
  EXPECT_EQ(cutting.calls_.load(), 1);
  EXPECT_EQ(working.calls_.load(), 0);
}

TEST(RouterTest, EjectsABackendAfterConsecutiveFailuresAndReadmitsItAfterASuccess) {
  ScriptedBackend flaky;
  flaky.error_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "overloaded");
  ServedBackend a = ServeBackend(&flaky);
  InProcessRouterOptions options = FastOptions();
  options.routing.max_attempts = 1;
  options.pool.ejection.eject_after = 3;
  options.pool.ejection.base_ejection = std::chrono::milliseconds(1500);
  InProcessRouter router({a.address}, options);
  ASSERT_TRUE(router.WaitForHealthy(1));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(RunGenerate(router.stub(), {}).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  const std::shared_ptr<Backend> backend = router.pool().Backends().at(0);
  EXPECT_TRUE(backend->ejected());
  EXPECT_FALSE(backend->Available(Backend::Clock::now()));
  // While ejected, calls wait for a backend and then give up.
  EXPECT_THAT(RunGenerate(router.stub(), {}).status.error_message(),
              HasSubstr("no backend available"));
  EXPECT_EQ(flaky.calls_.load(), 3);
  // Half-open after the ejection time: one probe call; it succeeds.
  flaky.error_ = grpc::Status::OK;
  EXPECT_TRUE(Eventually([&] { return backend->Available(Backend::Clock::now()); },
                         std::chrono::seconds(3)));
  EXPECT_TRUE(RunGenerate(router.stub(), {}).status.ok());
  EXPECT_FALSE(backend->ejected());
}

TEST(RouterTest, NotServingBackendsGetNoNewCalls) {
  ScriptedBackend first;
  first.name_ = "first";
  ScriptedBackend second;
  second.name_ = "second";
  ServedBackend a = ServeBackend(&first);
  ServedBackend b = ServeBackend(&second);
  InProcessRouter router({a.address, b.address}, FastOptions("round_robin"));
  ASSERT_TRUE(router.WaitForHealthy(2));
  a.SetServing(false);
  ASSERT_TRUE(Eventually([&] { return !router.pool().Backends()[0]->healthy(); }));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(RunGenerate(router.stub(), {}).status.ok());
  EXPECT_EQ(first.calls_.load(), 0);
  EXPECT_EQ(second.calls_.load(), 4);
}

TEST(RouterTest, RoundRobinSpreadsCallsEvenly) {
  std::vector<std::unique_ptr<ScriptedBackend>> scripted;
  std::vector<ServedBackend> served;
  std::vector<std::string> addresses;
  for (int i = 0; i < 3; ++i) {
    scripted.push_back(std::make_unique<ScriptedBackend>());
    served.push_back(ServeBackend(scripted.back().get()));
    addresses.push_back(served.back().address);
  }
  InProcessRouter router(addresses, FastOptions("round_robin"));
  ASSERT_TRUE(router.WaitForHealthy(3));
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(RunGenerate(router.stub(), {}).status.ok());
  for (const auto& backend : scripted) EXPECT_EQ(backend->calls_.load(), 3);
}

TEST(RouterTest, LeastLoadAvoidsTheBackendWithCallsInFlight) {
  ScriptedBackend slow;
  slow.responses_ = 1000;
  slow.interval_ = std::chrono::milliseconds(5);
  ScriptedBackend fast;
  ServedBackend a = ServeBackend(&slow);
  ServedBackend b = ServeBackend(&fast);
  InProcessRouter router({a.address}, FastOptions("least_load"));
  ASSERT_TRUE(router.WaitForHealthy(1));
  // Two long calls on the slow backend, then the fast one joins.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  for (int i = 0; i < 2; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(router.stub().Generate(contexts.back().get(), {}));
    v1::GenerateResponse response;
    ASSERT_TRUE(readers.back()->Read(&response));
  }
  router.pool().Update({a.address, b.address});
  ASSERT_TRUE(router.WaitForHealthy(2));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(RunGenerate(router.stub(), {}).status.ok());
  EXPECT_EQ(fast.calls_.load(), 5);
  EXPECT_EQ(slow.calls_.load(), 2);
  for (auto& context : contexts) context->TryCancel();
  for (auto& reader : readers) reader->Finish().IgnoreError();
}

TEST(RouterTest, CallsWithTheSameSessionKeyGoToTheSameBackend) {
  std::vector<std::unique_ptr<ScriptedBackend>> scripted;
  std::vector<ServedBackend> served;
  std::vector<std::string> addresses;
  for (int i = 0; i < 4; ++i) {
    scripted.push_back(std::make_unique<ScriptedBackend>());
    scripted.back()->name_ = absl::StrCat("backend", i);
    served.push_back(ServeBackend(scripted.back().get()));
    addresses.push_back(served.back().address);
  }
  InProcessRouter router(addresses, FastOptions("round_robin"));
  ASSERT_TRUE(router.WaitForHealthy(4));
  std::map<std::string, std::set<std::string>> backends_of_session;
  for (int round = 0; round < 3; ++round) {
    for (int session = 0; session < 8; ++session) {
      grpc::ClientContext context;
      context.AddMetadata(kSessionMetadataKey, absl::StrCat("session-", session));
      auto reader = router.stub().Generate(&context, {});
      v1::GenerateResponse response;
      ASSERT_TRUE(reader->Read(&response));
      backends_of_session[absl::StrCat(session)].insert(response.request_id());
      while (reader->Read(&response)) {
      }
      ASSERT_TRUE(reader->Finish().ok());
    }
  }
  for (const auto& [session, backends] : backends_of_session) {
    EXPECT_EQ(backends.size(), 1u) << "session " << session;
  }
}

TEST(RouterTest, AdmissionQueuesThenRefusesWithResourceExhaustedAndARetryHint) {
  ScriptedBackend slow;
  slow.responses_ = 50;
  slow.interval_ = std::chrono::milliseconds(20);
  ServedBackend a = ServeBackend(&slow);
  InProcessRouterOptions options = FastOptions();
  options.max_in_flight = 2;
  options.max_queued = 1;
  InProcessRouter router({a.address}, options);
  ASSERT_TRUE(router.WaitForHealthy(1));
  constexpr int kCalls = 6;
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<std::string> pushback(kCalls);
  std::vector<std::thread> clients;
  for (int i = 0; i < kCalls; ++i) {
    clients.emplace_back([&, i] {
      grpc::ClientContext context;
      auto reader = router.stub().Generate(&context, {});
      v1::GenerateResponse response;
      while (reader->Read(&response)) {
      }
      statuses[i] = reader->Finish();
      const auto& trailers = context.GetServerTrailingMetadata();
      if (auto it = trailers.find("grpc-retry-pushback-ms"); it != trailers.end()) {
        pushback[i].assign(it->second.data(), it->second.size());
      }
    });
  }
  for (auto& client : clients) client.join();
  int ok = 0;
  int refused = 0;
  for (int i = 0; i < kCalls; ++i) {
    if (statuses[i].ok()) ++ok;
    if (statuses[i].error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
      EXPECT_THAT(statuses[i].error_message(), HasSubstr("router overloaded"));
      EXPECT_THAT(statuses[i].error_message(), HasSubstr("retry in 200 ms"));
      EXPECT_EQ(pushback[i], "200");
    }
  }
  EXPECT_EQ(ok, 3);  // 2 in flight + 1 queued
  EXPECT_EQ(refused, 3);
  EXPECT_LE(slow.active_.load(), 2);
  EXPECT_THAT(router.ScrapeMetrics(),
              HasSubstr("strata_router_rejections_total{reason=\"overloaded\"} 3"));
  // The slot is given back just after the client sees the end.
  EXPECT_TRUE(Eventually([&] { return router.admission().in_flight() == 0; }));
}

TEST(ClientRateLimiterTest, RefillsAtTheRateUpToTheBurst) {
  ClientRateLimiter limiter(/*rate=*/2.0, /*burst=*/3.0);
  const auto start = ClientRateLimiter::Clock::now();
  std::chrono::milliseconds retry_after{0};
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Allow("a", start, &retry_after));
  EXPECT_FALSE(limiter.Allow("a", start, &retry_after));
  EXPECT_EQ(retry_after, std::chrono::milliseconds(500));
  EXPECT_TRUE(limiter.Allow("b", start, &retry_after));  // its own bucket
  EXPECT_TRUE(limiter.Allow("a", start + std::chrono::milliseconds(500), &retry_after));
  EXPECT_FALSE(limiter.Allow("a", start + std::chrono::milliseconds(600), &retry_after));
  // Never more than the burst, however long the pause.
  const auto later = start + std::chrono::hours(1);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Allow("a", later, &retry_after));
  EXPECT_FALSE(limiter.Allow("a", later, &retry_after));
}

TEST(ClientRateLimiterTest, ForgetsRefilledKeysToStayBounded) {
  ClientRateLimiter limiter(/*rate=*/1.0, /*burst=*/1.0, /*max_keys=*/100);
  auto now = ClientRateLimiter::Clock::now();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(limiter.Allow(absl::StrCat("client", i), now, nullptr));
    now += std::chrono::milliseconds(100);
  }
  EXPECT_LE(limiter.keys(), 100u);
}

TEST(RouterTest, APerClientRateLimitRefusesTheExcessOfOneClientOnly) {
  ScriptedBackend scripted;
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouterOptions options = FastOptions();
  options.routing.client_rate = 0.5;
  options.routing.client_burst = 2;
  InProcessRouter router({backend.address}, options);
  ASSERT_TRUE(router.WaitForHealthy(1));
  const auto call = [&](const std::string& client, std::string* pushback) {
    grpc::ClientContext context;
    if (!client.empty()) context.AddMetadata("x-client-id", client);
    auto reader = router.stub().Generate(&context, {});
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    const grpc::Status status = reader->Finish();
    const auto& trailers = context.GetServerTrailingMetadata();
    if (auto it = trailers.find("grpc-retry-pushback-ms"); pushback && it != trailers.end()) {
      pushback->assign(it->second.data(), it->second.size());
    }
    return status;
  };
  EXPECT_TRUE(call("alice", nullptr).ok());
  EXPECT_TRUE(call("alice", nullptr).ok());
  std::string pushback;
  const grpc::Status refused = call("alice", &pushback);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("client \"alice\" is over its rate limit"));
  EXPECT_FALSE(pushback.empty());
  EXPECT_TRUE(call("bob", nullptr).ok());
  EXPECT_TRUE(call("", nullptr).ok());  // no key: not limited
  EXPECT_EQ(scripted.calls_.load(), 4);
  EXPECT_THAT(router.ScrapeMetrics(),
              HasSubstr("strata_router_rejections_total{reason=\"rate_limited\"} 1"));
}

TEST(RouterTest, ACancelWhileQueuedLeavesTheQueue) {
  ScriptedBackend slow;
  slow.responses_ = 1000;
  slow.interval_ = std::chrono::milliseconds(5);
  ServedBackend a = ServeBackend(&slow);
  InProcessRouterOptions options = FastOptions();
  options.max_in_flight = 1;
  options.max_queued = 4;
  InProcessRouter router({a.address}, options);
  ASSERT_TRUE(router.WaitForHealthy(1));
  grpc::ClientContext running_context;
  auto running = router.stub().Generate(&running_context, {});
  v1::GenerateResponse response;
  ASSERT_TRUE(running->Read(&response));
  const GenerateOutcome queued = RunGenerate(router.stub(), {}, std::chrono::milliseconds(200));
  EXPECT_EQ(queued.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(Eventually([&] { return router.admission().queued() == 0; }));
  running_context.TryCancel();
  running->Finish().IgnoreError();
  EXPECT_TRUE(Eventually([&] { return router.admission().in_flight() == 0; }));
  EXPECT_EQ(slow.calls_.load(), 1);
}

TEST(RouterTest, DrainingRefusesNewCallsAndLetsCallsInFlightFinish) {
  ScriptedBackend slow;
  slow.responses_ = 10;
  slow.interval_ = std::chrono::milliseconds(20);
  ServedBackend a = ServeBackend(&slow);
  InProcessRouter router({a.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  GenerateOutcome in_flight;
  std::thread client([&] { in_flight = RunGenerate(router.stub(), {}); });
  ASSERT_TRUE(Eventually([&] { return slow.active_.load() == 1; }));
  router.admission().StartDraining();
  const GenerateOutcome refused = RunGenerate(router.stub(), {});
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("draining"));
  client.join();
  EXPECT_TRUE(in_flight.status.ok());
  EXPECT_EQ(in_flight.token_ids().size(), 10u);
}

grpc::ByteBuffer Serialized(const v1::GenerateResponse& response) {
  grpc::ByteBuffer bytes;
  bool own_buffer = false;
  EXPECT_TRUE(
      grpc::SerializationTraits<v1::GenerateResponse>::Serialize(response, &bytes, &own_buffer)
          .ok());
  return bytes;
}

TEST(RouterTest, MergedResponsesKeepEveryTokenInOrderAndTheLastOnesEnding) {
  std::vector<grpc::ByteBuffer> parts;
  for (int i = 0; i < 3; ++i) {
    v1::GenerateResponse response;
    response.set_text(absl::StrCat("t", i, i == 1 ? "\xc3\xa9" : ""));
    response.add_token_ids(10 + i);
    response.add_logprobs()->mutable_chosen()->set_logprob(-1.0f * i);
    response.set_request_id("merge");
    if (i == 2) {
      response.set_finish_reason(v1::FINISH_REASON_STOP);
      response.mutable_usage()->set_completion_tokens(3);
    }
    parts.push_back(Serialized(response));
  }
  absl::StatusOr<grpc::ByteBuffer> merged = MergeGenerateResponses(parts);
  ASSERT_TRUE(merged.ok()) << merged.status();
  v1::GenerateResponse response;
  ASSERT_TRUE(
      grpc::SerializationTraits<v1::GenerateResponse>::Deserialize(&*merged, &response).ok());
  EXPECT_EQ(response.text(), "t0t1\xc3\xa9t2");
  EXPECT_THAT(response.token_ids(), ElementsAre(10, 11, 12));
  ASSERT_EQ(response.logprobs_size(), 3);
  EXPECT_EQ(response.logprobs(2).chosen().logprob(), -2.0f);
  EXPECT_EQ(response.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(response.usage().completion_tokens(), 3);
  EXPECT_EQ(response.request_id(), "merge");
  // The parts themselves are left as they were.
  v1::GenerateResponse first;
  ASSERT_TRUE(grpc::SerializationTraits<v1::GenerateResponse>::Deserialize(&parts[0], &first).ok());
  EXPECT_EQ(first.text(), "t0");

  grpc::Slice junk("\xff\xff\xff", 3);
  parts.push_back(grpc::ByteBuffer(&junk, 1));
  EXPECT_FALSE(MergeGenerateResponses(parts).ok());
}

TEST(RouterTest, AStreamBehindASlowClientArrivesWholeAndInOrder) {
  ScriptedBackend fast;
  fast.responses_ = 300;
  ServedBackend backend = ServeBackend(&fast);
  InProcessRouter router({backend.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto reader = router.stub().Generate(&context, v1::GenerateRequest());
  GenerateOutcome outcome;
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    outcome.responses.push_back(response);
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  outcome.status = reader->Finish();
  ASSERT_TRUE(outcome.status.ok()) << outcome.status.error_message();
  std::string expected_text;
  std::vector<int32_t> expected_ids;
  for (int i = 0; i < 300; ++i) {
    expected_text += absl::StrCat("r", i);
    expected_ids.push_back(i);
  }
  EXPECT_EQ(outcome.text(), expected_text);
  EXPECT_EQ(outcome.token_ids(), expected_ids);
  EXPECT_EQ(outcome.responses.back().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(outcome.responses.back().usage().completion_tokens(), 300);
  for (size_t i = 0; i + 1 < outcome.responses.size(); ++i) {
    EXPECT_EQ(outcome.responses[i].finish_reason(), v1::FINISH_REASON_UNSPECIFIED) << i;
  }
  std::printf("300 backend responses reached the slow client as %zu\n", outcome.responses.size());
}

TEST(RouterTest, RelaysManyConcurrentStreamsOverSeveralBackends) {
  std::vector<std::unique_ptr<ScriptedBackend>> scripted;
  std::vector<ServedBackend> served;
  std::vector<std::string> addresses;
  for (int i = 0; i < 3; ++i) {
    scripted.push_back(std::make_unique<ScriptedBackend>());
    scripted.back()->responses_ = 20;
    served.push_back(ServeBackend(scripted.back().get()));
    addresses.push_back(served.back().address);
  }
  InProcessRouter router(addresses, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(3));
  constexpr int kStreams = 24;
  std::vector<std::string> outcomes(kStreams);
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      const GenerateOutcome outcome = RunGenerate(router.stub(), {});
      outcomes[i] = absl::StrCat(outcome.status.error_code(), " ", outcome.status.error_message(),
                                 ", ", outcome.token_ids().size(), " tokens");
    });
  }
  for (auto& client : clients) client.join();
  for (const std::string& outcome : outcomes) EXPECT_EQ(outcome, "0 , 20 tokens");
  int total = 0;
  for (const auto& backend : scripted) total += backend->calls_.load();
  EXPECT_EQ(total, kStreams);
}

TEST(RouterTest, MetricsCountRelayedCallsByCodeAndBackend) {
  ScriptedBackend scripted;
  ServedBackend backend = ServeBackend(&scripted);
  InProcessRouter router({backend.address}, FastOptions());
  ASSERT_TRUE(router.WaitForHealthy(1));
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(RunGenerate(router.stub(), {}).status.ok());
  const std::string text = router.ScrapeMetrics();
  EXPECT_THAT(text, HasSubstr("strata_router_requests_total{code=\"OK\"} 2"));
  EXPECT_THAT(text, HasSubstr("strata_router_time_to_first_token_seconds_count 2"));
  EXPECT_THAT(text, HasSubstr("strata_router_request_duration_seconds_count 2"));
  EXPECT_THAT(text, HasSubstr("strata_router_requests_in_flight 0"));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("strata_router_backend_healthy{backend=\"",
                                           backend.address, "\"} 1")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("strata_router_backend_requests_in_flight{backend=\"",
                                           backend.address, "\"} 0")));
  // A backend that leaves the set leaves the metrics too, once its last user
  // (a health watch finishing on its own thread) lets it go.
  router.pool().Update({});
  EXPECT_TRUE(Eventually([&] {
    return router.ScrapeMetrics().find(backend.address) == std::string::npos;
  })) << router.ScrapeMetrics();
}

TEST(HealthWatcherTest, FollowsTheBackendsServingStatus) {
  ScriptedBackend scripted;
  ServedBackend served = ServeBackend(&scripted);
  served.SetServing(false);
  RouterMetrics metrics;
  Backend backend(served.address, &metrics);
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

  served.SetServing(true);
  EXPECT_TRUE(Eventually([&] { return backend.healthy() && last.load(); }));
  EXPECT_THAT(
      prometheus::TextSerializer().Serialize(metrics.registry()->Collect()),
      HasSubstr(absl::StrCat("strata_router_backend_healthy{backend=\"", served.address, "\"} 1")));
  served.SetServing(false);
  EXPECT_TRUE(Eventually([&] { return !backend.healthy(); }));
  served.SetServing(true);
  EXPECT_TRUE(Eventually([&] { return backend.healthy(); }));
  // The backend going away counts as not serving.
  served.server->Shutdown(std::chrono::system_clock::now());
  EXPECT_TRUE(Eventually([&] { return !backend.healthy(); }));
  watcher.Stop();
}

TEST(HealthWatcherTest, StopsPromptlyWhileTheBackendIsDown) {
  Backend backend(absl::StrCat("127.0.0.1:", testing::UnusedPort()), nullptr);
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
