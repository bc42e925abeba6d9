#include "bench/load/load_report.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace strata::bench {

std::optional<double> Percentile(std::vector<double>& samples, double p) {
  if (samples.empty()) return std::nullopt;
  std::sort(samples.begin(), samples.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * (samples.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, samples.size() - 1);
  const double fraction = rank - below;
  return samples[below] + (samples[above] - samples[below]) * fraction;
}

LatencySummary Summarize(std::vector<double> samples) {
  LatencySummary summary;
  if (samples.empty()) return summary;
  summary.p50 = Percentile(samples, 50);
  summary.p90 = Percentile(samples, 90);
  summary.p99 = Percentile(samples, 99);
  summary.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size();
  return summary;
}

void RunStats::Add(RequestResult result) {
  absl::MutexLock lock(&mu_);
  if (result.code == absl::StatusCode::kOk) output_tokens_ += result.output_tokens;
  results_.push_back(std::move(result));
}

int64_t RunStats::completed() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(results_.size());
}

int64_t RunStats::output_tokens() const {
  absl::MutexLock lock(&mu_);
  return output_tokens_;
}

RunSummary RunStats::Summarize(double duration_s) const {
  absl::MutexLock lock(&mu_);
  RunSummary summary;
  summary.duration_s = duration_s;
  summary.requests_sent = static_cast<int64_t>(results_.size());
  std::vector<double> ttft, itl, e2e;
  for (const RequestResult& result : results_) {
    if (result.code != absl::StatusCode::kOk) {
      ++summary.errors[absl::StatusCodeToString(result.code)];
      if (summary.first_error.empty()) summary.first_error = result.error_message;
      continue;
    }
    ++summary.requests_ok;
    summary.output_tokens += result.output_tokens;
    summary.prompt_tokens += result.prompt_tokens;
    summary.cached_tokens += result.cached_tokens;
    if (result.ttft_ms >= 0) ttft.push_back(result.ttft_ms);
    itl.insert(itl.end(), result.itl_ms.begin(), result.itl_ms.end());
    e2e.push_back(result.e2e_ms);
  }
  if (duration_s > 0) {
    summary.requests_per_s = summary.requests_ok / duration_s;
    summary.output_tokens_per_s = summary.output_tokens / duration_s;
  }
  summary.ttft_ms = bench::Summarize(std::move(ttft));
  summary.itl_ms = bench::Summarize(std::move(itl));
  summary.e2e_ms = bench::Summarize(std::move(e2e));
  return summary;
}

namespace {

nlohmann::json OrNull(const std::optional<double>& value) {
  return value.has_value() ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

nlohmann::json ToJson(const LatencySummary& summary) {
  return {{"p50", OrNull(summary.p50)},
          {"p90", OrNull(summary.p90)},
          {"p99", OrNull(summary.p99)},
          {"mean", OrNull(summary.mean)}};
}

std::string Ms(const std::optional<double>& value) {
  return value.has_value() ? absl::StrFormat("%.1f", *value) : std::string("-");
}

}  // namespace

nlohmann::json ToJson(const RunSummary& run) {
  nlohmann::json json = nlohmann::json::object();
  if (run.concurrency.has_value()) json["concurrency"] = *run.concurrency;
  if (run.rate.has_value()) json["rate"] = *run.rate;
  json["requests_ok"] = run.requests_ok;
  json["errors"] = nlohmann::json::object();
  for (const auto& [code, count] : run.errors) json["errors"][code] = count;
  json["requests_per_s"] = run.requests_per_s;
  json["output_tokens_per_s"] = run.output_tokens_per_s;
  json["ttft_ms"] = ToJson(run.ttft_ms);
  json["itl_ms"] = ToJson(run.itl_ms);
  json["e2e_ms"] = ToJson(run.e2e_ms);
  json["requests_sent"] = run.requests_sent;
  json["duration_s"] = run.duration_s;
  json["output_tokens"] = run.output_tokens;
  json["prompt_tokens"] = run.prompt_tokens;
  json["cached_tokens"] = run.cached_tokens;
  return json;
}

nlohmann::json ReportJson(const std::vector<RunSummary>& runs, const nlohmann::json& extra) {
  nlohmann::json report = extra.is_object() ? extra : nlohmann::json::object();
  report["runs"] = nlohmann::json::array();
  for (const RunSummary& run : runs) report["runs"].push_back(ToJson(run));
  return report;
}

std::string HumanLine(const RunSummary& run) {
  std::string label = run.concurrency.has_value()
                          ? absl::StrFormat("concurrency %d", *run.concurrency)
                          : absl::StrFormat("rate %.2f/s", run.rate.value_or(0.0));
  int64_t errors = 0;
  for (const auto& [code, count] : run.errors) errors += count;
  std::string line = absl::StrFormat(
      "%-16s %5d ok %4d err  %8.1f tok/s  %6.2f req/s  TTFT p50 %s p99 %s ms  ITL p50 %s p99 %s "
      "ms  E2E p50 %s ms",
      label, run.requests_ok, errors, run.output_tokens_per_s, run.requests_per_s,
      Ms(run.ttft_ms.p50), Ms(run.ttft_ms.p99), Ms(run.itl_ms.p50), Ms(run.itl_ms.p99),
      Ms(run.e2e_ms.p50));
  if (run.cached_tokens > 0 && run.prompt_tokens > 0) {
    line += absl::StrFormat("  cached %.0f%%", 100.0 * run.cached_tokens / run.prompt_tokens);
  }
  if (!run.first_error.empty()) line += "\n  first error: " + run.first_error;
  return line;
}

}  // namespace strata::bench
