// Backend discovery (--backends): a static list "HOST:PORT,HOST:PORT", or
// "dns:///NAME:PORT", re-resolved every `refresh` (a Kubernetes headless
// Service lists one address per ready replica leader). Each resolution that
// succeeds replaces the backend set (BackendPool::Update: new backends join,
// departed ones get no new calls while their calls in flight finish); one
// that fails keeps the last set.
//
// Resolution uses getaddrinfo (the system resolver: /etc/hosts, then DNS),
// or, with --dns-hosts-file, a hosts-style file read on every refresh (lines
// "ADDRESS NAME [ALIAS...]", '#' comments), so tests and local setups can
// change the answer without a DNS server.
//
// Thread-safety: DnsDiscovery's Start and Stop from one thread; resolution
// runs on its own thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "router/backend_pool.h"

namespace strata::router {

struct BackendsSpec {
  std::vector<std::string> static_addresses;  // static list, or
  std::string dns_name;                       // a name to resolve, with
  int dns_port = 0;                           // this port
  bool is_dns() const { return !dns_name.empty(); }
};

// Parses --backends. INVALID_ARGUMENT naming the flag and the bad entry.
absl::StatusOr<BackendsSpec> ParseBackends(std::string_view flag);

// Resolves a host name to addresses (IPv4 dotted, IPv6 without brackets), in
// the resolver's order, without duplicates.
using Resolver = std::function<absl::StatusOr<std::vector<std::string>>(const std::string& name)>;
Resolver SystemResolver();
Resolver HostsFileResolver(std::string path);

// "ADDRESS:PORT", bracketing IPv6 addresses.
std::string JoinHostPort(const std::string& address, int port);

class DnsDiscovery {
 public:
  // `pool` outlives the discovery.
  DnsDiscovery(BackendsSpec spec, Resolver resolver, std::chrono::milliseconds refresh,
               BackendPool& pool);
  ~DnsDiscovery();  // Stop()s

  // Resolves once (so the pool is filled before the router serves), then
  // keeps re-resolving on a thread. The first resolution's error is returned
  // (the thread still starts and keeps trying).
  absl::Status Start();
  void Stop();

 private:
  absl::Status ResolveOnce();
  void Run();

  const BackendsSpec spec_;
  const Resolver resolver_;
  const std::chrono::milliseconds refresh_;
  BackendPool& pool_;
  std::thread thread_;
  std::vector<std::string> last_;  // discovery thread (and Start) only

  std::mutex mu_;
  std::condition_variable stop_requested_;
  bool stopping_ = false;  // guarded by mu_
};

}  // namespace strata::router
