// Admission control: at most `max_in_flight` Generate calls are routed at
// once; up to `max_queued` more wait in arrival order for a slot; beyond that
// a call is refused (the proxy answers RESOURCE_EXHAUSTED with a retry hint).
// While draining every new call is refused, queued ones still get slots.
//
// A waiter is told of its slot through Waiter::Admitted(), called on the
// thread that released the slot, with no lock of this class held.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>

namespace strata::router {

class AdmissionController {
 public:
  class Waiter {
   public:
    virtual ~Waiter() = default;
    // The waiter holds a slot now; it must Release() it once done.
    virtual void Admitted() = 0;
  };

  enum class Outcome { kAdmitted, kQueued, kQueueFull, kDraining };

  // max_in_flight 0: no limit (and no queue).
  AdmissionController(int32_t max_in_flight, int32_t max_queued);

  // kAdmitted: the caller holds a slot. kQueued: `waiter` gets Admitted()
  // later unless Withdraw()n first. Otherwise refused.
  Outcome TryAdmit(Waiter* waiter);
  // Gives a slot back; the oldest waiter, if any, takes it.
  void Release();
  // Takes a queued waiter out; false if it is not queued (already admitted).
  bool Withdraw(Waiter* waiter);

  void StartDraining();
  bool draining() const;

  int32_t in_flight() const;
  int32_t queued() const;
  int32_t max_in_flight() const { return max_in_flight_; }
  int32_t max_queued() const { return max_queued_; }

 private:
  const int32_t max_in_flight_;
  const int32_t max_queued_;
  mutable std::mutex mu_;
  int32_t in_flight_ = 0;      // guarded by mu_
  std::deque<Waiter*> queue_;  // guarded by mu_
  bool draining_ = false;      // guarded by mu_
};

}  // namespace strata::router
