// Real processes for integration tests: RAII children that are always reaped.
//
// A ChildProcess runs a program with stdout and stderr sent to files (no pipe
// can fill up and stall it) and stdin from a file or /dev/null. The child is
// killed if the test process dies (PR_SET_PDEATHSIG) and, when still running,
// SIGKILLed and waited for by the destructor.
//
// Thread-safety: one thread per ChildProcess. Start() must be called from the
// test's main thread (the parent-death signal follows the forking thread).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::testing {

// A fresh folder under /tmp, removed with its contents by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

class ChildProcess {
 public:
  struct Options {
    std::vector<std::string> argv;          // argv[0] is the program's path
    std::string log_dir;                    // where <name>.stdout / <name>.stderr go
    std::string name = "child";             // file names and messages
    std::optional<std::string> stdin_text;  // default: /dev/null
  };

  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(Options options);
  ~ChildProcess();  // SIGKILL if running, then reaps

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

  // Everything written so far.
  std::string Stdout() const;
  std::string Stderr() const;

  // Waits until stdout holds a line starting with `prefix` and returns it.
  // Fails early, with the child's stderr, if the child exits first.
  absl::StatusOr<std::string> WaitForStdoutLine(const std::string& prefix,
                                                std::chrono::milliseconds timeout);

  // Waits for the child to exit: its exit code, or 128 + signal number.
  // nullopt after `timeout` (the child keeps running).
  std::optional<int> WaitForExit(std::chrono::milliseconds timeout);
  bool Running();
  void Signal(int signal_number);

 private:
  ChildProcess() = default;

  std::string name_;
  std::string stdout_path_;
  std::string stderr_path_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

struct CommandResult {
  int exit_code = -1;
  std::string stdout_text;
  std::string stderr_text;
};

// Runs a program to completion (SIGKILLed after `timeout`, exit code -1).
CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::optional<std::string> stdin_text = std::nullopt,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Lines of `text` without their '\n'; no trailing empty line.
std::vector<std::string> Lines(const std::string& text);

}  // namespace strata::testing
