// Process control for `strata cluster`: starting server processes with their
// output in a log file, telling whether a recorded process is still the same
// live process, and stopping a set of them without leaving any behind.
//
// A pid alone is not an identity: once a process is gone its pid may be given
// to an unrelated one. Every recorded process therefore carries its start time
// (field 22 of /proc/PID/stat, in clock ticks since boot), and a pid counts as
// "ours" only while both match. Zombies count as gone: a detached cluster's
// processes are reparented, and whoever reaps them may be slow to.
//
// Thread-safety: plain functions; SpawnProcess may be called while other
// threads run (the child only makes async-signal-safe calls before exec).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace strata::cli {

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is the program's path
  std::string log_file;           // stdout and stderr are appended here; stdin is /dev/null
  // Runs the child in a session (and process group) of its own, so that a
  // terminal's Ctrl-C or hang-up reaches only the CLI, which then stops the
  // children in order, and so that a detached child outlives the CLI.
  bool new_session = true;
  // SIGTERM the child when the CLI dies (a foreground cluster must not outlive it).
  bool terminate_with_parent = false;
};

// Forks and execs `options.argv`. The child's signal mask is cleared and
// every descriptor but 0, 1, 2 is closed. An exec failure shows up as exit
// code 127 with the reason in the log file.
absl::StatusOr<pid_t> SpawnProcess(const SpawnOptions& options);

// The start time of `pid` (clock ticks since boot); nullopt when there is no
// such process or it is a zombie.
std::optional<uint64_t> ProcessStartTime(pid_t pid);

// True while `pid` runs and is the process that started at `start_time`.
bool IsProcessAlive(pid_t pid, uint64_t start_time);

// Reaps `pid` if it is an exited child of this process: its exit code, or
// 128 + the signal number; nullopt while it runs or when it is not our child.
std::optional<int> ReapIfExited(pid_t pid);

struct ProcessToStop {
  pid_t pid = -1;
  uint64_t start_time = 0;
};

// Sends SIGTERM to each live process, waits up to `grace` for them to exit,
// then SIGKILLs the rest and waits until they are gone. Children of this
// process are reaped. Processes already gone are skipped. Returns how many had
// to be killed.
int StopProcesses(const std::vector<ProcessToStop>& processes, std::chrono::milliseconds grace);

// A TCP port on 127.0.0.1 that was free a moment ago (bound, then closed).
// Another process may take it before it is used again; it is picked below the
// kernel's ephemeral range when possible, where only fixed-port servers compete.
absl::StatusOr<int> PickFreePort();

// Runs `argv` to completion with its output in `output_file`; its exit code
// (128 + signal when killed). Used to ask a binary for its --help.
absl::StatusOr<int> RunToCompletion(const std::vector<std::string>& argv,
                                    const std::string& output_file);

// The file's last non-empty line (without '\n'), at most 300 characters; ""
// when unreadable or empty.
std::string LastLogLine(const std::string& path);

// The whole file; "" when unreadable.
std::string ReadWholeFile(const std::string& path);

}  // namespace strata::cli
