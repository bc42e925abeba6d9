#!/usr/bin/env node
// Every metric that the Prometheus rules (deploy/prometheus) and the Grafana
// dashboards (deploy/grafana) query must be one the code exports: the
// catalogue constants in the *metrics.h headers of worker/service and router.
// A histogram NAME also provides NAME_bucket, NAME_sum and NAME_count.
//
// Usage: check_metric_names.mjs REPOSITORY_ROOT
import fs from "node:fs";
import path from "node:path";

const root = process.argv[2];
if (!root) {
  console.error("usage: check_metric_names.mjs REPOSITORY_ROOT");
  process.exit(2);
}

function filesIn(dir, pattern) {
  const full = path.join(root, dir);
  if (!fs.existsSync(full)) return [];
  return fs.readdirSync(full).filter((f) => pattern.test(f)).map((f) => path.join(full, f));
}

const exported = new Set();
for (const header of [...filesIn("common", /^metrics_catalogue\.h$/), ...filesIn("worker/service", /metrics.*\.h$/), ...filesIn("router", /metrics.*\.h$/)]) {
  for (const m of fs.readFileSync(header, "utf8").matchAll(/constexpr\s+char\s+\w+\[\]\s*=\s*"(strata_\w+)"/g)) {
    exported.add(m[1]);
  }
}
if (exported.size === 0) {
  console.error("no metric catalogue found under worker/service or router");
  process.exit(1);
}
const known = new Set([...exported].flatMap((n) => [n, `${n}_bucket`, `${n}_sum`, `${n}_count`]));

const sources = [...filesIn("deploy/prometheus", /\.ya?ml$/), ...filesIn("deploy/grafana", /\.json$/)];
let unknown = 0;
let used = 0;
for (const file of sources) {
  const text = fs.readFileSync(file, "utf8");
  // Metric names only: recording rule names (strata:...) and label values are not.
  for (const m of text.matchAll(/(?<![\w:])strata_[a-z0-9_]+/g)) {
    used++;
    if (!known.has(m[0])) {
      console.log(`${path.relative(root, file)}: ${m[0]} is not exported by the code`);
      unknown++;
    }
  }
}
if (used === 0) {
  console.error("no metric names found in deploy/prometheus or deploy/grafana");
  process.exit(1);
}
console.log(`${used} metric references in ${sources.length} files; ${exported.size} metrics exported; ${unknown} unknown`);
process.exit(unknown === 0 ? 0 : 1);
