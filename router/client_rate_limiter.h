// Per-client token buckets for admission control: each client key (a
// metadata value, e.g. x-client-id) may start `rate` Generate calls per
// second on average, with bursts of up to `burst`. Keys idle long enough to
// have a full bucket are forgotten when the table grows past `max_keys`, so
// memory stays bounded whatever keys clients send.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"

namespace strata::router {

class ClientRateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  // REQUIRES: rate > 0, burst >= 1.
  ClientRateLimiter(double rate, double burst, size_t max_keys = 100000);

  // Takes one token from `key`'s bucket. When it is empty: false, and
  // *retry_after says when the next token comes.
  bool Allow(const std::string& key, Clock::time_point now, std::chrono::milliseconds* retry_after);

  double rate() const { return rate_; }
  double burst() const { return burst_; }
  size_t keys() const;

 private:
  struct Bucket {
    double tokens = 0.0;
    Clock::time_point updated;
  };

  const double rate_;
  const double burst_;
  const size_t max_keys_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_;  // guarded by mu_
};

}  // namespace strata::router
