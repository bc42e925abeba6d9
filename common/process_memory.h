// Resident memory of this process, for logs and metrics.
#pragma once

#include <cstdint>
#include <string>

namespace strata {

// Bytes of resident memory (RSS) from /proc/self/statm; 0 when unreadable.
uint64_t ResidentMemoryBytes();

// "1.23 GiB", "45.6 MiB", "789 B".
std::string HumanBytes(uint64_t bytes);

}  // namespace strata
