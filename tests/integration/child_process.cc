#include "tests/integration/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace strata::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

TempDir::TempDir() {
  std::string pattern = "/tmp/strata-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    std::fprintf(stderr, "mkdtemp failed: %s\n", std::strerror(errno));
    std::abort();
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(Options options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("argv is empty");
  auto child = std::unique_ptr<ChildProcess>(new ChildProcess());
  child->name_ = options.name;
  child->stdout_path_ = absl::StrCat(options.log_dir, "/", options.name, ".stdout");
  child->stderr_path_ = absl::StrCat(options.log_dir, "/", options.name, ".stderr");
  std::string stdin_path = "/dev/null";
  if (options.stdin_text) {
    stdin_path = absl::StrCat(options.log_dir, "/", options.name, ".stdin");
    std::ofstream(stdin_path, std::ios::binary) << *options.stdin_text;
  }

  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls are allowed (the test process has threads).
  std::vector<char*> argv;
  for (std::string& arg : options.argv) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const int stdin_fd = open(stdin_path.c_str(), O_RDONLY | O_CLOEXEC);
  const int stdout_fd =
      open(child->stdout_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int stderr_fd =
      open(child->stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (stdin_fd < 0 || stdout_fd < 0 || stderr_fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open the files of ", options.name, " in ",
                                            options.log_dir, ": ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    // Children start with the default signal mask and dispositions.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(stdin_fd, STDIN_FILENO);
    dup2(stdout_fd, STDOUT_FILENO);
    dup2(stderr_fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    static const char kExecFailed[] = "exec failed\n";
    (void)!write(STDERR_FILENO, kExecFailed, sizeof(kExecFailed) - 1);
    _exit(127);
  }
  close(stdin_fd);
  close(stdout_fd);
  close(stderr_fd);
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  child->pid_ = pid;
  return child;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exit_code_) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
}

std::string ChildProcess::Stdout() const { return ReadFile(stdout_path_); }
std::string ChildProcess::Stderr() const { return ReadFile(stderr_path_); }

absl::StatusOr<std::string> ChildProcess::WaitForStdoutLine(const std::string& prefix,
                                                            std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    for (const std::string& line : Lines(Stdout())) {
      if (line.rfind(prefix, 0) == 0) return line;
    }
    if (!Running()) {
      return absl::FailedPreconditionError(absl::StrCat(name_, " exited with code ", *exit_code_,
                                                        " before printing '", prefix,
                                                        "'; stderr:\n", Stderr()));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(name_, " printed no line starting with '",
                                                      prefix, "'; stderr:\n", Stderr()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::optional<int> ChildProcess::WaitForExit(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (Running()) {
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return exit_code_;
}

bool ChildProcess::Running() {
  if (exit_code_) return false;
  int status = 0;
  const pid_t done = waitpid(pid_, &status, WNOHANG);
  if (done == pid_) {
    exit_code_ = DecodeWaitStatus(status);
    return false;
  }
  return true;
}

void ChildProcess::Signal(int signal_number) {
  if (Running()) kill(pid_, signal_number);
}

CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::optional<std::string> stdin_text, std::chrono::milliseconds timeout) {
  TempDir logs;
  CommandResult result;
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start({argv, logs.path(), "command", std::move(stdin_text)});
  if (!child.ok()) {
    result.stderr_text = std::string(child.status().message());
    return result;
  }
  result.exit_code = (*child)->WaitForExit(timeout).value_or(-1);
  if (result.exit_code == -1) (*child)->Signal(SIGKILL);
  (*child)->WaitForExit(std::chrono::seconds(5));
  result.stdout_text = (*child)->Stdout();
  result.stderr_text = (*child)->Stderr();
  return result;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

}  // namespace strata::testing
