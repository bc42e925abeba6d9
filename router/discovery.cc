#include "router/discovery.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "spdlog/spdlog.h"

namespace strata::router {
namespace {

constexpr std::string_view kDnsScheme = "dns:///";

// Splits "HOST:PORT" (or "[V6]:PORT"); false when malformed.
bool SplitHostPort(std::string_view address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == address.size()) return false;
  std::string_view host_part = address.substr(0, colon);
  if (host_part.front() == '[') {
    if (host_part.back() != ']') return false;
    host_part = host_part.substr(1, host_part.size() - 2);
  } else if (host_part.find(':') != std::string_view::npos) {
    return false;  // an IPv6 address needs brackets
  }
  const std::string_view port_part = address.substr(colon + 1);
  int value = 0;
  auto [end, error] = std::from_chars(port_part.data(), port_part.data() + port_part.size(), value);
  if (error != std::errc() || end != port_part.data() + port_part.size() || value <= 0 ||
      value > 65535 || host_part.empty()) {
    return false;
  }
  *host = std::string(host_part);
  *port = value;
  return true;
}

void AddUnique(std::vector<std::string>& list, std::string value) {
  if (std::find(list.begin(), list.end(), value) == list.end()) list.push_back(std::move(value));
}

}  // namespace

std::string JoinHostPort(const std::string& address, int port) {
  if (address.find(':') != std::string::npos) return absl::StrCat("[", address, "]:", port);
  return absl::StrCat(address, ":", port);
}

absl::StatusOr<BackendsSpec> ParseBackends(std::string_view flag) {
  BackendsSpec spec;
  std::string host;
  int port = 0;
  if (flag.substr(0, 6) == "dns://") {
    if (flag.substr(0, kDnsScheme.size()) != kDnsScheme) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--backends ", std::string(flag),
          ": a DNS server authority is not supported; write dns:///NAME:PORT (the system "
          "resolver) or use --dns-hosts-file"));
    }
    if (!SplitHostPort(flag.substr(kDnsScheme.size()), &host, &port)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--backends ", std::string(flag), ": expected dns:///NAME:PORT"));
    }
    spec.dns_name = host;
    spec.dns_port = port;
    return spec;
  }
  for (absl::string_view entry : absl::StrSplit(absl::string_view(flag.data(), flag.size()), ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    if (entry.empty()) continue;
    if (!SplitHostPort(std::string_view(entry.data(), entry.size()), &host, &port)) {
      return absl::InvalidArgumentError(absl::StrCat("--backends: \"", std::string(entry),
                                                     "\" is not HOST:PORT (IPv6: [ADDRESS]:PORT)"));
    }
    AddUnique(spec.static_addresses, std::string(entry));
  }
  if (spec.static_addresses.empty()) {
    return absl::InvalidArgumentError(
        "--backends: no backend given; expected HOST:PORT,... or dns:///NAME:PORT");
  }
  return spec;
}

Resolver SystemResolver() {
  return [](const std::string& name) -> absl::StatusOr<std::vector<std::string>> {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* result = nullptr;
    const int error = getaddrinfo(name.c_str(), nullptr, &hints, &result);
    if (error != 0) {
      return absl::UnavailableError(absl::StrCat("resolving ", name, ": ", gai_strerror(error)));
    }
    std::vector<std::string> addresses;
    for (addrinfo* info = result; info != nullptr; info = info->ai_next) {
      char text[INET6_ADDRSTRLEN] = {};
      const void* raw = nullptr;
      if (info->ai_family == AF_INET) {
        raw = &reinterpret_cast<sockaddr_in*>(info->ai_addr)->sin_addr;
      } else if (info->ai_family == AF_INET6) {
        raw = &reinterpret_cast<sockaddr_in6*>(info->ai_addr)->sin6_addr;
      } else {
        continue;
      }
      if (inet_ntop(info->ai_family, raw, text, sizeof(text)) != nullptr) {
        AddUnique(addresses, text);
      }
    }
    freeaddrinfo(result);
    return addresses;
  };
}

Resolver HostsFileResolver(std::string path) {
  return [path](const std::string& name) -> absl::StatusOr<std::vector<std::string>> {
    std::ifstream file(path);
    if (!file)
      return absl::UnavailableError(absl::StrCat("--dns-hosts-file ", path, ": cannot read"));
    std::vector<std::string> addresses;
    std::string line;
    while (std::getline(file, line)) {
      if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
      std::istringstream fields(line);
      std::string address;
      if (!(fields >> address)) continue;
      std::string alias;
      while (fields >> alias) {
        if (alias == name) {
          AddUnique(addresses, address);
          break;
        }
      }
    }
    return addresses;
  };
}

DnsDiscovery::DnsDiscovery(BackendsSpec spec, Resolver resolver, std::chrono::milliseconds refresh,
                           BackendPool& pool)
    : spec_(std::move(spec)), resolver_(std::move(resolver)), refresh_(refresh), pool_(pool) {}

DnsDiscovery::~DnsDiscovery() { Stop(); }

absl::Status DnsDiscovery::Start() {
  absl::Status first = ResolveOnce();
  thread_ = std::thread([this] { Run(); });
  return first;
}

void DnsDiscovery::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stop_requested_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status DnsDiscovery::ResolveOnce() {
  absl::StatusOr<std::vector<std::string>> resolved = resolver_(spec_.dns_name);
  if (!resolved.ok()) {
    spdlog::warn("discovery: {}; keeping {} backends", std::string(resolved.status().message()),
                 last_.size());
    return resolved.status();
  }
  std::vector<std::string> addresses;
  for (const std::string& address : *resolved) {
    addresses.push_back(JoinHostPort(address, spec_.dns_port));
  }
  if (addresses != last_) {
    spdlog::info("discovery: {} resolves to [{}]", spec_.dns_name, absl::StrJoin(addresses, ", "));
    pool_.Update(addresses);
    last_ = std::move(addresses);
  }
  return absl::OkStatus();
}

void DnsDiscovery::Run() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stop_requested_.wait_for(lock, refresh_, [this] { return stopping_; })) return;
    }
    ResolveOnce().IgnoreError();
  }
}

}  // namespace strata::router
