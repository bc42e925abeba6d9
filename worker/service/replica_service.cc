#include "worker/service/replica_service.h"

#include <algorithm>
#include <memory>
#include <utility>

namespace strata::service {

v1::LoadReport LoadReportFromStats(const engine::EngineStats& stats, int32_t block_size,
                                   int32_t max_prefix_hashes) {
  v1::LoadReport report;
  report.set_waiting(stats.waiting);
  report.set_running(stats.running);
  report.set_kv_blocks_total(stats.kv_blocks_total);
  report.set_kv_blocks_free(stats.kv_blocks_free);
  report.set_kv_usage(stats.kv_blocks_total > 0 ? static_cast<float>(stats.kv_blocks_used) /
                                                      static_cast<float>(stats.kv_blocks_total)
                                                : 0.0f);
  report.set_block_size(block_size);
  const size_t count = std::min(stats.prefix_block_hashes.size(),
                                static_cast<size_t>(std::max(0, max_prefix_hashes)));
  report.mutable_prefix_hashes()->Add(stats.prefix_block_hashes.begin(),
                                      stats.prefix_block_hashes.begin() + count);
  return report;
}

// One WatchLoad call. The service's poll thread calls Tick() every
// poll_interval; a tick writes a new report when the load changed or the
// interval passed, unless a write is still in flight. The reactor deletes
// itself in OnDone, after leaving the service's set.
class ReplicaService::LoadStream final : public grpc::ServerWriteReactor<v1::LoadReport> {
 public:
  LoadStream(ReplicaService& service, engine::Engine& engine, const v1::WatchLoadRequest& request)
      : service_(service),
        engine_(engine),
        interval_(std::chrono::milliseconds(
            request.interval_ms() <= 0 ? 1000 : std::max(50, request.interval_ms()))),
        max_prefix_hashes_(request.max_prefix_hashes() > 0
                               ? request.max_prefix_hashes()
                               : service.options_.default_max_prefix_hashes) {}

  // REQUIRES: called by the service with its lock held (the stream is in its set).
  void Tick() {
    Action action = Action::kNone;
    {
      std::lock_guard<std::mutex> lock(mu_);
      action = ending_ ? FinishIfIdle() : NextReport();
    }
    Act(action);
  }

  // Ends the stream from the service (Stop).
  void End() {
    Action action = Action::kNone;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ending_ = true;
      action = FinishIfIdle();
    }
    Act(action);
  }

  void OnWriteDone(bool ok) override {
    Action action = Action::kNone;
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_in_flight_ = false;
      if (!ok) ending_ = true;
      if (ending_) action = FinishIfIdle();
    }
    Act(action);
  }

  void OnCancel() override { End(); }

  void OnDone() override {
    service_.Unregister(this);
    delete this;
  }

 private:
  using Clock = std::chrono::steady_clock;
  // What to start once mu_ is released (gRPC calls are never made under it).
  enum class Action { kNone, kWrite, kFinish };

  void Act(Action action) {
    if (action == Action::kWrite) StartWrite(&last_);
    if (action == Action::kFinish) Finish(grpc::Status::OK);
  }

  // REQUIRES: mu_ held.
  Action NextReport() {
    if (write_in_flight_ || finished_) return Action::kNone;
    v1::LoadReport report =
        LoadReportFromStats(engine_.Stats(), service_.options_.block_size, max_prefix_hashes_);
    const Clock::time_point now = Clock::now();
    const bool changed = sequence_ == 0 || report.waiting() != last_.waiting() ||
                         report.running() != last_.running() ||
                         report.kv_blocks_free() != last_.kv_blocks_free() ||
                         report.kv_blocks_total() != last_.kv_blocks_total() ||
                         !std::equal(report.prefix_hashes().begin(), report.prefix_hashes().end(),
                                     last_.prefix_hashes().begin(), last_.prefix_hashes().end());
    if (!changed && now - last_sent_ < interval_) return Action::kNone;
    report.set_sequence(++sequence_);
    // last_ is not touched again until OnWriteDone.
    last_ = std::move(report);
    last_sent_ = now;
    write_in_flight_ = true;
    return Action::kWrite;
  }

  // REQUIRES: mu_ held. kFinish once no write is in flight (exactly once).
  Action FinishIfIdle() {
    if (finished_ || write_in_flight_) return Action::kNone;
    finished_ = true;
    return Action::kFinish;
  }

  ReplicaService& service_;
  engine::Engine& engine_;
  const std::chrono::milliseconds interval_;
  const int32_t max_prefix_hashes_;

  std::mutex mu_;
  bool ending_ = false;           // guarded by mu_
  bool write_in_flight_ = false;  // guarded by mu_
  bool finished_ = false;         // guarded by mu_
  uint64_t sequence_ = 0;         // guarded by mu_
  v1::LoadReport last_;           // guarded by mu_; being written, then the last one sent
  Clock::time_point last_sent_;   // guarded by mu_
};

ReplicaService::ReplicaService(Options options)
    : options_(options), poll_thread_([this] { PollLoop(); }) {}

ReplicaService::~ReplicaService() { Stop(); }

void ReplicaService::AttachEngine(engine::Engine* engine) {
  engine_.store(engine, std::memory_order_release);
}

void ReplicaService::Stop() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    for (LoadStream* stream : streams_) stream->End();
    wake_.notify_all();
    streams_done_.wait(lock, [this] { return streams_.empty() && drain_calls_ == 0; });
  }
  if (poll_thread_.joinable()) poll_thread_.join();
}

void ReplicaService::PollLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (wake_.wait_for(lock, options_.poll_interval, [this] { return stopping_; })) return;
    for (LoadStream* stream : streams_) stream->Tick();
  }
}

void ReplicaService::Unregister(LoadStream* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.erase(stream);
  if (streams_.empty()) streams_done_.notify_all();
}

// One Drain call: counted by the service from its start until gRPC is done
// with it (its answer sent), so that Stop() waits for it.
class ReplicaService::DrainCall final : public grpc::ServerUnaryReactor {
 public:
  explicit DrainCall(ReplicaService& service) : service_(service) {}
  void OnDone() override {
    service_.DrainCallDone();
    delete this;
  }

 private:
  ReplicaService& service_;
};

void ReplicaService::DrainCallDone() {
  std::lock_guard<std::mutex> lock(mu_);
  --drain_calls_;
  streams_done_.notify_all();
}

void ReplicaService::SetDrainHandler(DrainHandler handler) {
  std::lock_guard<std::mutex> lock(mu_);
  drain_handler_ = std::move(handler);
}

grpc::ServerUnaryReactor* ReplicaService::Drain(grpc::CallbackServerContext* context,
                                                const v1::DrainRequest* request,
                                                v1::DrainResponse* response) {
  DrainHandler handler;
  {
    std::lock_guard<std::mutex> lock(mu_);
    handler = drain_handler_;
    ++drain_calls_;  // before the handler runs: it may start the process's shutdown
  }
  auto* reactor = new DrainCall(*this);
  if (!handler) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                 "this server does not accept drain requests"));
    return reactor;
  }
  const DrainOutcome outcome =
      handler(DrainRequestInfo{request->reason(), request->requested_by(), context->peer()});
  response->set_generate_calls_in_flight(outcome.generate_calls_in_flight);
  response->set_already_draining(outcome.already_draining);
  response->set_drain_timeout_seconds(outcome.drain_timeout_seconds);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<v1::LoadReport>* ReplicaService::WatchLoad(
    grpc::CallbackServerContext* context, const v1::WatchLoadRequest* request) {
  (void)context;
  engine::Engine* current = engine();
  bool refuse_stopping = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    refuse_stopping = stopping_;
  }
  if (current == nullptr || refuse_stopping) {
    // A reactor that only finishes.
    class Refusal final : public grpc::ServerWriteReactor<v1::LoadReport> {
     public:
      explicit Refusal(grpc::Status status) { Finish(std::move(status)); }
      void OnDone() override { delete this; }
    };
    return new Refusal(grpc::Status(grpc::StatusCode::UNAVAILABLE, refuse_stopping
                                                                       ? "worker is shutting down"
                                                                       : "model is still loading"));
  }
  auto* stream = new LoadStream(*this, *current, *request);
  {
    std::lock_guard<std::mutex> lock(mu_);
    streams_.insert(stream);
    // The first report goes out at once.
    stream->Tick();
  }
  return stream;
}

}  // namespace strata::service
