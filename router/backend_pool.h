// The set of backends the router may use, and the watchers that follow each
// one (health via HealthWatcher, load via LoadWatcher). Discovery calls
// Update with the full list whenever it changes; backends that leave stop
// getting new calls at once, while calls already relayed to them finish
// (each call holds a shared_ptr to its backend).
//
// Thread-safety: all methods may be called from any thread. Update calls are
// serialised; a watcher is stopped (joined) outside the lock that Backends()
// takes, so balancing never waits for it.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "router/backend.h"
#include "router/health_watcher.h"
#include "router/load_watcher.h"

namespace strata::router {

class BackendPool {
 public:
  struct Options {
    EjectionPolicy ejection;
    bool watch_load = true;  // subscribe to Replica/WatchLoad reports
  };
  // Called after a backend's health changes (watcher thread).
  using OnHealthChange = std::function<void(const Backend& backend, bool serving)>;

  // `metrics` (may be null) outlives the pool.
  BackendPool(RouterMetrics* metrics, Options options, OnHealthChange on_health_change = nullptr);
  ~BackendPool();  // stops every watcher

  // Makes `addresses` ("HOST:PORT", duplicates ignored) the backend set.
  void Update(const std::vector<std::string>& addresses);

  // Every backend in the set now, in the order they were added.
  std::vector<std::shared_ptr<Backend>> Backends() const;
  std::vector<std::string> Addresses() const;
  // The backend at `address` (exactly as in the set), or null.
  std::shared_ptr<Backend> Find(const std::string& address) const;

  // Stops every watcher (for shutdown); the backends stay in the set.
  void StopWatching();

 private:
  struct Member {
    std::shared_ptr<Backend> backend;
    std::unique_ptr<HealthWatcher> health_watcher;
    std::unique_ptr<LoadWatcher> load_watcher;
  };

  RouterMetrics* const metrics_;
  const Options options_;
  const OnHealthChange on_health_change_;

  std::mutex update_mu_;  // serialises Update and StopWatching
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Member>> members_;  // guarded by mu_
};

}  // namespace strata::router
