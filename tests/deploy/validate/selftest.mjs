#!/usr/bin/env node
// Shows that the validator catches what it claims to: starts from a rendered
// deployment that passes (the cpu-dev overlay), breaks it in one way at a
// time, and requires each breakage to be reported under the expected rule,
// and only that rule.
//
// Usage: selftest.mjs --node-dir DIR RENDERED.yaml
import fs from "node:fs";
import { loadValidator } from "./validate.mjs";

const LWS = ["LeaderWorkerSet", "strata-worker"];
const leader = (objs) => find(objs, ...LWS).spec.leaderWorkerTemplate.leaderTemplate.spec;
const follower = (objs) => find(objs, ...LWS).spec.leaderWorkerTemplate.workerTemplate.spec;
const router = (objs) => find(objs, "Deployment", "strata-router").spec.template.spec;
const workerConfig = (objs) => objs.find((o) => o.kind === "ConfigMap" && o.metadata.name.startsWith("strata-worker-config")).data;

function find(objects, kind, name) {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`selftest: the rendered input has no ${kind}/${name}`);
  return found;
}

// [description, expected rule, mutation]
const CASES = [
  ["unknown field in the LeaderWorkerSet spec", "schema",
    (o) => { find(o, ...LWS).spec.leaderWorkerTemplate.restartPolicys = "None"; }],
  ["wrong type inside a LeaderWorkerSet pod template", "schema",
    (o) => { leader(o).containers[0].readinessProbe.grpc.port = "50051"; }],
  ["misspelt field inside a LeaderWorkerSet pod template", "schema",
    (o) => { follower(o).terminationGracePeriodSecond = 75; }],
  ["unknown field in a Deployment container", "schema",
    (o) => { router(o).containers[0].imagePullPolicyy = "Always"; }],
  ["wrong type in a HorizontalPodAutoscaler", "schema",
    (o) => { find(o, "HorizontalPodAutoscaler", "strata-router").spec.minReplicas = "2"; }],
  ["unknown field in a ServiceMonitor endpoint", "schema",
    (o) => { find(o, "ServiceMonitor", "strata-router").spec.endpoints[0].intervall = "15s"; }],
  ["a rule that is both recording rule and alert", "schema",
    (o) => { find(o, "PrometheusRule", "strata").spec.groups[1].rules[0].record = "strata:x"; }],
  ["a kind with no schema", "schema",
    (o) => { o.push({ apiVersion: "example.com/v1", kind: "Gadget", metadata: { name: "x" } }); }],
  ["size that does not fit tp x pp", "parallel-shape",
    (o) => { find(o, ...LWS).spec.leaderWorkerTemplate.size = 3; }],
  ["tp x pp that does not fit the pods", "parallel-shape",
    (o) => { workerConfig(o).STRATA_TP = "3"; }],
  ["GPUs per pod that differ from ranks per pod", "parallel-shape",
    (o) => { for (const s of [leader(o), follower(o)]) s.containers[0].resources.limits["nvidia.com/gpu"] = 4; }],
  ["leader and followers running different models", "parallel-shape",
    (o) => {
      const args = follower(o).containers[0].args;
      args[args.findIndex((a) => a.startsWith("--model="))] = "--model=/models/other";
    }],
  ["a follower without /dev/shm", "shm",
    (o) => { const c = follower(o).containers[0]; c.volumeMounts = c.volumeMounts.filter((m) => m.mountPath !== "/dev/shm"); }],
  ["/dev/shm on disk instead of memory", "shm",
    (o) => { delete leader(o).volumes.find((v) => v.name === "dshm").emptyDir.medium; }],
  ["a probe on a follower", "probes",
    (o) => { follower(o).containers[0].readinessProbe = { grpc: { port: 50051 } }; }],
  ["a TCP probe on the leader", "probes",
    (o) => { leader(o).containers[0].readinessProbe = { tcpSocket: { port: 50051 } }; }],
  ["a leader without a startup probe", "probes",
    (o) => { delete leader(o).containers[0].startupProbe; }],
  ["a leader probe on the wrong port", "probes",
    (o) => { leader(o).containers[0].livenessProbe.grpc.port = 9400; }],
  ["a grace period shorter than drain + preStop", "grace",
    (o) => { leader(o).terminationGracePeriodSeconds = 20; }],
  ["followers that stop before the leader has drained", "grace",
    (o) => { follower(o).containers[0].lifecycle.preStop.exec.command = ["sleep", "5"]; }],
  ["a router without preStop", "grace",
    (o) => { delete router(o).containers[0].lifecycle; }],
  ["two image tags", "image-tag",
    (o) => { router(o).containers[0].image = "strata-cpu:0.2.0"; }],
  ["a placeholder image", "image-tag",
    (o) => { router(o).containers[0].image = "strata-router-image:0.1.0"; }],
  ["restartPolicy None", "rank-env",
    (o) => { find(o, ...LWS).spec.leaderWorkerTemplate.restartPolicy = "None"; }],
  ["startupPolicy LeaderReady", "rank-env",
    (o) => { find(o, ...LWS).spec.startupPolicy = "LeaderReady"; }],
  ["no NCCL interface variable", "rank-env",
    (o) => { delete workerConfig(o).NCCL_SOCKET_IFNAME; }],
  ["a fixed --rank", "rank-env",
    (o) => { leader(o).containers[0].args.push("--rank=0"); }],
  ["an argument whose variable has no value", "env-resolved",
    (o) => { leader(o).containers[0].args.push("--threads=$(STRATA_NO_SUCH_VARIABLE)"); }],
  ["a leaders Service that also selects followers", "discovery",
    (o) => { delete find(o, "Service", "strata-worker-leaders").spec.selector["leaderworkerset.sigs.k8s.io/worker-index"]; }],
  ["a router that looks for the wrong Service", "discovery",
    (o) => {
      const args = router(o).containers[0].args;
      args[args.findIndex((a) => a.startsWith("--backends="))] = "--backends=dns:///strata-workers:50051";
    }],
  ["a replica group without a NetworkPolicy", "network-policy",
    (o) => { o.splice(o.indexOf(find(o, "NetworkPolicy", "strata-worker-group-1")), 1); }],
  ["the bootstrap port opened to the routers", "network-policy",
    (o) => { find(o, "NetworkPolicy", "strata-worker-group-0").spec.ingress[1].ports.push({ protocol: "TCP", port: 29500 }); }],
  ["every port opened to other namespaces", "network-policy",
    (o) => { delete find(o, "NetworkPolicy", "strata-worker-group-0").spec.ingress[2].ports; }],
  ["a PodMonitor that scrapes a port the pods lack", "monitoring",
    (o) => { find(o, "PodMonitor", "strata-worker").spec.podMetricsEndpoints[0].port = "prometheus"; }],
  ["a ServiceMonitor on a port the Service lacks", "monitoring",
    (o) => { find(o, "ServiceMonitor", "strata-router").spec.endpoints[0].port = "metric"; }],
  ["a dashboard that is not JSON", "monitoring",
    (o) => {
      const cm = o.find((x) => x.kind === "ConfigMap" && x.metadata.labels?.grafana_dashboard === "1");
      cm.data[Object.keys(cm.data)[0]] = "{ not json";
    }],
];

function main(argv) {
  const nodeDirIndex = argv.indexOf("--node-dir");
  const file = argv.filter((a, i) => !a.startsWith("--") && i !== nodeDirIndex + 1)[0];
  if (nodeDirIndex < 0 || !file) {
    console.error("usage: selftest.mjs --node-dir DIR RENDERED.yaml");
    return 2;
  }
  const validator = loadValidator(argv[nodeDirIndex + 1]);
  const pristine = validator.parse(fs.readFileSync(file, "utf8"), file);
  const options = { requireMonitoring: true };
  const baseline = validator.check(pristine, options);
  if (baseline.length > 0) {
    for (const f of baseline) console.error(`baseline: ${f.rule}: ${f.object}: ${f.message}`);
    console.error("selftest: the unmodified input already has findings");
    return 1;
  }
  let failed = 0;
  for (const [description, rule, mutate] of CASES) {
    const objects = structuredClone(pristine);
    mutate(objects);
    const findings = validator.check(objects, options);
    const hits = findings.filter((f) => f.rule === rule);
    const others = findings.filter((f) => f.rule !== rule);
    if (hits.length > 0 && others.length === 0) {
      console.log(`ok   ${rule.padEnd(14)} ${description}: ${hits[0].message}`);
    } else {
      failed++;
      console.log(`FAIL ${rule.padEnd(14)} ${description}: expected ${rule} only, got` +
        (findings.length ? findings.map((f) => `\n       ${f.rule}: ${f.object}: ${f.message}`).join("") : " nothing"));
    }
  }
  console.log(`${CASES.length - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
