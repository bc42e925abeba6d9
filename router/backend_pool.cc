#include "router/backend_pool.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "spdlog/spdlog.h"

namespace strata::router {

BackendPool::BackendPool(RouterMetrics* metrics, Options options, OnHealthChange on_health_change)
    : metrics_(metrics), options_(options), on_health_change_(std::move(on_health_change)) {}

BackendPool::~BackendPool() { StopWatching(); }

void BackendPool::Update(const std::vector<std::string>& addresses) {
  std::lock_guard<std::mutex> update_lock(update_mu_);
  const absl::flat_hash_set<std::string> wanted(addresses.begin(), addresses.end());
  std::vector<std::unique_ptr<Member>> removed;
  std::vector<Member*> added;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::flat_hash_set<std::string> present;
    std::vector<std::unique_ptr<Member>> kept;
    for (std::unique_ptr<Member>& member : members_) {
      if (wanted.contains(member->backend->address())) {
        present.insert(member->backend->address());
        kept.push_back(std::move(member));
      } else {
        removed.push_back(std::move(member));
      }
    }
    for (const std::string& address : addresses) {
      if (!present.insert(address).second) continue;
      auto member = std::make_unique<Member>();
      member->backend = std::make_shared<Backend>(address, metrics_, options_.ejection);
      Backend* backend = member->backend.get();
      member->health_watcher = std::make_unique<HealthWatcher>(*backend, [this, backend](bool on) {
        if (on_health_change_) on_health_change_(*backend, on);
      });
      if (options_.watch_load) member->load_watcher = std::make_unique<LoadWatcher>(*backend);
      added.push_back(member.get());
      kept.push_back(std::move(member));
    }
    members_ = std::move(kept);
  }
  for (Member* member : added) {
    spdlog::info("backend {} added", member->backend->address());
    member->health_watcher->Start();
    if (member->load_watcher) member->load_watcher->Start();
  }
  for (std::unique_ptr<Member>& member : removed) {
    spdlog::info("backend {} removed; calls in flight on it continue", member->backend->address());
    member->backend->SetHealthy(false);
    member->health_watcher->Stop();
    if (member->load_watcher) member->load_watcher->Stop();
  }
}

std::vector<std::shared_ptr<Backend>> BackendPool::Backends() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<Backend>> backends;
  backends.reserve(members_.size());
  for (const auto& member : members_) backends.push_back(member->backend);
  return backends;
}

std::vector<std::string> BackendPool::Addresses() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> addresses;
  for (const auto& member : members_) addresses.push_back(member->backend->address());
  return addresses;
}

std::shared_ptr<Backend> BackendPool::Find(const std::string& address) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& member : members_) {
    if (member->backend->address() == address) return member->backend;
  }
  return nullptr;
}

void BackendPool::StopWatching() {
  std::lock_guard<std::mutex> update_lock(update_mu_);
  std::vector<Member*> members;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& member : members_) members.push_back(member.get());
  }
  for (Member* member : members) {
    member->health_watcher->Stop();
    if (member->load_watcher) member->load_watcher->Stop();
  }
}

}  // namespace strata::router
