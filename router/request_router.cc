#include "router/request_router.h"

#include <algorithm>
#include <random>

namespace strata::router {

RequestRouter::RequestRouter(BackendPool& pool, Balancer& balancer, AdmissionController& admission,
                             RouterMetrics* metrics, RoutingOptions options)
    : pool_(pool),
      balancer_(balancer),
      admission_(admission),
      metrics_(metrics),
      options_(options),
      rate_limiter_(options.client_rate > 0.0 ? std::make_unique<ClientRateLimiter>(
                                                    options.client_rate, options.client_burst)
                                              : nullptr) {}

RequestRouter::Choice RequestRouter::Pick(const RouteRequest& request,
                                          const std::vector<std::string>& tried) {
  Choice choice;
  const std::vector<std::shared_ptr<Backend>> backends = pool_.Backends();
  choice.known_backends = backends.size();
  const Backend::Clock::time_point now = Backend::Clock::now();
  std::vector<std::shared_ptr<Backend>> fresh;
  std::vector<std::shared_ptr<Backend>> retried;
  for (const std::shared_ptr<Backend>& backend : backends) {
    if (!backend->Available(now)) continue;
    const bool was_tried = std::find(tried.begin(), tried.end(), backend->address()) != tried.end();
    (was_tried ? retried : fresh).push_back(backend);
  }
  // A backend tried before is used again only when nothing else is left
  // (e.g. a single backend that restarted).
  std::vector<std::shared_ptr<Backend>>& candidates = fresh.empty() ? retried : fresh;
  if (candidates.empty()) return choice;
  if (!request.session_key.empty()) {
    const size_t home = RendezvousChoice(KeyHash(request.session_key), candidates);
    double least = LoadScore(*candidates[0]);
    for (const auto& backend : candidates) least = std::min(least, LoadScore(*backend));
    if (LoadScore(*candidates[home]) <= least + options_.affinity_margin) {
      choice.backend = candidates[home];
      choice.reason = PickReason::kSession;
      return choice;
    }
  }
  const struct Pick pick = balancer_.Choose(candidates, request);
  choice.backend = candidates[pick.index];
  choice.reason = pick.reason;
  return choice;
}

std::chrono::milliseconds RequestRouter::RetryBackoff(int32_t retry) const {
  thread_local std::minstd_rand random_engine{std::random_device{}()};
  const int shift = std::clamp(retry - 1, 0, 16);
  const auto ceiling =
      std::min(options_.retry_backoff * (int64_t{1} << shift), options_.max_retry_backoff);
  // Full jitter in [ceiling / 2, ceiling].
  std::uniform_int_distribution<int64_t> jitter(ceiling.count() / 2, ceiling.count());
  return std::chrono::milliseconds(jitter(random_engine));
}

}  // namespace strata::router
