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

// Leaves the process at once with `code`, logs and stdio flushed. A server
// calls it once gRPC (and its engine) are shut down: the metrics exposer's
// web server takes up to 2 s to stop (civetweb polls with a 2 s quantum) and
// holds nothing that needs an orderly close, so it is not waited for.
[[noreturn]] void ExitServerProcess(int code);

// Prints "<program>: <message>" on stderr as one line; returns 1 (an exit code).
int PrintStartupError(const char* program, const std::string& message);

}  // namespace strata
