#include "router/load_watcher.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "common/grpc_stream_reader.h"
#include "spdlog/spdlog.h"

namespace strata::router {

BackendLoad LoadFromReport(const v1::LoadReport& report) {
  BackendLoad load;
  load.reported = true;
  load.waiting = report.waiting();
  load.running = report.running();
  load.kv_usage = std::clamp(static_cast<double>(report.kv_usage()), 0.0, 1.0);
  load.block_size = report.block_size();
  auto hashes = std::make_shared<std::vector<uint64_t>>(report.prefix_hashes().begin(),
                                                        report.prefix_hashes().end());
  std::sort(hashes->begin(), hashes->end());
  load.prefix_hashes = std::move(hashes);
  return load;
}

LoadWatcher::LoadWatcher(Backend& backend) : backend_(backend) {}

LoadWatcher::~LoadWatcher() { Stop(); }

void LoadWatcher::Start() {
  thread_ = std::thread([this] { Run(); });
}

void LoadWatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (current_ != nullptr) current_->TryCancel();
  }
  stop_requested_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LoadWatcher::Run() {
  auto backoff = std::chrono::milliseconds(100);
  while (true) {
    bool got_report = false;
    const grpc::Status status = WatchOnce(&got_report);
    backend_.SetLoad(BackendLoad{});
    if (got_report) backoff = std::chrono::milliseconds(100);
    if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      backoff = std::chrono::milliseconds(5000);
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (stop_requested_.wait_for(lock, backoff, [this] { return stopping_; })) return;
    if (status.error_code() != grpc::StatusCode::UNIMPLEMENTED) {
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
  }
}

grpc::Status LoadWatcher::WatchOnce(bool* got_report) {
  grpc::ClientContext context;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return grpc::Status::CANCELLED;
    current_ = &context;
  }
  v1::WatchLoadRequest request;
  const grpc::Status status = ReadServerStream<v1::LoadReport>(
      [&](grpc::ClientReadReactor<v1::LoadReport>* reactor) {
        backend_.replica().async()->WatchLoad(&context, &request, reactor);
      },
      [&](const v1::LoadReport& report) {
        *got_report = true;
        backend_.SetLoad(LoadFromReport(report));
      });
  {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = nullptr;
  }
  if (*got_report) {
    spdlog::debug("backend {}: load stream ended: {}", backend_.address(), status.error_message());
  }
  return status;
}

}  // namespace strata::router
