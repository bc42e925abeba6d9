#include "router/client_rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace strata::router {

ClientRateLimiter::ClientRateLimiter(double rate, double burst, size_t max_keys)
    : rate_(rate), burst_(std::max(1.0, burst)), max_keys_(std::max<size_t>(1, max_keys)) {}

bool ClientRateLimiter::Allow(const std::string& key, Clock::time_point now,
                              std::chrono::milliseconds* retry_after) {
  std::lock_guard<std::mutex> lock(mu_);
  if (buckets_.size() >= max_keys_ && !buckets_.contains(key)) {
    // Forget keys whose bucket has refilled: they lose nothing.
    absl::erase_if(buckets_, [&](const auto& entry) {
      const double idle = std::chrono::duration<double>(now - entry.second.updated).count();
      return entry.second.tokens + idle * rate_ >= burst_;
    });
  }
  auto [it, inserted] = buckets_.try_emplace(key, Bucket{burst_, now});
  Bucket& bucket = it->second;
  if (!inserted) {
    const double elapsed = std::chrono::duration<double>(now - bucket.updated).count();
    bucket.tokens = std::min(burst_, bucket.tokens + std::max(0.0, elapsed) * rate_);
    bucket.updated = now;
  }
  if (bucket.tokens >= 1.0) {
    bucket.tokens -= 1.0;
    return true;
  }
  if (retry_after != nullptr) {
    *retry_after = std::chrono::milliseconds(
        static_cast<int64_t>(std::ceil((1.0 - bucket.tokens) / rate_ * 1000.0)));
  }
  return false;
}

size_t ClientRateLimiter::keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  return buckets_.size();
}

}  // namespace strata::router
