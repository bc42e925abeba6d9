#include "cli/cluster_processes.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace strata::cli {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(50);

// Writes a C string with write(2) only: safe between fork and exec.
void WriteRaw(int fd, const char* text) {
  const ssize_t ignored = write(fd, text, std::strlen(text));
  (void)ignored;
}

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

}  // namespace

absl::StatusOr<pid_t> SpawnProcess(const SpawnOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("no program to start");
  // Everything the child needs is prepared here: after fork it may only make
  // async-signal-safe calls (other threads of the CLI may hold locks).
  std::vector<char*> argv;
  for (const std::string& arg : options.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  const int log_fd =
      open(options.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot open log file ", options.log_file, ": ", std::strerror(errno)));
  }
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("cannot open /dev/null: ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    close(log_fd);
    close(null_fd);
    return absl::InternalError(
        absl::StrCat("cannot start ", options.argv[0], ": fork: ", std::strerror(error)));
  }
  if (pid == 0) {
    if (options.new_session) setsid();
    if (options.terminate_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);  // the parent died before prctl took effect
    }
    dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    close_range(3, ~0U, 0);
    for (const int signal_number : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD}) {
      signal(signal_number, SIG_DFL);
    }
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, nullptr);
    execv(argv[0], argv.data());
    WriteRaw(STDERR_FILENO, "strata cluster: cannot execute ");
    WriteRaw(STDERR_FILENO, argv[0]);
    WriteRaw(STDERR_FILENO, ": ");
    WriteRaw(STDERR_FILENO, strerror(errno));
    WriteRaw(STDERR_FILENO, "\n");
    _exit(127);
  }
  close(log_fd);
  close(null_fd);
  return pid;
}

std::optional<uint64_t> ProcessStartTime(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  // "PID (COMM) STATE PPID ... STARTTIME ...": COMM may hold spaces and
  // parentheses, so the fields after it are counted from the last ')'.
  const size_t comm_end = stat.rfind(')');
  if (comm_end == std::string::npos) return std::nullopt;
  const std::vector<std::string> fields =
      absl::StrSplit(stat.substr(comm_end + 1), ' ', absl::SkipEmpty());
  // fields[0] is STATE (field 3 of stat(5)); STARTTIME is field 22.
  constexpr size_t kStartTimeIndex = 22 - 3;
  if (fields.size() <= kStartTimeIndex) return std::nullopt;
  if (fields[0] == "Z" || fields[0] == "X" || fields[0] == "x") return std::nullopt;
  uint64_t start_time = 0;
  if (!absl::SimpleAtoi(fields[kStartTimeIndex], &start_time)) return std::nullopt;
  return start_time;
}

bool IsProcessAlive(pid_t pid, uint64_t start_time) {
  const std::optional<uint64_t> actual = ProcessStartTime(pid);
  return actual.has_value() && *actual == start_time;
}

std::optional<int> ReapIfExited(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  int wait_status = 0;
  if (waitpid(pid, &wait_status, WNOHANG) != pid) return std::nullopt;
  return ExitCodeOf(wait_status);
}

int StopProcesses(const std::vector<ProcessToStop>& processes, std::chrono::milliseconds grace) {
  const auto any_alive = [&processes] {
    bool alive = false;
    for (const ProcessToStop& process : processes) {
      ReapIfExited(process.pid);
      if (IsProcessAlive(process.pid, process.start_time)) alive = true;
    }
    return alive;
  };
  const auto wait_until_gone = [&any_alive](std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (any_alive()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(kPollInterval);
    }
    return true;
  };

  for (const ProcessToStop& process : processes) {
    if (IsProcessAlive(process.pid, process.start_time)) kill(process.pid, SIGTERM);
  }
  if (wait_until_gone(grace)) return 0;
  int killed = 0;
  for (const ProcessToStop& process : processes) {
    if (IsProcessAlive(process.pid, process.start_time)) {
      kill(process.pid, SIGKILL);
      ++killed;
    }
  }
  // SIGKILL cannot be caught; the wait only covers the kernel tearing down.
  wait_until_gone(std::chrono::seconds(30));
  return killed;
}

namespace {

// Binds 127.0.0.1:`port` (0: any) and closes it again; the port bound, or 0.
int TryBind(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t length = sizeof(address);
  int bound = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    bound = ntohs(address.sin_port);
  }
  close(fd);
  return bound;
}

// The first port of the kernel's ephemeral range (32768 when unreadable).
int EphemeralRangeStart() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int first = 0;
  if (in >> first && first > 0) return first;
  return 32768;
}

}  // namespace

absl::StatusOr<int> PickFreePort() {
  // Between closing the probe and the server binding the port, any process
  // may take it. Ports below the ephemeral range are never handed out for
  // port 0 or outgoing connections, so only fixed-port binders can race there.
  constexpr int kLowestPort = 10000;
  const int range_start = EphemeralRangeStart();
  if (range_start > kLowestPort + 1000) {
    std::mt19937 random(std::random_device{}());
    std::uniform_int_distribution<int> pick(kLowestPort, range_start - 1);
    for (int attempt = 0; attempt < 64; ++attempt) {
      if (const int port = TryBind(pick(random)); port != 0) return port;
    }
  }
  if (const int port = TryBind(0); port != 0) return port;
  return absl::InternalError(
      absl::StrCat("cannot find a free port on 127.0.0.1: ", std::strerror(errno)));
}

absl::StatusOr<int> RunToCompletion(const std::vector<std::string>& argv,
                                    const std::string& output_file) {
  std::remove(output_file.c_str());
  absl::StatusOr<pid_t> pid = SpawnProcess(
      {.argv = argv, .log_file = output_file, .new_session = false, .terminate_with_parent = true});
  if (!pid.ok()) return pid.status();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::optional<int> code = ReapIfExited(*pid)) return *code;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(*pid, SIGKILL);
  int wait_status = 0;
  waitpid(*pid, &wait_status, 0);
  return absl::DeadlineExceededError(absl::StrCat(argv[0], " did not finish within 30 s"));
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::string LastLogLine(const std::string& path) {
  const std::string contents = ReadWholeFile(path);
  std::string last;
  for (absl::string_view line : absl::StrSplit(contents, '\n', absl::SkipWhitespace())) {
    last = std::string(line);
  }
  constexpr size_t kMaxLength = 300;
  if (last.size() > kMaxLength) last = last.substr(0, kMaxLength) + "...";
  return last;
}

}  // namespace strata::cli
