#include "tests/router/router_harness.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/text_serializer.h"

namespace strata::router::testing {

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

grpc::Status ScriptedBackend::Generate(grpc::ServerContext* context,
                                       const v1::GenerateRequest* request,
                                       grpc::ServerWriter<v1::GenerateResponse>* writer) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_request_ = *request;
    last_deadline_ = context->deadline();
    if (request->has_token_ids()) {
      token_prompts_.emplace_back(request->token_ids().ids().begin(),
                                  request->token_ids().ids().end());
    }
  }
  calls_.fetch_add(1);
  active_.fetch_add(1);
  struct Leave {
    std::atomic<int>& active;
    ~Leave() { active.fetch_sub(1); }
  } leave{active_};
  if (!error_.ok() && error_after_ == 0) return error_;
  for (int i = 0; i < responses_; ++i) {
    if (context->IsCancelled()) {
      cancelled_.store(true);
      return grpc::Status::CANCELLED;
    }
    if (!error_.ok() && i == error_after_) return error_;
    v1::GenerateResponse response;
    response.set_text(absl::StrCat("r", i));
    response.add_token_ids(i);
    response.set_request_id(name_);
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

grpc::Status ScriptedBackend::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                       v1::TokenizeResponse* response) {
  for (char c : request->text()) response->add_ids(c);
  return grpc::Status::OK;
}

grpc::Status ScriptedBackend::Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* request,
                                         v1::DetokenizeResponse* response) {
  if (request->ids_size() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "ids: empty");
  }
  for (int32_t id : request->ids()) response->mutable_text()->push_back(static_cast<char>(id));
  return grpc::Status::OK;
}

grpc::Status ScriptedBackend::GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                                           v1::ModelInfo* response) {
  response->set_model_name(name_);
  response->set_vocab_size(99);
  return grpc::Status::OK;
}

grpc::Status ScriptedReplicaLoad::WatchLoad(grpc::ServerContext* context,
                                            const v1::WatchLoadRequest*,
                                            grpc::ServerWriter<v1::LoadReport>* writer) {
  uint64_t sequence = 0;
  while (!context->IsCancelled()) {
    v1::LoadReport report;
    report.set_running(backend_.active_.load());
    report.set_block_size(kBlockSize);
    report.set_kv_blocks_total(1000);
    report.set_sequence(++sequence);
    {
      std::lock_guard<std::mutex> lock(backend_.mu_);
      for (const std::vector<int32_t>& prompt : backend_.token_prompts_) {
        for (uint64_t hash : PrefixBlockHashes(prompt, kBlockSize, prompt.size())) {
          report.add_prefix_hashes(hash);
        }
      }
    }
    if (!writer->Write(report)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return grpc::Status::OK;
}

void ServedBackend::SetServing(bool serving) {
  server->GetHealthCheckService()->SetServingStatus(std::string(v1::Inference::service_full_name()),
                                                    serving);
}

ServedBackend ServeBackend(grpc::Service* service, grpc::Service* extra) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service);
  if (extra != nullptr) builder.RegisterService(extra);
  ServedBackend served;
  served.server = builder.BuildAndStart();
  served.address = absl::StrCat("127.0.0.1:", port);
  if (served.server != nullptr) served.SetServing(true);
  return served;
}

InProcessRouter::InProcessRouter(const std::vector<std::string>& backends,
                                 InProcessRouterOptions options) {
  pool_ = std::make_unique<BackendPool>(&metrics_, options.pool);
  balancer_ = *CreateBalancer(options.policy, options.balancing);
  admission_ = std::make_unique<AdmissionController>(options.max_in_flight, options.max_queued);
  router_ =
      std::make_unique<RequestRouter>(*pool_, *balancer_, *admission_, &metrics_, options.routing);
  proxy_ = std::make_unique<InferenceProxy>(*router_);
  pool_->Update(backends);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(proxy_.get());
  server_ = builder.BuildAndStart();
  address_ = absl::StrCat("127.0.0.1:", port);
  stub_ = v1::Inference::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
}

InProcessRouter::~InProcessRouter() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  pool_->StopWatching();
}

std::string InProcessRouter::ScrapeMetrics() {
  return prometheus::TextSerializer().Serialize(metrics_.registry()->Collect());
}

bool InProcessRouter::WaitForHealthy(size_t count, std::chrono::milliseconds timeout) {
  return Eventually(
      [&] {
        size_t healthy = 0;
        for (const auto& backend : pool_->Backends()) healthy += backend->healthy() ? 1 : 0;
        return healthy >= count;
      },
      timeout);
}

std::string GenerateOutcome::text() const {
  std::string text;
  for (const v1::GenerateResponse& response : responses) text += response.text();
  return text;
}

std::vector<int32_t> GenerateOutcome::token_ids() const {
  std::vector<int32_t> ids;
  for (const v1::GenerateResponse& response : responses) {
    ids.insert(ids.end(), response.token_ids().begin(), response.token_ids().end());
  }
  return ids;
}

GenerateOutcome RunGenerate(v1::Inference::Stub& stub, const v1::GenerateRequest& request,
                            std::chrono::milliseconds timeout) {
  GenerateOutcome outcome;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) outcome.responses.push_back(response);
  outcome.status = reader->Finish();
  return outcome;
}

}  // namespace strata::router::testing
