// ReadServerStream: reads one server-streaming call to its end with gRPC's
// callback API, handing each message to a function, while the calling thread
// waits (on a condition variable) for the final status.
//
// Why not grpc::ClientReader: a thread blocked in a synchronous gRPC read
// polls gRPC's one shared epoll set (the epoll1 engine), so it takes the
// events of every connection in the process and hands their callbacks to
// gRPC's callback threads with a wake-up each. The router's long-lived watch
// streams (health and load, per backend) did about a quarter of its event
// handling that way under load, and a load generator's client threads (one per
// stream in flight) all competed to poll. A thread waiting on a condition
// variable polls nothing.
//
// Thread-safety: `on_message` runs on gRPC's threads, one message at a time.
// Cancel the call with context->TryCancel() from any thread.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>

#include "grpcpp/grpcpp.h"

namespace strata {

// `start` begins the call on the reactor it is given, e.g.
//   [&](auto* reactor) { stub.async()->Watch(context, &request, reactor); }
// Returns the call's final status once gRPC is done with it.
template <typename Response>
grpc::Status ReadServerStream(const std::function<void(grpc::ClientReadReactor<Response>*)>& start,
                              const std::function<void(const Response&)>& on_message) {
  class Reader final : public grpc::ClientReadReactor<Response> {
   public:
    explicit Reader(const std::function<void(const Response&)>& on_message)
        : on_message_(on_message) {}

    void OnReadDone(bool ok) override {
      if (!ok) return;  // the stream ended; OnDone follows
      on_message_(response_);
      this->StartRead(&response_);
    }
    void OnDone(const grpc::Status& status) override {
      // Notified under the lock: the waiter destroys this object as soon as
      // it holds the lock again, and OnDone touches nothing after unlocking.
      std::lock_guard<std::mutex> lock(mu_);
      status_ = status;
      done_ = true;
      done_changed_.notify_all();
    }
    grpc::Status Run(const std::function<void(grpc::ClientReadReactor<Response>*)>& start) {
      start(this);
      this->StartRead(&response_);
      this->StartCall();
      std::unique_lock<std::mutex> lock(mu_);
      done_changed_.wait(lock, [this] { return done_; });
      return status_;
    }

   private:
    const std::function<void(const Response&)>& on_message_;
    Response response_;
    std::mutex mu_;
    std::condition_variable done_changed_;
    bool done_ = false;    // guarded by mu_
    grpc::Status status_;  // guarded by mu_
  };
  Reader reader(on_message);
  return reader.Run(start);
}

}  // namespace strata
