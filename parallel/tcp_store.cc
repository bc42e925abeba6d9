#include "parallel/tcp_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace strata::parallel {
namespace {

// Wire format: every message is a frame: u32 body length, then the body. A
// request body starts with an Op byte, a response body with a Reply byte.
// Integers are little-endian; strings are a u32 length then the bytes.
enum class Op : uint8_t { kSet = 1, kGet, kWait, kAdd, kHello, kBye, kLostRanks };
enum class Reply : uint8_t { kOk = 0, kTimeout = 1, kError = 2 };

constexpr size_t kMaxFrameBytes = 256u << 20;

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutString(std::string* out, const std::string& s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}

// Reads fields from a frame body; any overrun sets ok() to false.
class FrameReader {
 public:
  explicit FrameReader(const std::string& body) : body_(body) {}
  bool ok() const { return ok_; }
  bool AtEnd() const { return pos_ == body_.size(); }

  uint8_t U8() {
    if (!Need(1)) return 0;
    return static_cast<uint8_t>(body_[pos_++]);
  }
  uint32_t U32() {
    if (!Need(4)) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<uint8_t>(body_[pos_++])} << (8 * i);
    return v;
  }
  uint64_t U64() {
    if (!Need(8)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(body_[pos_++])} << (8 * i);
    return v;
  }
  std::string String() {
    const uint32_t n = U32();
    if (!Need(n)) return "";
    std::string s = body_.substr(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  bool Need(size_t n) {
    if (!ok_ || body_.size() - pos_ < n) ok_ = false;
    return ok_;
  }
  const std::string& body_;
  size_t pos_ = 0;
  bool ok_ = true;
};

std::string ErrnoText(int err) { return std::strerror(err); }

absl::Status SendAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t sent = ::send(fd, data, n, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("send failed: ", ErrnoText(errno)));
    }
    data += sent;
    n -= static_cast<size_t>(sent);
  }
  return absl::OkStatus();
}

// Reads exactly n bytes, waiting at most until `deadline`.
absl::Status RecvAll(int fd, char* data, size_t n, absl::Time deadline) {
  while (n > 0) {
    int wait_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError("timed out waiting for a reply");
      }
      wait_ms = static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1 << 30));
    }
    pollfd pfd{fd, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, wait_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("poll failed: ", ErrnoText(errno)));
    }
    if (ready == 0) continue;  // the deadline check above decides
    const ssize_t got = ::recv(fd, data, n, 0);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return absl::UnavailableError(absl::StrCat("recv failed: ", ErrnoText(errno)));
    }
    if (got == 0) return absl::UnavailableError("connection closed by the other side");
    data += got;
    n -= static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

absl::Status WriteFrame(int fd, const std::string& body) {
  std::string frame;
  frame.reserve(4 + body.size());
  PutU32(&frame, static_cast<uint32_t>(body.size()));
  frame.append(body);
  return SendAll(fd, frame.data(), frame.size());
}

absl::StatusOr<std::string> ReadFrame(int fd, absl::Time deadline) {
  char header[4];
  STRATA_RETURN_IF_ERROR(RecvAll(fd, header, 4, deadline));
  const std::string header_text(header, 4);
  FrameReader reader(header_text);
  const uint32_t size = reader.U32();
  if (size > kMaxFrameBytes) {
    return absl::DataLossError(absl::StrCat("frame of ", size, " bytes exceeds the limit"));
  }
  std::string body(size, '\0');
  STRATA_RETURN_IF_ERROR(RecvAll(fd, body.data(), size, deadline));
  return body;
}

void SetNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string PeerName(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&addr)->sin_addr, host,
                sizeof(host));
  } else if (addr.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_addr, host,
                sizeof(host));
  }
  return host;
}

// One non-blocking connect attempt to any address of host:port, bounded by
// `attempt_timeout`. Returns the connected (blocking) socket.
absl::StatusOr<int> ConnectOnce(const HostPort& target, absl::Duration attempt_timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  const std::string port = std::to_string(target.port);
  const int rc = ::getaddrinfo(target.host.c_str(), port.c_str(), &hints, &results);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", target.host, ": ", ::gai_strerror(rc)));
  }
  std::string last_error = "no address";
  for (addrinfo* ai = results; ai != nullptr; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = ErrnoText(errno);
      continue;
    }
    const int flags = ::fcntl(fd, F_GETFL, 0);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int err = 0;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd pfd{fd, POLLOUT, 0};
        const int ready =
            ::poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(attempt_timeout)) + 1);
        if (ready <= 0) {
          err = ready == 0 ? ETIMEDOUT : errno;
        } else {
          socklen_t len = sizeof(err);
          ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        }
      }
    }
    if (err == 0) {
      ::fcntl(fd, F_SETFL, flags);
      SetNoDelay(fd);
      ::freeaddrinfo(results);
      return fd;
    }
    last_error = ErrnoText(err);
    ::close(fd);
  }
  ::freeaddrinfo(results);
  return absl::UnavailableError(last_error);
}

// Connects, retrying with exponential backoff (50 ms doubling to 1 s) until
// `deadline`.
absl::StatusOr<int> ConnectWithRetry(const std::string& address, absl::Time deadline) {
  STRATA_ASSIGN_OR_RETURN(HostPort target, ParseHostPort(address));
  absl::Duration backoff = absl::Milliseconds(50);
  std::string last_error;
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    absl::StatusOr<int> fd =
        ConnectOnce(target, std::clamp(left, absl::Milliseconds(100), absl::Seconds(2)));
    if (fd.ok()) return fd;
    last_error = std::string(fd.status().message());
    if (absl::Now() + backoff > deadline) break;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("could not reach the store at ", address, " (last error: ", last_error, ")"));
}

std::string ReplyOk(const std::string& payload = "") {
  std::string body(1, static_cast<char>(Reply::kOk));
  body.append(payload);
  return body;
}

std::string ReplyWith(Reply code, const std::string& text) {
  std::string body(1, static_cast<char>(code));
  PutString(&body, text);
  return body;
}

}  // namespace

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<HostPort> ParseHostPort(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", text, "\" must be host:port (e.g. 10.0.0.1:29500)"));
  }
  HostPort result;
  result.host = text.substr(0, colon);
  if (result.host.size() >= 2 && result.host.front() == '[' && result.host.back() == ']') {
    result.host = result.host.substr(1, result.host.size() - 2);
  }
  if (!absl::SimpleAtoi(text.substr(colon + 1), &result.port) || result.port < 0 ||
      result.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", text, "\" has an invalid port (want 0..65535)"));
  }
  return result;
}

// ---------------------------------------------------------------------------
// Server

struct TcpStoreServer::Connection {
  int fd = -1;
  std::thread thread;
  std::atomic<bool> finished{false};
  int presence_rank = -1;  // guarded by the server's mu_
  bool said_goodbye = false;
};

TcpStoreServer::TcpStoreServer(int listen_fd, int port) : listen_fd_(listen_fd), port_(port) {
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

absl::StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(
    const std::string& bind_address) {
  STRATA_ASSIGN_OR_RETURN(HostPort bind, ParseHostPort(bind_address));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* results = nullptr;
  const std::string port = std::to_string(bind.port);
  const bool any_host = bind.host.empty() || bind.host == "0.0.0.0" || bind.host == "*";
  const int rc =
      ::getaddrinfo(any_host ? nullptr : bind.host.c_str(), port.c_str(), &hints, &results);
  if (rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("store: cannot resolve bind address ",
                                                   bind_address, ": ", ::gai_strerror(rc)));
  }
  std::string last_error = "no address";
  int fd = -1;
  for (addrinfo* ai = results; ai != nullptr; ai = ai->ai_next) {
    // With no host, prefer IPv4's wildcard so IPv4-only peers can connect.
    if (any_host && ai->ai_family != AF_INET && ai->ai_next != nullptr) continue;
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = ErrnoText(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 128) == 0) break;
    last_error = ErrnoText(errno);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(results);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("store: cannot listen on ", bind_address, ": ", last_error));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int bound_port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return std::unique_ptr<TcpStoreServer>(new TcpStoreServer(fd, bound_port));
}

TcpStoreServer::~TcpStoreServer() { Stop(); }

void TcpStoreServer::Stop() {
  if (stopping_.exchange(true)) return;
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& connection : connections_) ::shutdown(connection->fd, SHUT_RDWR);
    keys_changed_.notify_all();
  }
  // The accept loop is gone, so nothing else modifies connections_.
  for (auto& connection : connections_) {
    if (connection->thread.joinable()) connection->thread.join();
    ::close(connection->fd);
  }
  connections_.clear();
  ::close(listen_fd_);
}

std::vector<int> TcpStoreServer::LostRanks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return std::vector<int>(lost_ranks_.begin(), lost_ranks_.end());
}

bool TcpStoreServer::WaitForPresenceToDrain(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return keys_changed_.wait_until(lock, absl::ToChronoTime(absl::Now() + timeout), [&] {
    return open_presence_connections_ == 0 || stopping_.load();
  });
}

void TcpStoreServer::ReapFinishedLocked() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if ((*it)->finished.load()) {
      (*it)->thread.join();
      ::close((*it)->fd);
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void TcpStoreServer::AcceptLoop() {
  while (!stopping_.load()) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_.load()) break;
      if (errno != EINTR && errno != ECONNABORTED) absl::SleepFor(absl::Milliseconds(10));
      continue;
    }
    SetNoDelay(fd);
    std::lock_guard<std::mutex> lock(mu_);
    ReapFinishedLocked();
    auto connection = std::make_unique<Connection>();
    connection->fd = fd;
    Connection* raw = connection.get();
    connections_.push_back(std::move(connection));
    raw->thread = std::thread([this, raw] { Serve(raw); });
  }
}

void TcpStoreServer::Serve(Connection* connection) {
  while (!stopping_.load()) {
    absl::StatusOr<std::string> request = ReadFrame(connection->fd, absl::InfiniteFuture());
    if (!request.ok()) break;
    std::string response;
    const bool keep_open = Handle(connection, *request, &response);
    if (!WriteFrame(connection->fd, response).ok() || !keep_open) break;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (connection->presence_rank >= 0) {
      --open_presence_connections_;
      if (!connection->said_goodbye && !stopping_.load()) {
        lost_ranks_.insert(connection->presence_rank);
        spdlog::warn("store: rank {} lost (its presence connection closed without a goodbye)",
                     connection->presence_rank);
      }
    }
    keys_changed_.notify_all();
  }
  connection->finished = true;
}

bool TcpStoreServer::Handle(Connection* connection, const std::string& request,
                            std::string* response) {
  FrameReader in(request);
  const Op op = static_cast<Op>(in.U8());
  std::unique_lock<std::mutex> lock(mu_);
  switch (op) {
    case Op::kSet: {
      std::string key = in.String();
      std::string value = in.String();
      if (!in.ok()) break;
      data_[std::move(key)] = std::move(value);
      keys_changed_.notify_all();
      *response = ReplyOk();
      return true;
    }
    case Op::kGet:
    case Op::kWait: {
      std::vector<std::string> keys;
      if (op == Op::kGet) {
        keys.push_back(in.String());
      } else {
        const uint32_t count = in.U32();
        for (uint32_t i = 0; i < count && in.ok(); ++i) keys.push_back(in.String());
      }
      const absl::Duration timeout = std::min(absl::Milliseconds(in.U64()), absl::Hours(24));
      if (!in.ok()) break;
      const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
      auto missing = [&] {
        std::vector<std::string> absent;
        for (const auto& key : keys) {
          if (!data_.contains(key)) absent.push_back(key);
        }
        return absent;
      };
      keys_changed_.wait_until(lock, deadline,
                               [&] { return stopping_.load() || missing().empty(); });
      const std::vector<std::string> absent = missing();
      if (!absent.empty()) {
        *response =
            ReplyWith(stopping_.load() ? Reply::kError : Reply::kTimeout,
                      stopping_.load() ? "store is shutting down" : absl::StrJoin(absent, ", "));
        return true;
      }
      std::string payload;
      if (op == Op::kGet) PutString(&payload, data_[keys[0]]);
      *response = ReplyOk(payload);
      return true;
    }
    case Op::kAdd: {
      const std::string key = in.String();
      const int64_t delta = static_cast<int64_t>(in.U64());
      if (!in.ok()) break;
      int64_t value = 0;
      auto it = data_.find(key);
      if (it != data_.end() && !absl::SimpleAtoi(it->second, &value)) {
        *response = ReplyWith(Reply::kError, absl::StrCat("key ", key, " is not an integer"));
        return true;
      }
      value += delta;
      data_[key] = std::to_string(value);
      keys_changed_.notify_all();
      std::string payload;
      PutU64(&payload, static_cast<uint64_t>(value));
      *response = ReplyOk(payload);
      return true;
    }
    case Op::kHello: {
      const int rank = static_cast<int>(in.U32());
      if (!in.ok()) break;
      if (connection->presence_rank < 0) ++open_presence_connections_;
      connection->presence_rank = rank;
      lost_ranks_.erase(rank);
      *response = ReplyOk();
      return true;
    }
    case Op::kBye:
      connection->said_goodbye = true;
      *response = ReplyOk();
      return false;
    case Op::kLostRanks: {
      std::string payload;
      PutU32(&payload, static_cast<uint32_t>(lost_ranks_.size()));
      for (int rank : lost_ranks_) PutU32(&payload, static_cast<uint32_t>(rank));
      *response = ReplyOk(payload);
      return true;
    }
  }
  *response = ReplyWith(Reply::kError, "malformed request");
  return false;
}

// ---------------------------------------------------------------------------
// Client

namespace {

// Extra time a client waits for a reply beyond the server-side timeout.
constexpr absl::Duration kReplyGrace = absl::Seconds(10);

std::string LocalHostOf(int fd) {
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return "";
  return PeerName(local);
}

}  // namespace

TcpStore::TcpStore(std::string server_address, int fd, std::string local_host)
    : server_address_(std::move(server_address)), local_host_(std::move(local_host)), fd_(fd) {}

absl::StatusOr<std::unique_ptr<TcpStore>> TcpStore::Connect(const std::string& address,
                                                            const TcpStoreOptions& options) {
  STRATA_ASSIGN_OR_RETURN(int fd, ConnectWithRetry(address, absl::Now() + options.connect_timeout));
  return std::unique_ptr<TcpStore>(new TcpStore(address, fd, LocalHostOf(fd)));
}

TcpStore::~TcpStore() {
  {
    std::lock_guard<std::mutex> lock(presence_mu_);
    if (presence_fd_ >= 0) {
      std::string request(1, static_cast<char>(Op::kBye));
      (void)Call(presence_fd_, request, absl::Seconds(1));
      if (presence_fd_ >= 0) ::close(presence_fd_);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::string> TcpStore::Call(int& fd, const std::string& request,
                                           absl::Duration read_timeout) {
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("the connection to the store at ", server_address_,
                                               " (the leader, rank 0) failed earlier"));
  }
  absl::Status status = WriteFrame(fd, request);
  absl::StatusOr<std::string> reply =
      status.ok() ? ReadFrame(fd, absl::Now() + read_timeout) : status;
  if (!reply.ok()) {
    // A late reply would be taken for the answer to the next request: this
    // connection is done.
    ::close(fd);
    fd = -1;
    return absl::UnavailableError(
        absl::StrCat("lost the connection to the store at ", server_address_,
                     " (the leader, rank 0): ", std::string(reply.status().message())));
  }
  FrameReader in(*reply);
  const Reply code = static_cast<Reply>(in.U8());
  if (!in.ok()) return absl::DataLossError("store: empty reply");
  if (code == Reply::kOk) return reply->substr(1);
  const std::string detail = in.String();
  if (code == Reply::kTimeout) return absl::DeadlineExceededError(detail);
  return absl::InternalError(absl::StrCat("store at ", server_address_, ": ", detail));
}

absl::Status TcpStore::Set(const std::string& key, const std::string& value) {
  std::string request(1, static_cast<char>(Op::kSet));
  PutString(&request, key);
  PutString(&request, value);
  std::lock_guard<std::mutex> lock(mu_);
  return Call(fd_, request, kReplyGrace).status();
}

absl::StatusOr<std::string> TcpStore::Get(const std::string& key, absl::Duration timeout) {
  std::string request(1, static_cast<char>(Op::kGet));
  PutString(&request, key);
  PutU64(&request, static_cast<uint64_t>(absl::ToInt64Milliseconds(timeout)));
  absl::StatusOr<std::string> reply;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reply = Call(fd_, request, timeout + kReplyGrace);
  }
  if (absl::IsDeadlineExceeded(reply.status())) {
    return absl::DeadlineExceededError(
        absl::StrCat("store key \"", key, "\" not set within ", absl::FormatDuration(timeout)));
  }
  if (!reply.ok()) return reply.status();
  FrameReader in(*reply);
  std::string value = in.String();
  if (!in.ok()) return absl::DataLossError("store: malformed Get reply");
  return value;
}

absl::Status TcpStore::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  std::string request(1, static_cast<char>(Op::kWait));
  PutU32(&request, static_cast<uint32_t>(keys.size()));
  for (const auto& key : keys) PutString(&request, key);
  PutU64(&request, static_cast<uint64_t>(absl::ToInt64Milliseconds(timeout)));
  absl::StatusOr<std::string> reply;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reply = Call(fd_, request, timeout + kReplyGrace);
  }
  if (absl::IsDeadlineExceeded(reply.status())) {
    return absl::DeadlineExceededError(absl::StrCat("store keys not set within ",
                                                    absl::FormatDuration(timeout), ": ",
                                                    std::string(reply.status().message())));
  }
  return reply.status();
}

absl::StatusOr<int64_t> TcpStore::Add(const std::string& key, int64_t delta) {
  std::string request(1, static_cast<char>(Op::kAdd));
  PutString(&request, key);
  PutU64(&request, static_cast<uint64_t>(delta));
  absl::StatusOr<std::string> reply;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reply = Call(fd_, request, kReplyGrace);
  }
  if (!reply.ok()) return reply.status();
  FrameReader in(*reply);
  const int64_t value = static_cast<int64_t>(in.U64());
  if (!in.ok()) return absl::DataLossError("store: malformed Add reply");
  return value;
}

absl::Status TcpStore::RegisterPresence(int rank) {
  std::lock_guard<std::mutex> lock(presence_mu_);
  if (presence_fd_ >= 0) {
    return absl::FailedPreconditionError("store: presence already registered");
  }
  STRATA_ASSIGN_OR_RETURN(int fd, ConnectWithRetry(server_address_, absl::Now() + kReplyGrace));
  std::string request(1, static_cast<char>(Op::kHello));
  PutU32(&request, static_cast<uint32_t>(rank));
  absl::Status status = Call(fd, request, kReplyGrace).status();
  if (!status.ok()) return status;  // Call closed fd
  presence_fd_ = fd;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> TcpStore::LostRanks() {
  std::string request(1, static_cast<char>(Op::kLostRanks));
  absl::StatusOr<std::string> reply;
  {
    std::unique_lock<std::mutex> presence_lock(presence_mu_);
    if (presence_fd_ >= 0) {
      reply = Call(presence_fd_, request, absl::Seconds(5));
    } else {
      presence_lock.unlock();
      std::lock_guard<std::mutex> lock(mu_);
      reply = Call(fd_, request, absl::Seconds(5));
    }
  }
  if (!reply.ok()) return reply.status();
  FrameReader in(*reply);
  const uint32_t count = in.U32();
  std::vector<int> ranks;
  for (uint32_t i = 0; i < count && in.ok(); ++i) ranks.push_back(static_cast<int>(in.U32()));
  if (!in.ok()) return absl::DataLossError("store: malformed LostRanks reply");
  return ranks;
}

}  // namespace strata::parallel
