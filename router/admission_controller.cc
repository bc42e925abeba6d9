#include "router/admission_controller.h"

#include <algorithm>

namespace strata::router {

AdmissionController::AdmissionController(int32_t max_in_flight, int32_t max_queued)
    : max_in_flight_(std::max(0, max_in_flight)), max_queued_(std::max(0, max_queued)) {}

AdmissionController::Outcome AdmissionController::TryAdmit(Waiter* waiter) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return Outcome::kDraining;
  if (max_in_flight_ == 0 || (in_flight_ < max_in_flight_ && queue_.empty())) {
    ++in_flight_;
    return Outcome::kAdmitted;
  }
  if (static_cast<int32_t>(queue_.size()) >= max_queued_) return Outcome::kQueueFull;
  queue_.push_back(waiter);
  return Outcome::kQueued;
}

void AdmissionController::Release() {
  Waiter* next = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.empty()) {
      --in_flight_;
      return;
    }
    // The slot passes straight to the oldest waiter.
    next = queue_.front();
    queue_.pop_front();
  }
  next->Admitted();
}

bool AdmissionController::Withdraw(Waiter* waiter) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(queue_.begin(), queue_.end(), waiter);
  if (it == queue_.end()) return false;
  queue_.erase(it);
  return true;
}

void AdmissionController::StartDraining() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

bool AdmissionController::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

int32_t AdmissionController::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_flight_;
}

int32_t AdmissionController::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int32_t>(queue_.size());
}

}  // namespace strata::router
