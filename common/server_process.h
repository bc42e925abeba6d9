// Small pieces every Strata server binary (strata-worker, strata-router)
// needs around its gRPC server: the address it really bound, and the ready
// file that scripts and tests wait for.
#pragma once

#include <string>

namespace strata {

// "HOST:PORT" with the port replaced by the one actually bound (for port 0).
std::string BoundAddress(const std::string& address, int port);

// Writes `contents` to `path` whole: to a temporary file, then renamed, so a
// reader polling for the file never sees half of it. False on any I/O error.
bool WriteFileAtomically(const std::string& path, const std::string& contents);

// Process-wide settings for a server that moves many large messages; called
// first thing in main, before any thread starts.
// - glibc hands blocks above 128 KiB back to the kernel (mmap, and trimming
//   of free heap top), so every 220 KB prompt a server receives lands in
//   fresh pages that fault in again on the socket copy: measured as the
//   largest single cost of the router under large prompts. Large blocks stay
//   in the heap instead; the heap then keeps its peak size, which admission
//   limits (in-flight calls x message size) bound.
// - Debian's absl::Mutex runs deadlock detection on every lock (a global
//   graph of lock order); gRPC locks absl mutexes many times per message.
void TuneProcessForServing();

// Leaves the process at once with `code`, logs and stdio flushed. A server
// calls it once gRPC (and its engine) are shut down: the metrics exposer's
// web server takes up to 2 s to stop (civetweb polls with a 2 s quantum) and
// holds nothing that needs an orderly close, so it is not waited for.
[[noreturn]] void ExitServerProcess(int code);

// Prints "<program>: <message>" on stderr as one line; returns 1 (an exit code).
int PrintStartupError(const char* program, const std::string& message);

}  // namespace strata
