// One Generate call as the router serves it: admitted (or queued, or
// refused) by admission control, sent to a backend the policy picks, retried
// on another backend when the first one fails UNAVAILABLE before the first
// response, and relayed back as a stream.
//
// Relaying: one write to the client is in flight at a time, and the backend
// stream is read on meanwhile. Responses that arrive while a write is in
// flight are held (at most kMaxHeldResponses; then reading pauses, so a slow
// client slows the backend stream instead of filling the router's memory)
// and go out merged into one response when the write completes, as the
// worker itself coalesces tokens behind a write: text concatenated, token
// ids and logprobs appended, finish reason and usage from the last.
//
// Deadlines: every attempt carries the client's deadline (gRPC sends the
// time remaining). Cancellation: a client cancel (or an expired deadline)
// cancels the backend call at once, or withdraws the call from the admission
// queue, or stops a pending retry.
//
// Final status: the backend's own, with two exceptions. UNAVAILABLE before
// any response, when no retry is left, names the backend ("backend
// HOST:PORT: ..."); UNAVAILABLE after the first response is "replica lost
// mid-stream (backend HOST:PORT): ..." and is never retried, since the
// client has seen part of the output.
//
// Lifetime: the call deletes itself once the server side is done (OnDone),
// every backend attempt is done and no timer is pending.
//
// Thread-safety: reactions of the server side, the backend attempts, the
// retry timer and admission run on gRPC threads, possibly concurrently; the
// state that decides the next step is guarded by mu_.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "router/admission_controller.h"
#include "router/backend.h"
#include "router/request_router.h"
#include "strata/v1/inference.grpc.pb.h"

namespace strata::router {

// The serialized GenerateResponses `parts` (in stream order) as one: text
// concatenated, token ids and logprobs appended, the finish reason, usage
// and request id of the last that sets them. An error when a part does not
// parse.
absl::StatusOr<grpc::ByteBuffer> MergeGenerateResponses(const std::vector<grpc::ByteBuffer>& parts);

class RoutedGenerateCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                                 private AdmissionController::Waiter {
 public:
  // The message of the UNAVAILABLE status for a stream cut after its first response.
  static constexpr char kLostMidStream[] = "replica lost mid-stream";

  // Creates and starts the call (admission, then the first attempt); the
  // result is the reactor to return to gRPC. `router` and `calls_in_flight`
  // outlive the call; `calls_in_flight` counts it until its server side is done.
  // `request_bytes` is the request as the client sent it (relayed as is, so
  // a large prompt is never serialised again) and `request` its parse (for
  // routing); `request_bytes` is gRPC's and lives until OnDone.
  static RoutedGenerateCall* Start(grpc::CallbackServerContext* server_context,
                                   const grpc::ByteBuffer& request_bytes,
                                   v1::GenerateRequest request, std::string request_id,
                                   std::string session_key, RequestRouter& router,
                                   std::atomic<int32_t>* calls_in_flight);

  // Responses held behind a write in flight before reading pauses.
  static constexpr size_t kMaxHeldResponses = 32;

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  using Clock = std::chrono::steady_clock;

  // The backend call, made by method name with bytes in and out: one write
  // (the client's request, with the half-close) and a stream of reads.
  class Attempt final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    Attempt(RoutedGenerateCall& call, std::shared_ptr<Backend> backend)
        : call_(call), backend_(std::move(backend)) {}
    void OnReadDone(bool ok) override { call_.OnAttemptRead(*this, ok); }
    // A failed write shows in the status OnDone brings.
    void OnWriteDone(bool /*ok*/) override {}
    void OnDone(const grpc::Status& status) override { call_.OnAttemptDone(*this, status); }

    RoutedGenerateCall& call_;
    const std::shared_ptr<Backend> backend_;
    bool probe_ = false;  // the half-open probe of an ejected backend
    // Guarded by the call's mu_: a read is outstanding; the hold that keeps
    // the attempt open while reads may still be started has been removed.
    bool read_outstanding_ = false;
    bool hold_removed_ = false;
    grpc::ClientContext context_;
    grpc::ByteBuffer request_;   // shares the client's bytes
    grpc::ByteBuffer response_;  // relayed to the client unparsed
  };

  RoutedGenerateCall(grpc::CallbackServerContext* server_context,
                     const grpc::ByteBuffer& request_bytes, v1::GenerateRequest request,
                     std::string request_id, std::string session_key, RequestRouter& router,
                     std::atomic<int32_t>* calls_in_flight);

  void Admitted() override;
  // Picks a backend and starts an attempt, or waits for one, or fails.
  void Route();
  void OnAttemptRead(Attempt& attempt, bool ok);
  void OnAttemptDone(Attempt& attempt, const grpc::Status& status);
  void OnTimer(bool fired);
  // REQUIRES: mu_ held. Arms the timer to call Route() after `delay`.
  void ArmTimerLocked(std::chrono::milliseconds delay);
  // REQUIRES: mu_ held, held_ not empty. Moves the held responses into
  // out_, merged into one when there are several.
  void TakeHeldLocked();
  // REQUIRES: mu_ held. Whether the attempt's hold is to be removed now
  // (reading has stopped for good); true at most once per attempt.
  bool StopReadingLocked(Attempt& attempt);
  // Records the final status; the client call is finished once no write is
  // in flight and nothing is held.
  void SetFinalStatus(grpc::Status status);
  void MaybeFinish();
  // Releases `lock` and deletes the call when nothing refers to it any more.
  void MaybeDelete(std::unique_lock<std::mutex>& lock);
  // Whether the client's deadline leaves room for another attempt.
  bool DeadlineLeft() const;

  grpc::CallbackServerContext* const server_context_;
  RequestRouter& router_;
  std::atomic<int32_t>* const calls_in_flight_;
  // Owned by gRPC; valid until the server side's OnDone, which comes after
  // every attempt has been started (attempts share its slices).
  const grpc::ByteBuffer& request_bytes_;
  const v1::GenerateRequest request_;  // parsed, for routing
  const std::string request_id_;
  const RouteRequest route_;
  const Clock::time_point start_time_ = Clock::now();

  std::mutex mu_;
  enum class Stage { kAdmission, kRouting, kDone } stage_ = Stage::kAdmission;  // guarded by mu_
  bool holds_slot_ = false;         // guarded by mu_; an admission slot to Release
  bool cancelled_ = false;          // guarded by mu_; by the client or its deadline
  int32_t timers_outstanding_ = 0;  // guarded by mu_; armed, callback not yet finished
  // One alarm per wait (a retry backoff, a poll for an available backend),
  // kept until deletion: an alarm is never re-armed from its own callback.
  std::vector<std::unique_ptr<grpc::Alarm>> timers_;  // guarded by mu_
  bool first_response_seen_ = false;                  // guarded by mu_
  bool write_in_flight_ = false;                      // guarded by mu_
  bool client_gone_ = false;                          // guarded by mu_; a write failed
  bool reading_paused_ = false;                       // guarded by mu_; held_ is full
  std::vector<grpc::ByteBuffer> held_;                // guarded by mu_; read behind a write
  grpc::ByteBuffer out_;              // guarded by mu_ until StartWrite; gRPC's until OnWriteDone
  bool finish_called_ = false;        // guarded by mu_
  bool server_done_ = false;          // guarded by mu_
  int32_t attempts_outstanding_ = 0;  // guarded by mu_; started, OnDone not yet run
  Attempt* current_ = nullptr;        // guarded by mu_; the attempt being relayed
  std::vector<std::unique_ptr<Attempt>> attempts_;           // guarded by mu_; all, until deletion
  std::vector<std::string> tried_;                           // guarded by mu_; backend addresses
  std::optional<Clock::time_point> wait_for_backend_until_;  // guarded by mu_
  std::optional<Clock::time_point> first_call_time_;         // guarded by mu_
  std::optional<grpc::Status> final_status_;                 // guarded by mu_
  double backend_seconds_ = 0.0;  // guarded by mu_; the worker's own time, as reported
};

}  // namespace strata::router
