// A small TCP key-value store for bootstrapping a replica: the leader runs a
// TcpStoreServer on --leader-address; every rank (the leader too) connects a
// TcpStore client. Ranks use it to exchange Gloo addresses, NCCL unique ids and
// the start-up handshake, and the server doubles as the replica's liveness
// oracle: each rank holds a presence connection, and a presence connection that
// closes without a goodbye marks its rank lost (the process died).
//
// Keys are strings, values are byte strings; a key, once set, can be
// overwritten but never deleted. Get and Wait block until the keys exist or a
// timeout passes. This store is for start-up and failure diagnosis only; it is
// never on the path of a step.
//
// Thread-safety: TcpStoreServer is thread-safe (one thread per connection). A
// TcpStore client serialises its calls on one connection, so a blocking Get
// delays other calls on the same client; it is safe to call from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace strata::parallel {

struct HostPort {
  std::string host;
  int port = 0;
  // "host:port", with brackets around IPv6 literals.
  std::string ToString() const;
};

// Parses "host:port" or "[v6]:port"; port must be in [0, 65535].
absl::StatusOr<HostPort> ParseHostPort(const std::string& text);

class TcpStoreServer {
 public:
  // Listens on `bind_address` ("host:port"; port 0 picks a free port; host
  // "0.0.0.0" or "" listens on every interface).
  static absl::StatusOr<std::unique_ptr<TcpStoreServer>> Start(const std::string& bind_address);
  ~TcpStoreServer();  // Stop()s
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  // The bound port (useful with port 0).
  int port() const { return port_; }
  // Closes the listener and every connection; blocked calls return an error
  // to their clients. Idempotent.
  void Stop();

  // Ranks whose presence connection closed without a goodbye, ascending.
  std::vector<int> LostRanks() const;

  // Waits until no presence connection is open (every rank said goodbye or
  // died) or `timeout` passes; returns whether it drained. The leader calls
  // this before exiting so that followers still diagnosing a failure can reach
  // the store instead of blaming the leader.
  bool WaitForPresenceToDrain(absl::Duration timeout);

  struct Connection;

 private:
  explicit TcpStoreServer(int listen_fd, int port);
  void AcceptLoop();
  void Serve(Connection* connection);
  // Handles one request; returns false to close the connection.
  bool Handle(Connection* connection, const std::string& request, std::string* response);
  void ReapFinishedLocked();

  const int listen_fd_;
  const int port_;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;

  mutable std::mutex mu_;
  std::condition_variable keys_changed_;
  std::map<std::string, std::string> data_;             // guarded by mu_
  std::list<std::unique_ptr<Connection>> connections_;  // guarded by mu_
  std::set<int> lost_ranks_;                            // guarded by mu_
  int open_presence_connections_ = 0;                   // guarded by mu_
};

struct TcpStoreOptions {
  // How long Connect keeps retrying (with backoff) to reach the server.
  absl::Duration connect_timeout = absl::Seconds(30);
};

class TcpStore {
 public:
  // Connects to the server at `address` ("host:port"), retrying with
  // exponential backoff until options.connect_timeout; then DEADLINE_EXCEEDED
  // naming the address and the last connection error.
  static absl::StatusOr<std::unique_ptr<TcpStore>> Connect(const std::string& address,
                                                           const TcpStoreOptions& options = {});
  ~TcpStore();  // says goodbye on the presence connection, if any
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  absl::Status Set(const std::string& key, const std::string& value);
  // Waits until `key` exists; DEADLINE_EXCEEDED after `timeout`.
  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout);
  // Waits until every key exists; DEADLINE_EXCEEDED naming the missing keys.
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout);
  // Adds `delta` to the integer at `key` (absent = 0) and returns the result.
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta);

  // Opens this process's presence connection for world rank `rank`. From now
  // on the server reports `rank` lost if the process dies (the connection
  // closes without the goodbye the destructor sends).
  absl::Status RegisterPresence(int rank);
  // Ranks the server has seen die. UNAVAILABLE when the server itself is gone.
  absl::StatusOr<std::vector<int>> LostRanks();

  // The server's address, as given to Connect.
  const std::string& server_address() const { return server_address_; }
  // This host's address on the connection to the server: an address the
  // server's host (and, in practice, the other ranks) can reach this host at.
  const std::string& local_host() const { return local_host_; }

 private:
  TcpStore(std::string server_address, int fd, std::string local_host);
  // Sends one request on `fd` and reads its response; `read_timeout` bounds
  // the wait. On an I/O error closes `fd` and sets it to -1.
  absl::StatusOr<std::string> Call(int& fd, const std::string& request,
                                   absl::Duration read_timeout);

  const std::string server_address_;
  const std::string local_host_;
  std::mutex mu_;
  int fd_;  // guarded by mu_
  // The presence connection also serves LostRanks, so a diagnosis never waits
  // behind a blocking Get on fd_.
  std::mutex presence_mu_;
  int presence_fd_ = -1;  // guarded by presence_mu_
};

}  // namespace strata::parallel
