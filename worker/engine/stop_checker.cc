#include "worker/engine/stop_checker.h"

#include <algorithm>

#include "worker/engine/check.h"

namespace strata::engine {

StopChecker::StopChecker(const StoppingCriteria& stopping, std::vector<int32_t> eos_token_ids)
    : stop_strings_(stopping.stop), stop_token_ids_(stopping.stop_token_ids) {
  if (!stopping.ignore_eos) eos_token_ids_ = std::move(eos_token_ids);
  for (const auto& stop : stop_strings_) {
    STRATA_CHECK(!stop.empty(), "empty stop string");
    longest_stop_ = std::max(longest_stop_, stop.size());
  }
}

FinishReason StopChecker::CheckToken(int32_t token_id) const {
  auto contains = [token_id](const std::vector<int32_t>& ids) {
    return std::find(ids.begin(), ids.end(), token_id) != ids.end();
  };
  if (contains(stop_token_ids_)) return FinishReason::kStop;
  if (contains(eos_token_ids_)) return FinishReason::kEos;
  return FinishReason::kNone;
}

StopChecker::TextResult StopChecker::AddText(std::string_view text) {
  STRATA_CHECK(!stopped_, "AddText after a stop string");
  TextResult result;
  if (stop_strings_.empty()) {
    result.text = std::string(text);
    return result;
  }
  // Only held_ can contain the start of a stop string that `text` completes:
  // everything before it was released because no stop string could begin there.
  held_.append(text);
  size_t first_stop = std::string::npos;
  for (const auto& stop : stop_strings_) first_stop = std::min(first_stop, held_.find(stop));
  if (first_stop != std::string::npos) {
    result.text = held_.substr(0, first_stop);
    result.stopped = true;
    stopped_ = true;
    held_.clear();
    return result;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  const size_t max_hold = std::min(held_.size(), longest_stop_ - 1);
  for (size_t length = max_hold; length > 0 && hold == 0; --length) {
    std::string_view tail = std::string_view(held_).substr(held_.size() - length);
    for (const auto& stop : stop_strings_) {
      if (stop.size() > length && std::string_view(stop).substr(0, length) == tail) {
        hold = length;
        break;
      }
    }
  }
  result.text = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return result;
}

StopChecker::TextResult StopChecker::Finish(std::string_view tail) {
  if (stopped_) return {};
  TextResult result = AddText(tail);
  if (!result.stopped) {
    result.text.append(held_);
    held_.clear();
  }
  stopped_ = true;
  return result;
}

}  // namespace strata::engine
