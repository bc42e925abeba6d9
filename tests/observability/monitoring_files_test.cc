// The monitoring files under deploy/: alert and recording rules pass
// promtool's check and their unit tests, every alert is tested firing and
// quiet, dashboards are valid JSON with unique uids, every dashboard
// expression parses (as a recording rule, through promtool), and every metric
// a dashboard or rule names is in the catalogue.
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/metrics_catalogue.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/child_process.h"

namespace strata::testing {
namespace {

const std::string kSource = STRATA_SOURCE_DIR;
const std::string kRules = kSource + "/deploy/prometheus/strata-rules.yaml";
const std::string kRuleTests = kSource + "/deploy/prometheus/strata-rules.test.yaml";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> DashboardFiles() {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(kSource + "/deploy/grafana")) {
    if (entry.path().extension() == ".json") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Panels, with the panels of collapsed rows.
void CollectPanels(const nlohmann::json& panels, std::vector<nlohmann::json>& out) {
  for (const nlohmann::json& panel : panels) {
    out.push_back(panel);
    if (panel.contains("panels")) CollectPanels(panel["panels"], out);
  }
}

// Every PromQL expression of a dashboard: targets and query variables.
std::vector<std::string> Expressions(const nlohmann::json& dashboard) {
  std::vector<std::string> expressions;
  std::vector<nlohmann::json> panels;
  CollectPanels(dashboard.value("panels", nlohmann::json::array()), panels);
  for (const nlohmann::json& panel : panels) {
    for (const nlohmann::json& target : panel.value("targets", nlohmann::json::array())) {
      if (target.contains("expr")) expressions.push_back(target["expr"]);
    }
  }
  return expressions;
}

// Grafana's variables replaced by values PromQL accepts.
std::string Substitute(std::string expression) {
  static const std::vector<std::pair<std::regex, std::string>> kReplacements = {
      {std::regex(R"(\$__rate_interval|\$__interval|\$__range)"), "5m"},
      {std::regex(R"(\$\{?\w+\}?)"), "value"},
  };
  for (const auto& [pattern, value] : kReplacements) {
    expression = std::regex_replace(expression, pattern, value);
  }
  return expression;
}

// Metric names (strata_...) used in `text`; recording rule names
// (strata:...) and label values are not metric names.
std::set<std::string> MetricNames(const std::string& text) {
  std::set<std::string> names;
  const std::regex name(R"((^|[^\w:])(strata_[a-z0-9_]+))");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), name); it != std::sregex_iterator();
       ++it) {
    names.insert((*it)[2]);
  }
  return names;
}

bool InCatalogue(const std::string& name) {
  for (const char* suffix : {"", "_bucket", "_sum", "_count"}) {
    const std::string_view view(name);
    const std::string_view s(suffix);
    if (!view.ends_with(s)) continue;
    const metrics::MetricSpec* spec = metrics::FindMetric(view.substr(0, view.size() - s.size()));
    if (spec != nullptr && (s.empty() || spec->type == metrics::MetricType::kHistogram)) {
      return true;
    }
  }
  return false;
}

TEST(AlertRulesTest, PromtoolChecksTheRules) {
  const CommandResult result = RunCommand({STRATA_PROMTOOL, "check", "rules", kRules});
  EXPECT_EQ(result.exit_code, 0) << result.stdout_text << result.stderr_text;
}

TEST(AlertRulesTest, PromtoolUnitTestsPass) {
  const CommandResult result = RunCommand({STRATA_PROMTOOL, "test", "rules", kRuleTests});
  EXPECT_EQ(result.exit_code, 0) << result.stdout_text << result.stderr_text;
  EXPECT_THAT(result.stdout_text + result.stderr_text, ::testing::HasSubstr("SUCCESS"));
}

TEST(AlertRulesTest, EveryAlertIsTestedFiringAndQuiet) {
  std::set<std::string> alerts;
  const std::string rules = ReadFile(kRules);
  const std::regex alert(R"(- alert: (\w+))");
  for (auto it = std::sregex_iterator(rules.begin(), rules.end(), alert);
       it != std::sregex_iterator(); ++it) {
    alerts.insert((*it)[1]);
  }
  ASSERT_GE(alerts.size(), 7u);
  // The unit test file is written in YAML's JSON subset.
  const nlohmann::json tests = nlohmann::json::parse(ReadFile(kRuleTests));
  std::set<std::string> fired, quiet;
  for (const nlohmann::json& test : tests["tests"]) {
    for (const nlohmann::json& check : test.value("alert_rule_test", nlohmann::json::array())) {
      (check["exp_alerts"].empty() ? quiet : fired).insert(check["alertname"]);
    }
  }
  for (const std::string& name : alerts) {
    EXPECT_TRUE(fired.contains(name)) << name << " is never tested firing";
    EXPECT_TRUE(quiet.contains(name)) << name << " is never tested quiet";
  }
  const std::set<std::string> required = {
      "StrataRouterErrorRatioHigh", "StrataRouterNoHealthyReplica", "StrataTimeToFirstTokenHigh",
      "StrataKvCacheNearlyFull",    "StrataWaitingQueueGrowing",    "StrataPreemptionRateHigh",
      "StrataReplicaRankLost"};
  for (const std::string& name : required) EXPECT_TRUE(alerts.contains(name)) << name;
  // Each alert carries runbook text.
  const std::regex runbook("runbook: ");
  EXPECT_EQ(static_cast<size_t>(std::distance(
                std::sregex_iterator(rules.begin(), rules.end(), runbook), std::sregex_iterator())),
            alerts.size());
}

TEST(DashboardsTest, AreValidJsonWithUniqueUidsAndDatasourceVariable) {
  const std::vector<std::string> files = DashboardFiles();
  ASSERT_GE(files.size(), 2u);
  std::set<std::string> uids;
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    nlohmann::json dashboard;
    ASSERT_NO_THROW(dashboard = nlohmann::json::parse(ReadFile(file)));
    ASSERT_TRUE(dashboard["uid"].is_string());
    EXPECT_TRUE(uids.insert(dashboard["uid"]).second) << "uid used twice";
    bool has_datasource = false;
    for (const nlohmann::json& variable : dashboard["templating"]["list"]) {
      has_datasource = has_datasource || variable["type"] == "datasource";
    }
    EXPECT_TRUE(has_datasource);
    std::vector<nlohmann::json> panels;
    CollectPanels(dashboard["panels"], panels);
    std::set<int> ids;
    for (const nlohmann::json& panel : panels) {
      EXPECT_TRUE(ids.insert(panel["id"].get<int>()).second) << "panel id " << panel["id"];
      if (panel.contains("datasource")) {
        EXPECT_EQ(panel["datasource"]["uid"], "${datasource}");
      }
      for (const nlohmann::json& target : panel.value("targets", nlohmann::json::array())) {
        EXPECT_EQ(target["datasource"]["uid"], "${datasource}") << panel["title"];
      }
    }
    EXPECT_FALSE(Expressions(dashboard).empty());
  }
}

TEST(DashboardsTest, EveryExpressionParsesAsARecordingRule) {
  TempDir dir;
  std::ofstream rules(dir.File("dashboards.rules.yaml"));
  rules << "groups:\n";
  int count = 0;
  for (const std::string& file : DashboardFiles()) {
    rules << "  - name: " << std::filesystem::path(file).stem().string() << "\n    rules:\n";
    for (const std::string& expression : Expressions(nlohmann::json::parse(ReadFile(file)))) {
      rules << "      - record: dashboard:expression_" << ++count
            << "\n        expr: " << nlohmann::json(Substitute(expression)).dump() << "\n";
    }
  }
  rules.close();
  ASSERT_GT(count, 20);
  const CommandResult result =
      RunCommand({STRATA_PROMTOOL, "check", "rules", dir.File("dashboards.rules.yaml")});
  EXPECT_EQ(result.exit_code, 0) << result.stdout_text << result.stderr_text;
  EXPECT_THAT(result.stdout_text, ::testing::HasSubstr(std::to_string(count) + " rules found"));
}

TEST(DashboardsTest, EveryMetricNameIsInTheCatalogue) {
  std::vector<std::string> files = DashboardFiles();
  files.push_back(kRules);
  int used = 0;
  for (const std::string& file : files) {
    for (const std::string& name : MetricNames(ReadFile(file))) {
      ++used;
      EXPECT_TRUE(InCatalogue(name)) << file << " uses " << name << ", not in the catalogue";
    }
  }
  EXPECT_GT(used, 20);
}

TEST(DashboardsTest, CoverTheFleetAndReplicaSignals) {
  std::string all;
  for (const std::string& file : DashboardFiles()) all += ReadFile(file);
  for (const char* name :
       {metrics::kRouterRequestsTotal, metrics::kRouterTimeToFirstToken,
        metrics::kInterTokenLatency, metrics::kRouterRequestDuration, metrics::kGenerationTokens,
        metrics::kRequestsRunning, metrics::kRequestsWaiting, metrics::kKvCacheUsage,
        metrics::kPrefixCacheHits, metrics::kRouterBackendHealthy, metrics::kRouterRetriesTotal,
        metrics::kRouterRejectionsTotal, metrics::kRequestStageDuration, metrics::kRankStepSeconds,
        metrics::kPreemptions, metrics::kEngineStepDuration, metrics::kEngineBatchTokens,
        metrics::kEngineBatchSequences, metrics::kRankCollectiveErrors}) {
    EXPECT_THAT(all, ::testing::HasSubstr(name));
  }
}

}  // namespace
}  // namespace strata::testing
