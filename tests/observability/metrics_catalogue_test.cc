// The metric catalogue: naming rules, bounded labels, LLM-sized buckets,
// docs/metrics.md listing exactly the catalogue, and the router and worker
// registering only catalogue families with the catalogue's types and labels.
#include "common/metrics_catalogue.h"

#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/metric_family.h"
#include "router/router_metrics.h"
#include "worker/service/worker_metrics.h"

namespace strata::metrics {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Join(const std::vector<std::string_view>& parts) {
  std::string joined;
  for (std::string_view part : parts) {
    if (!joined.empty()) joined += ",";
    joined += part;
  }
  return joined;
}

TEST(MetricsCatalogueTest, NamesArePrefixedUniqueAndFollowPrometheusConventions) {
  std::set<std::string_view> seen;
  const std::regex snake_case("strata_[a-z0-9_]+");
  for (const MetricSpec& spec : Catalogue()) {
    SCOPED_TRACE(std::string(spec.name));
    EXPECT_TRUE(seen.insert(spec.name).second) << "duplicate";
    EXPECT_TRUE(std::regex_match(std::string(spec.name), snake_case));
    EXPECT_FALSE(spec.help.empty());
    const bool ends_in_total = spec.name.ends_with("_total");
    EXPECT_EQ(ends_in_total, spec.type == MetricType::kCounter);
    if (spec.type == MetricType::kHistogram) {
      // A unit: seconds, or what a batch size counts.
      EXPECT_TRUE(spec.name.ends_with("_seconds") || spec.name.ends_with("_tokens") ||
                  spec.name.ends_with("_sequences"));
      ASSERT_FALSE(spec.buckets.empty());
      for (size_t i = 1; i < spec.buckets.size(); ++i) {
        EXPECT_LT(spec.buckets[i - 1], spec.buckets[i]);
      }
      // Request latencies share one set of buckets; engine steps have their own.
      if (!spec.name.starts_with("strata_engine_")) {
        EXPECT_EQ(spec.buckets, LatencyBuckets());
      }
    } else {
      EXPECT_TRUE(spec.buckets.empty());
    }
    EXPECT_EQ(FindMetric(spec.name), &spec);
  }
  EXPECT_EQ(FindMetric("strata_no_such_metric"), nullptr);
}

TEST(MetricsCatalogueTest, LabelsNeverCarryPerRequestValues) {
  const std::set<std::string_view> allowed = {
      "code", "backend", "reason", "stage", "rank", "phase", "op", "block_size", "num_gpu_blocks"};
  for (const MetricSpec& spec : Catalogue()) {
    for (std::string_view label : spec.labels) {
      EXPECT_TRUE(allowed.contains(label)) << spec.name << " has unbounded label " << label;
    }
  }
}

TEST(MetricsCatalogueTest, LatencyBucketsSpanOneMillisecondToTenMinutes) {
  const std::vector<double>& buckets = LatencyBuckets();
  ASSERT_GE(buckets.size(), 10u);
  EXPECT_DOUBLE_EQ(buckets.front(), 0.001);
  EXPECT_DOUBLE_EQ(buckets.back(), 600.0);
  for (size_t i = 1; i < buckets.size(); ++i) EXPECT_LT(buckets[i - 1], buckets[i]);
}

TEST(MetricsCatalogueTest, EngineStepBucketsSpanTheirRanges) {
  const std::vector<double>& step = StepDurationBuckets();
  ASSERT_GE(step.size(), 10u);
  EXPECT_DOUBLE_EQ(step.front(), 0.0001);
  EXPECT_DOUBLE_EQ(step.back(), 60.0);
  for (size_t i = 1; i < step.size(); ++i) EXPECT_LT(step[i - 1], step[i]);
  const std::vector<double>& batch = BatchSizeBuckets();
  ASSERT_EQ(batch.size(), 14u);
  for (size_t i = 0; i < batch.size(); ++i) EXPECT_DOUBLE_EQ(batch[i], double(1 << i));
  EXPECT_EQ(FindMetric(kEngineStepDuration)->buckets, step);
  EXPECT_EQ(FindMetric(kEngineBatchTokens)->buckets, batch);
  EXPECT_EQ(FindMetric(kEngineBatchSequences)->buckets, batch);
}

TEST(MetricsCatalogueTest, DocsListEveryFamilyWithItsTypeAndLabels) {
  const std::string docs = ReadFile(std::string(STRATA_SOURCE_DIR) + "/docs/metrics.md");
  ASSERT_FALSE(docs.empty());
  // | `name` | type | `l1`, `l2` or — | component | meaning |
  const std::regex row(R"(^\| `(strata_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \| (\w+) \|)");
  std::map<std::string, std::string> documented;  // name -> "type|labels|component"
  std::istringstream lines(docs);
  for (std::string line; std::getline(lines, line);) {
    std::smatch match;
    if (!std::regex_search(line, match, row)) continue;
    std::string labels;
    const std::string label_cell = match[3];
    const std::regex label("`(\\w+)`");
    for (auto it = std::sregex_iterator(label_cell.begin(), label_cell.end(), label);
         it != std::sregex_iterator(); ++it) {
      if (!labels.empty()) labels += ",";
      labels += (*it)[1];
    }
    EXPECT_TRUE(
        documented
            .emplace(match[1], std::string(match[2]) + "|" + labels + "|" + std::string(match[4]))
            .second)
        << "listed twice: " << match[1];
  }
  for (const MetricSpec& spec : Catalogue()) {
    auto it = documented.find(std::string(spec.name));
    ASSERT_NE(it, documented.end()) << spec.name << " is missing from docs/metrics.md";
    EXPECT_EQ(it->second, std::string(MetricTypeName(spec.type)) + "|" + Join(spec.labels) + "|" +
                              std::string(ComponentName(spec.component)))
        << spec.name;
    documented.erase(it);
  }
  for (const auto& [name, unused] : documented) {
    ADD_FAILURE() << "docs/metrics.md lists " << name << ", which the catalogue does not define";
  }
}

// Every family a registry exports is in the catalogue with the same type and
// a label set the catalogue names ("le" aside).
void ExpectFamiliesInCatalogue(const std::vector<prometheus::MetricFamily>& families,
                               std::set<std::string>& seen) {
  for (const prometheus::MetricFamily& family : families) {
    SCOPED_TRACE(family.name);
    const MetricSpec* spec = FindMetric(family.name);
    ASSERT_NE(spec, nullptr) << "not in the catalogue";
    seen.insert(family.name);
    const MetricType type = family.type == prometheus::MetricType::Counter ? MetricType::kCounter
                            : family.type == prometheus::MetricType::Gauge ? MetricType::kGauge
                            : family.type == prometheus::MetricType::Histogram
                                ? MetricType::kHistogram
                                : static_cast<MetricType>(-1);
    EXPECT_EQ(type, spec->type);
    EXPECT_EQ(family.help, spec->help);
    for (const prometheus::ClientMetric& metric : family.metric) {
      // Label order carries no meaning (exporters sort them): compare sets.
      std::set<std::string_view> labels;
      for (const prometheus::ClientMetric::Label& label : metric.label) {
        labels.insert(label.name);
      }
      EXPECT_EQ(labels, std::set<std::string_view>(spec->labels.begin(), spec->labels.end()));
      if (type == MetricType::kHistogram) {
        // The catalogue's bounds, then +Inf.
        ASSERT_EQ(metric.histogram.bucket.size(), spec->buckets.size() + 1);
        for (size_t i = 0; i < spec->buckets.size(); ++i) {
          EXPECT_DOUBLE_EQ(metric.histogram.bucket[i].upper_bound, spec->buckets[i]);
        }
        EXPECT_TRUE(std::isinf(metric.histogram.bucket.back().upper_bound));
      }
    }
  }
}

TEST(MetricsCatalogueTest, WorkerAndRouterRegisterOnlyCatalogueFamilies) {
  std::set<std::string> seen;
  service::WorkerMetrics worker;
  worker.SetRankMemory(0, 1000, 2000);
  worker.ExportCollectiveErrors(0);
  worker.RecordRequestFinished("OK", {0.1, 0.2, 0.3});
  ExpectFamiliesInCatalogue(worker.registry()->Collect(), seen);
  ExpectFamiliesInCatalogue(worker.engine_collector()->Collect(), seen);
  router::RouterMetrics router;
  router.RequestStarted();
  router.RequestFinished("OK", {1.0, 0.1, 0.6});
  router.RecordRejection("overloaded");
  router.BackendHealthy("127.0.0.1:1").Set(1);
  router.BackendInFlight("127.0.0.1:1").Set(0);
  ExpectFamiliesInCatalogue(router.registry()->Collect(), seen);
  // Router and worker families are all exported; rank step seconds need a
  // model, and the cache info an engine.
  for (const MetricSpec& spec : Catalogue()) {
    if (spec.name == kRankStepSeconds || spec.name == kKvCacheConfigInfo) {
      continue;
    }
    EXPECT_TRUE(seen.contains(std::string(spec.name))) << spec.name << " is never exported";
  }
}

TEST(MetricsCatalogueTest, RouterStreamStageIsWhatTheOtherStagesLeave) {
  router::RouterRequestTimes times{.total = 1.0, .router_queue = 0.1, .backend = 0.6};
  EXPECT_DOUBLE_EQ(times.stream(), 0.3);
  times.backend = 2.0;  // clocks of two processes: never a negative stage
  EXPECT_DOUBLE_EQ(times.stream(), 0.0);
  const service::WorkerRequestTimes worker{0.1, 0.2, 0.3};
  EXPECT_DOUBLE_EQ(worker.total(), 0.6);
}

}  // namespace
}  // namespace strata::metrics
