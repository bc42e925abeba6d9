#!/usr/bin/env node
// Validates rendered Strata manifests offline: every object against its API
// schema (lib/schema_validation.mjs) and the deployment against the project's
// rules (lib/project_rules.mjs).
//
// Usage:
//   validate.mjs --node-dir DIR [--require-monitoring] [--expect RULE] FILE...
//
//   --node-dir DIR         folder where package.json's packages are installed
//                          (DIR/node_modules); tests/deploy/setup_node.sh makes it
//   --require-monitoring   the ServiceMonitor/PodMonitor/PrometheusRule/dashboard
//                          objects must be present
//   --expect RULE          negative test: succeed only if findings of RULE (a rule
//                          name, or "schema") are reported, and no other rule's
//
// Each FILE is a multi-document YAML stream (kubectl kustomize or helmrender
// output). Exit status: 0 clean (or expectation met), 1 findings, 2 usage.
import path from "node:path";
import fs from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { SchemaValidator } from "./lib/schema_validation.mjs";
import { checkProjectRules } from "./lib/project_rules.mjs";

export function loadValidator(nodeDir) {
  const nodeModules = path.join(nodeDir, "node_modules");
  if (!fs.existsSync(path.join(nodeModules, "kubernetes-models"))) {
    throw new Error(`${nodeModules} has no kubernetes-models; run tests/deploy/setup_node.sh ${nodeDir}`);
  }
  const requireModule = createRequire(path.join(nodeDir, "package.json"));
  const here = path.dirname(fileURLToPath(import.meta.url));
  const schemas = new SchemaValidator(requireModule, nodeModules, path.join(here, "..", "schemas"));
  const YAML = requireModule("yaml");
  return {
    parse(text, source) {
      const objects = [];
      for (const doc of YAML.parseAllDocuments(text)) {
        if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors[0].message}`);
        const value = doc.toJS();
        if (value !== null && value !== undefined) objects.push(value);
      }
      return objects;
    },
    check(objects, options = {}) {
      return [...objects.flatMap((o) => schemas.validate(o)), ...checkProjectRules(objects, options)];
    },
  };
}

function main(argv) {
  let nodeDir = null;
  let expected = null;
  const options = {};
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--node-dir") nodeDir = argv[++i];
    else if (argv[i] === "--expect") expected = argv[++i];
    else if (argv[i] === "--require-monitoring") options.requireMonitoring = true;
    else if (argv[i].startsWith("--")) return usage(`unknown option ${argv[i]}`);
    else files.push(argv[i]);
  }
  if (!nodeDir || files.length === 0) return usage("--node-dir and at least one FILE are required");
  const validator = loadValidator(nodeDir);
  const objects = files.flatMap((f) => validator.parse(fs.readFileSync(f, "utf8"), f));
  const findings = validator.check(objects, options);
  for (const f of findings) console.log(`${f.rule}: ${f.object}: ${f.message}`);
  const kinds = [...new Set(objects.map((o) => o.kind))].sort().join(", ");
  if (expected !== null) {
    const others = findings.filter((f) => f.rule !== expected);
    if (findings.length > others.length && others.length === 0) {
      console.log(`expected ${expected} findings were reported`);
      return 0;
    }
    console.error(`expected only ${expected} findings; got ${findings.length - others.length} of it and ${others.length} others`);
    return 1;
  }
  if (findings.length > 0) {
    console.error(`${findings.length} findings in ${objects.length} objects (${kinds})`);
    return 1;
  }
  console.log(`${objects.length} objects valid (${kinds})`);
  return 0;
}

function usage(message) {
  console.error(`validate.mjs: ${message}\nusage: validate.mjs --node-dir DIR [--require-monitoring] [--expect RULE] FILE...`);
  return 2;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
