#!/usr/bin/env node
// Lints the project's Dockerfiles with the rules that matter for its images.
// Debian has no hadolint, so this stands in for it; each rule names the
// hadolint check it mirrors where there is one.
//
//   SD001 FROM uses a pinned version tag or a digest (no :latest, no bare name)  [DL3006/DL3007]
//   SD002 the final stage runs as a non-root USER                                [DL3002]
//   SD003 no ADD: COPY local files, never fetch URLs while building              [DL3020]
//   SD004 apt-get: update+install in one RUN, -y, --no-install-recommends,
//         and the same RUN removes /var/lib/apt/lists/*                          [DL3009/DL3014/DL3015]
//   SD005 the final stage declares HEALTHCHECK; "HEALTHCHECK NONE" only with a
//         comment right above it that says which probes check health instead
//   SD006 a RUN with a pipe runs under `-o pipefail`                             [DL4006]
//   SD007 CMD and ENTRYPOINT use the exec (JSON array) form                      [DL3025]
//   SD008 WORKDIR is absolute                                                    [DL3000]
//   SD009 COPY --from names an earlier stage                                     [DL3022]
//   SD010 no sudo                                                                [DL3004]
//   SD011 no MAINTAINER                                                          [DL4000]
//   SD012 <Dockerfile>.dockerignore sits beside it and excludes .git, build
//         trees and models/ (models come from volumes, never from the image)
//
// Usage: lint_dockerfiles.mjs FILE...                   exit 0 when clean, 1 with findings
//        lint_dockerfiles.mjs --expect SD001,SD004 FILE  exit 0 when exactly these rules fire
import fs from "node:fs";
import path from "node:path";

// Instructions of one Dockerfile: {line, keyword, args, commentAbove}.
function parseDockerfile(text) {
  const lines = text.split("\n");
  const instructions = [];
  let pending = null;
  let comments = [];
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    const trimmed = raw.trim();
    if (pending === null) {
      if (trimmed === "") {
        comments = [];
        continue;
      }
      if (trimmed.startsWith("#")) {
        comments.push(trimmed.replace(/^#\s?/, ""));
        continue;
      }
      const match = trimmed.match(/^(\S+)\s*(.*)$/);
      pending = { line: i + 1, keyword: match[1].toUpperCase(), args: "", commentAbove: comments };
      comments = [];
      let rest = match[2];
      if (rest.endsWith("\\")) {
        pending.args = rest.slice(0, -1);
        continue;
      }
      pending.args = rest;
      instructions.push(pending);
      pending = null;
    } else {
      // A continuation line; comment lines inside a continued instruction are dropped.
      if (trimmed.startsWith("#")) continue;
      if (trimmed.endsWith("\\")) {
        pending.args += " " + trimmed.slice(0, -1);
        continue;
      }
      pending.args += " " + trimmed;
      instructions.push(pending);
      pending = null;
    }
  }
  if (pending !== null) instructions.push(pending);
  for (const instruction of instructions) instruction.args = instruction.args.trim();
  return instructions;
}

function expandArgs(value, argDefaults) {
  return value.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (whole, name) =>
    name in argDefaults ? argDefaults[name] : whole,
  );
}

function lintDockerfile(file) {
  const findings = [];
  const report = (rule, line, message) => findings.push({ rule, line, message });
  const instructions = parseDockerfile(fs.readFileSync(file, "utf8"));

  // Stages, and ARG defaults declared before the first FROM (usable in FROM).
  const globalArgs = {};
  const stages = [];
  for (const instruction of instructions) {
    if (instruction.keyword === "FROM") {
      stages.push({ from: instruction, name: null, instructions: [] });
      const as = instruction.args.match(/\s+AS\s+(\S+)\s*$/i);
      if (as) stages[stages.length - 1].name = as[1];
    } else if (stages.length === 0) {
      if (instruction.keyword === "ARG") {
        const [name, ...value] = instruction.args.split("=");
        if (value.length > 0) globalArgs[name.trim()] = value.join("=").replace(/^"|"$/g, "");
      }
    } else {
      stages[stages.length - 1].instructions.push(instruction);
    }
  }
  if (stages.length === 0) report("SD001", 1, "no FROM instruction");

  const earlierStages = new Set();
  stages.forEach((stage, index) => {
    // SD001: pinned base images.
    const fromArgs = stage.from.args
      .replace(/\s+AS\s+\S+\s*$/i, "")
      .replace(/--platform=\S+\s*/, "")
      .trim();
    const image = expandArgs(fromArgs, globalArgs);
    if (!earlierStages.has(image) && image !== "scratch") {
      if (/\$/.test(image)) {
        report("SD001", stage.from.line, `FROM ${fromArgs}: an ARG without a default`);
      } else if (!image.includes("@sha256:")) {
        const lastPart = image.split("/").pop();
        const tag = lastPart.includes(":") ? lastPart.split(":").pop() : "";
        if (tag === "") {
          report("SD001", stage.from.line, `FROM ${image}: no tag; pin a version tag or a digest`);
        } else if (tag === "latest" || !/[0-9]/.test(tag)) {
          report("SD001", stage.from.line,
            `FROM ${image}: tag '${tag}' moves; pin a version tag (e.g. 12.8-slim) or a digest`);
        }
      }
    }

    let pipefailShell = false;
    for (const instruction of stage.instructions) {
      const { keyword, args, line } = instruction;
      if (keyword === "SHELL" && /pipefail/.test(args)) pipefailShell = true;
      if (keyword === "ADD") {
        report("SD003", line, /https?:\/\//.test(args)
          ? "ADD of a URL: fetch nothing while building; COPY files from the context"
          : "ADD: use COPY for local files");
      }
      if (keyword === "MAINTAINER") report("SD011", line, "MAINTAINER is deprecated; use a LABEL");
      if (keyword === "WORKDIR" && !args.startsWith("/") && !args.startsWith("$")) {
        report("SD008", line, `WORKDIR ${args}: use an absolute path`);
      }
      if ((keyword === "CMD" || keyword === "ENTRYPOINT") && !args.startsWith("[")) {
        report("SD007", line, `${keyword} in shell form; use the JSON array form so signals reach the process`);
      }
      if (keyword === "COPY") {
        const from = args.match(/--from=(\S+)/);
        if (from && !earlierStages.has(from[1]) && !/^\d+$/.test(from[1])) {
          report("SD009", line, `COPY --from=${from[1]}: no earlier stage has that name`);
        }
      }
      if (keyword === "RUN") {
        if (/(^|[\s;&|])sudo\s/.test(args)) report("SD010", line, "sudo in RUN; switch USER instead");
        if (/[^|]\|[^|]/.test(args.replace(/'[^']*'|"[^"]*"/g, "''")) && !pipefailShell &&
            !/set -[a-z]*o pipefail|set -o pipefail/.test(args)) {
          report("SD006", line, "RUN with a pipe but no pipefail: set SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]");
        }
        const installs = /apt-get\s+(?:-\S+\s+)*install/.test(args);
        const updates = /apt-get\s+(?:-\S+\s+)*update/.test(args);
        if (installs) {
          if (!/\s(-y|--yes|-qq?y|-yq+|--assume-yes)(\s|$)/.test(args)) {
            report("SD004", line, "apt-get install without -y");
          }
          if (!/--no-install-recommends/.test(args)) {
            report("SD004", line, "apt-get install without --no-install-recommends");
          }
          if (!updates) report("SD004", line, "apt-get install without apt-get update in the same RUN");
        }
        if ((installs || updates) && !/rm -rf \/var\/lib\/apt\/lists/.test(args)) {
          report("SD004", line, "apt-get without `rm -rf /var/lib/apt/lists/*` in the same RUN");
        }
      }
    }
    if (stage.name) earlierStages.add(stage.name);
    earlierStages.add(String(index));

    if (index === stages.length - 1) {
      // SD002: non-root final user.
      const users = stage.instructions.filter((i) => i.keyword === "USER");
      const last = users[users.length - 1];
      if (!last) {
        report("SD002", stage.from.line, "the final stage sets no USER, so it runs as root");
      } else {
        const user = last.args.split(":")[0];
        if (user === "root" || user === "0") {
          report("SD002", last.line, `USER ${last.args}: the final stage must not run as root`);
        }
      }
      // SD005: health checking is declared.
      const health = stage.instructions.filter((i) => i.keyword === "HEALTHCHECK");
      if (health.length === 0) {
        report("SD005", stage.from.line,
          "no HEALTHCHECK; add one, or HEALTHCHECK NONE with a comment naming the probes that check health");
      } else {
        const decl = health[health.length - 1];
        if (/^NONE$/i.test(decl.args) && !decl.commentAbove.some((c) => /probe/i.test(c))) {
          report("SD005", decl.line, "HEALTHCHECK NONE needs a comment right above it naming the probes used instead");
        }
      }
    }
  });

  // SD012: the per-Dockerfile ignore file.
  const ignoreFile = `${file}.dockerignore`;
  if (!fs.existsSync(ignoreFile)) {
    report("SD012", 1, `${path.basename(ignoreFile)} is missing beside the Dockerfile`);
  } else {
    const patterns = fs.readFileSync(ignoreFile, "utf8").split("\n").map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    for (const needed of [".git", "build", "models"]) {
      if (!patterns.some((p) => p === needed || p === `${needed}/` || p === `/${needed}`)) {
        report("SD012", 1, `${path.basename(ignoreFile)} does not exclude ${needed}`);
      }
    }
  }
  return findings;
}

const argv = process.argv.slice(2);
let expected = null;
if (argv[0] === "--expect") {
  expected = new Set(argv[1].split(",").filter((s) => s !== ""));
  argv.splice(0, 2);
}
if (argv.length === 0) {
  console.error("usage: lint_dockerfiles.mjs [--expect RULE,...] DOCKERFILE...");
  process.exit(2);
}
const fired = new Set();
let total = 0;
for (const file of argv) {
  const findings = lintDockerfile(file);
  for (const f of findings) {
    console.log(`${file}:${f.line}: ${f.rule} ${f.message}`);
    fired.add(f.rule);
  }
  total += findings.length;
  if (findings.length === 0) console.log(`${file}: clean`);
}
if (expected === null) {
  process.exit(total === 0 ? 0 : 1);
}
const missing = [...expected].filter((r) => !fired.has(r));
const unexpected = [...fired].filter((r) => !expected.has(r));
if (missing.length > 0 || unexpected.length > 0) {
  console.error(`expected rules ${[...expected].join(",")}; missing: ${missing.join(",") || "none"};` +
    ` unexpected: ${unexpected.join(",") || "none"}`);
  process.exit(1);
}
console.log(`all ${expected.size} expected rules fired`);
