// Progress of a long operation (model loading): a bar redrawn in place when
// stderr is a terminal, otherwise a log line every 10%.
//
// Thread-safety: one thread calls Advance(); not thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace strata {

class Progress {
 public:
  Progress(std::string what, uint64_t total);
  ~Progress();  // finishes the line
  void Advance(uint64_t amount);

 private:
  void Draw();
  std::string what_;
  uint64_t total_;
  uint64_t done_ = 0;
  int last_decile_ = -1;
  bool terminal_;
};

}  // namespace strata
