// Strata's own rules on a rendered deployment (kustomize overlay or Helm
// release), beyond what the API schemas can say. Each finding names its rule:
//
//   env-resolved    every $(VAR) in a container's command/args has a value
//   parallel-shape  tp x pp == pods per replica x ranks per pod; GPUs per pod
//                   == ranks per pod; leader and followers run the same shape
//   rank-env        ranks come from the LeaderWorkerSet env (no --rank,
//                   --world-size, --leader-address); NCCL/Gloo interface env
//                   set; restartPolicy RecreateGroupOnPodRestart; followers
//                   start with the leader (not LeaderReady)
//   shm             every rank mounts /dev/shm from a memory emptyDir
//   probes          probes are gRPC probes; a leader has startup, readiness
//                   and liveness probes on its gRPC port; followers have none
//   grace           terminationGracePeriodSeconds >= drain + preStop; serving
//                   pods have a preStop; followers outlive the leader's drain
//   image-tag       every container image has the same explicit version tag
//   discovery       a headless Service selects only replica leaders, and the
//                   router's --backends names it
//   network-policy  per replica group, only the group's own pods reach ports
//                   other than gRPC (from routers) and metrics
//   monitoring      monitors scrape ports that exist; dashboards parse
//
// Manifests pass flags as --name=value (one list item each).
import { describe } from "./schema_validation.mjs";

const LWS_NAME = "leaderworkerset.sigs.k8s.io/name";
const LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index";
const LWS_WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index";
const GPU = "nvidia.com/gpu";

export function checkProjectRules(objects, options = {}) {
  const findings = [];
  const add = (rule, object, message) => findings.push({ rule, object, message });
  const configMaps = new Map(
    objects.filter((o) => o.kind === "ConfigMap").map((o) => [o.metadata.name, o.data ?? {}]),
  );

  const templates = podTemplates(objects);
  // Resolved command lines, once per container.
  for (const t of templates) {
    t.containers = (t.template.spec?.containers ?? []).map((container) => {
      const env = containerEnv(container, configMaps, (m) => add("env-resolved", t.owner, m));
      const argv = [...(container.command ?? []), ...(container.args ?? [])].map((arg) =>
        arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name) => {
          if (name in env) return env[name];
          add("env-resolved", t.owner, `container ${container.name}: ${whole} in "${arg}" has no value`);
          return whole;
        }),
      );
      return { container, env, argv, invocation: parseInvocation(argv) };
    });
  }

  checkImages(objects, add);
  for (const t of templates) {
    checkProbes(t, add);
    checkGrace(t, add);
  }
  const leaderWorkerSets = objects.filter((o) => o.kind === "LeaderWorkerSet");
  for (const lws of leaderWorkerSets) {
    const leader = templates.find((t) => t.lws === lws && t.role === "leader");
    const follower = templates.find((t) => t.lws === lws && t.role === "follower");
    checkParallelShape(lws, leader, follower, add);
    checkFollowersOutliveDrain(lws, leader, follower, add);
    checkNetworkPolicies(lws, leader, objects, add);
  }
  checkDiscovery(objects, templates, leaderWorkerSets, add);
  if (options.requireMonitoring || objects.some((o) => /Monitor$/.test(o.kind))) {
    checkMonitoring(objects, templates, add, options);
  }
  if (leaderWorkerSets.length === 0) add("parallel-shape", "(all)", "no LeaderWorkerSet rendered");
  return findings;
}

// --- reading the objects --------------------------------------------------

function podTemplates(objects) {
  const out = [];
  for (const o of objects) {
    const owner = describe(o);
    if (["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(o.kind) && o.spec?.template) {
      out.push({ owner, role: "other", template: o.spec.template, object: o });
    }
    if (o.kind === "LeaderWorkerSet") {
      const lwt = o.spec?.leaderWorkerTemplate ?? {};
      // Without a leader template the leader uses the worker template.
      out.push({ owner: `${owner} leader`, role: "leader", template: lwt.leaderTemplate ?? lwt.workerTemplate, lws: o, object: o });
      out.push({ owner: `${owner} followers`, role: "follower", template: lwt.workerTemplate, lws: o, object: o });
    }
  }
  return out.filter((t) => t.template);
}

function containerEnv(container, configMaps, complain) {
  const env = {};
  for (const from of container.envFrom ?? []) {
    if (!from.configMapRef) continue;
    const data = configMaps.get(from.configMapRef.name);
    if (data === undefined) {
      complain(`container ${container.name}: envFrom ConfigMap ${from.configMapRef.name} is not rendered`);
      continue;
    }
    for (const [k, v] of Object.entries(data)) env[(from.prefix ?? "") + k] = v;
  }
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.configMapKeyRef) {
      const ref = e.valueFrom.configMapKeyRef;
      const value = configMaps.get(ref.name)?.[ref.key];
      if (value === undefined) complain(`container ${container.name}: env ${e.name} refers to missing ${ref.name}/${ref.key}`);
      else env[e.name] = value;
    } else {
      env[e.name] = ""; // downward API or secret: present, value unknown here
    }
  }
  return env;
}

function parseFlags(tokens) {
  const flags = new Map();
  for (const token of tokens) {
    const m = token.match(/^--([A-Za-z0-9-]+)(?:=(.*))?$/);
    if (m) flags.set(m[1], m[2] ?? "");
  }
  return flags;
}

// {program, flags, launcher?} for strata binaries, possibly behind strata-launch-ranks.
function parseInvocation(argv) {
  if (argv.length === 0) return null;
  const program = argv[0].split("/").pop();
  if (program === "strata-launch-ranks") {
    const separator = argv.indexOf("--");
    const launcher = parseFlags(argv.slice(1, separator < 0 ? argv.length : separator));
    const inner = separator < 0 ? [] : argv.slice(separator + 1);
    const innerInvocation = parseInvocation(inner) ?? { program: "", flags: new Map() };
    return { ...innerInvocation, launcher };
  }
  return { program, flags: parseFlags(argv.slice(1)) };
}

const rankContainers = (t) => (t?.containers ?? []).filter((c) => c.invocation?.program === "strata-worker");

function intFlag(flags, name, fallback) {
  if (!flags.has(name)) return fallback;
  const value = Number(flags.get(name));
  return Number.isInteger(value) ? value : NaN;
}

// gRPC port of local rank 0 of a rank container.
function grpcPort(rank) {
  if (rank.invocation.launcher) return intFlag(rank.invocation.launcher, "grpc-port", NaN);
  const listen = rank.invocation.flags.get("listen") ?? "";
  return Number(listen.split(":").pop());
}

function preStopSeconds(container) {
  const handler = container.lifecycle?.preStop;
  if (!handler) return 0;
  if (handler.sleep) return Number(handler.sleep.seconds);
  const command = handler.exec?.command ?? [];
  if (command.length === 2 && command[0].split("/").pop() === "sleep" && /^\d+$/.test(command[1])) {
    return Number(command[1]);
  }
  return NaN;
}

// --- rules -----------------------------------------------------------------

function checkImages(objects, add) {
  const tags = new Map(); // tag -> first container that uses it
  for (const o of objects) {
    for (const spec of podSpecs(o)) {
      for (const c of [...(spec.containers ?? []), ...(spec.initContainers ?? [])]) {
        const where = `${describe(o)} container ${c.name}`;
        const image = c.image ?? "";
        const name = image.split("@")[0];
        const lastPart = name.split("/").pop();
        const tag = lastPart.includes(":") ? lastPart.split(":").pop() : "";
        if (/-image$/.test(lastPart.split(":")[0])) {
          add("image-tag", where, `image "${image}" is a placeholder; an overlay or values must name the image`);
        }
        if (tag === "" || tag === "latest") {
          add("image-tag", where, `image "${image}" has no version tag`);
          continue;
        }
        if (!tags.has(tag)) tags.set(tag, where);
      }
    }
  }
  if (tags.size > 1) {
    add("image-tag", "(all)", `containers use different image tags: ${[...tags].map(([t, w]) => `${t} (${w})`).join(", ")}`);
  }
}

function podSpecs(o) {
  if (o.kind === "LeaderWorkerSet") {
    const lwt = o.spec?.leaderWorkerTemplate ?? {};
    return [lwt.leaderTemplate?.spec, lwt.workerTemplate?.spec].filter(Boolean);
  }
  if (o.spec?.template?.spec) return [o.spec.template.spec];
  if (o.kind === "Pod" && o.spec) return [o.spec];
  return [];
}

function checkProbes(t, add) {
  for (const { container } of t.containers) {
    for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      const probe = container[kind];
      if (probe && !probe.grpc) {
        add("probes", t.owner, `container ${container.name}: ${kind} is not a gRPC probe (the servers speak grpc.health.v1)`);
      }
    }
  }
  if (t.role === "follower") {
    for (const { container } of t.containers) {
      for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        if (container[kind]) {
          add("probes", t.owner, `container ${container.name}: followers serve no gRPC and must have no ${kind}`);
        }
      }
    }
  }
  if (t.role === "leader") {
    const ranks = rankContainers(t);
    if (ranks.length === 0) add("probes", t.owner, "no strata-worker container in the leader template");
    for (const rank of ranks) {
      const port = grpcPort(rank);
      for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const probe = rank.container[kind];
        if (!probe) {
          add("probes", t.owner, `container ${rank.container.name}: the leader needs a ${kind}`);
        } else if (typeof probe.grpc?.port === "number" && probe.grpc.port !== port) {
          add("probes", t.owner, `container ${rank.container.name}: ${kind} checks port ${probe.grpc.port}, rank 0 serves gRPC on ${port}`);
        }
      }
    }
  }
}

function checkGrace(t, add) {
  const grace = t.template.spec?.terminationGracePeriodSeconds ?? 30;
  for (const c of t.containers) {
    const inv = c.invocation;
    if (!inv || !["strata-worker", "strata-router"].includes(inv.program)) continue;
    const drainFlag = inv.program === "strata-worker" ? "drain-seconds" : "drain-timeout";
    const drain = intFlag(inv.flags, drainFlag, 5);
    const preStop = preStopSeconds(c.container);
    if (Number.isNaN(drain) || Number.isNaN(preStop)) {
      add("grace", t.owner, `container ${c.container.name}: cannot read --${drainFlag} or the preStop duration`);
      continue;
    }
    if (preStop === 0 && t.role !== "follower") {
      add("grace", t.owner, `container ${c.container.name}: a serving pod needs a preStop wait so clients stop routing to it first`);
    }
    if (grace < drain + preStop) {
      add("grace", t.owner, `terminationGracePeriodSeconds ${grace} < --${drainFlag} ${drain} + preStop ${preStop}`);
    }
  }
}

function checkFollowersOutliveDrain(lws, leader, follower, add) {
  const leaderRank = rankContainers(leader)[0];
  if (!leaderRank) return;
  const leaderStop = preStopSeconds(leaderRank.container) + intFlag(leaderRank.invocation.flags, "drain-seconds", 5);
  for (const rank of rankContainers(follower)) {
    const stop = preStopSeconds(rank.container);
    if (!(stop >= leaderStop)) {
      add("grace", `${describe(lws)} followers`,
        `container ${rank.container.name}: preStop ${stop} s ends before the leader's preStop + drain (${leaderStop} s); ` +
        "followers must keep running while the leader finishes its calls");
    }
  }
}

function checkParallelShape(lws, leader, follower, add) {
  const id = describe(lws);
  const lwt = lws.spec?.leaderWorkerTemplate ?? {};
  const size = lwt.size ?? 1;
  if (lwt.restartPolicy !== "RecreateGroupOnPodRestart") {
    add("rank-env", id, `restartPolicy is ${lwt.restartPolicy ?? "unset"}; a replica cannot run with a rank missing, use RecreateGroupOnPodRestart`);
  }
  if (lws.spec?.startupPolicy === "LeaderReady") {
    add("rank-env", id, "startupPolicy LeaderReady deadlocks: the leader is ready only once every follower has joined");
  }
  const shapes = [];
  for (const t of [leader, follower]) {
    const ranks = rankContainers(t);
    if (ranks.length !== 1) {
      add("parallel-shape", t?.owner ?? id, `expected one strata-worker container per pod, found ${ranks.length}`);
      continue;
    }
    const rank = ranks[0];
    const flags = rank.invocation.flags;
    for (const forbidden of ["rank", "world-size", "leader-address", "local-rank"]) {
      if (flags.has(forbidden)) {
        add("rank-env", t.owner, `--${forbidden} is set; ranks come from LWS_WORKER_INDEX, LWS_GROUP_SIZE and LWS_LEADER_ADDRESS`);
      }
    }
    for (const variable of ["NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"]) {
      if (!(variable in rank.env)) add("rank-env", t.owner, `container ${rank.container.name}: ${variable} is not set`);
    }
    const tp = intFlag(flags, "tp", NaN);
    const pp = intFlag(flags, "pp", 1);
    const ranksPerPod = intFlag(flags, "ranks-per-pod", 1);
    const launched = rank.invocation.launcher ? intFlag(rank.invocation.launcher, "ranks", NaN) : 1;
    if (!(tp >= 1) || !(pp >= 1) || !(ranksPerPod >= 1)) {
      add("parallel-shape", t.owner, `--tp, --pp and --ranks-per-pod must be positive integers (got ${flags.get("tp")}, ${flags.get("pp")}, ${flags.get("ranks-per-pod")})`);
      continue;
    }
    if (launched !== ranksPerPod) {
      add("parallel-shape", t.owner, `strata-launch-ranks starts ${launched} ranks but --ranks-per-pod is ${ranksPerPod}`);
    }
    if (tp * pp !== size * ranksPerPod) {
      add("parallel-shape", t.owner, `tp ${tp} x pp ${pp} = ${tp * pp} ranks, but size ${size} pods x ${ranksPerPod} ranks per pod = ${size * ranksPerPod}`);
    }
    const gpus = t.containers.reduce((sum, c) => sum + Number(c.container.resources?.limits?.[GPU] ?? 0), 0);
    if (gpus > 0 && gpus !== ranksPerPod) {
      add("parallel-shape", t.owner, `the pod has ${gpus} GPUs for ${ranksPerPod} ranks; each rank drives one GPU`);
    }
    shapes.push({ owner: t.owner, tp, pp, ranksPerPod, gpus, model: flags.get("model"), image: rank.container.image });
  }
  if (shapes.length === 2) {
    for (const key of ["tp", "pp", "ranksPerPod", "gpus", "model", "image"]) {
      if (shapes[0][key] !== shapes[1][key]) {
        add("parallel-shape", id, `leader and followers differ in ${key}: ${shapes[0][key]} vs ${shapes[1][key]}`);
      }
    }
  }
  for (const t of [leader, follower]) {
    for (const rank of rankContainers(t)) checkShm(t, rank.container, add);
  }
}

function checkShm(t, container, add) {
  const mount = (container.volumeMounts ?? []).find((m) => m.mountPath === "/dev/shm");
  if (!mount) {
    add("shm", t.owner, `container ${container.name}: /dev/shm is not mounted (the runtime default is 64 MiB)`);
    return;
  }
  const volume = (t.template.spec?.volumes ?? []).find((v) => v.name === mount.name);
  if (volume?.emptyDir?.medium !== "Memory") {
    add("shm", t.owner, `container ${container.name}: /dev/shm must be an emptyDir with medium: Memory`);
  }
}

function selects(selector, labels) {
  if (!selector) return false;
  const matchLabels = selector.matchLabels ?? {};
  if (selector.matchExpressions?.length) return false; // not used by Strata; treat as no match
  return Object.entries(matchLabels).every(([k, v]) => labels[k] === v);
}

function checkDiscovery(objects, templates, leaderWorkerSets, add) {
  const leaderServices = new Map(); // service name -> {lws, port}
  for (const svc of objects.filter((o) => o.kind === "Service")) {
    const selector = svc.spec?.selector ?? {};
    for (const lws of leaderWorkerSets) {
      if (selector[LWS_NAME] !== lws.metadata.name) continue;
      if (selector[LWS_WORKER_INDEX] !== "0") {
        add("discovery", describe(svc), "selects LeaderWorkerSet pods other than the leaders (add worker-index: \"0\")");
        continue;
      }
      if (svc.spec.clusterIP !== "None") add("discovery", describe(svc), "the leaders Service must be headless (clusterIP: None) for DNS discovery");
      if (svc.spec.publishNotReadyAddresses) add("discovery", describe(svc), "publishNotReadyAddresses would send calls to leaders still loading");
      for (const port of svc.spec.ports ?? []) leaderServices.set(`${svc.metadata.name}:${port.port}`, lws);
    }
  }
  for (const lws of leaderWorkerSets) {
    if (![...leaderServices.values()].includes(lws)) {
      add("discovery", describe(lws), "no headless Service selects this set's leaders");
    }
  }
  for (const t of templates) {
    for (const c of t.containers) {
      if (c.invocation?.program !== "strata-router") continue;
      const backends = c.invocation.flags.get("backends") ?? "";
      const m = backends.match(/^dns:\/\/\/([^.:]+)(?:\.[^:]*)?:(\d+)$/);
      if (!m) {
        add("discovery", t.owner, `router --backends "${backends}" is not dns:///SERVICE:PORT`);
      } else if (!leaderServices.has(`${m[1]}:${m[2]}`)) {
        add("discovery", t.owner, `router --backends names ${m[1]}:${m[2]}, which is no leaders Service port`);
      }
    }
  }
}

function checkNetworkPolicies(lws, leader, objects, add) {
  const id = describe(lws);
  const replicas = lws.spec?.replicas ?? 1;
  const rank = rankContainers(leader)[0];
  const servingPorts = new Set();
  if (rank) {
    servingPorts.add(grpcPort(rank));
    const ranks = rank.invocation.launcher ? intFlag(rank.invocation.launcher, "ranks", 1) : 1;
    const metricsBase = rank.invocation.launcher
      ? intFlag(rank.invocation.launcher, "metrics-port", NaN)
      : Number((rank.invocation.flags.get("metrics-listen") ?? "").split(":").pop());
    for (let i = 0; i < ranks; i++) servingPorts.add(metricsBase + i);
  }
  const policies = objects.filter((o) => o.kind === "NetworkPolicy");
  for (let group = 0; group < replicas; group++) {
    const labels = { [LWS_NAME]: lws.metadata.name, [LWS_GROUP]: String(group) };
    const applying = policies.filter((p) => selects(p.spec?.podSelector, labels) &&
      (p.spec.policyTypes ?? ["Ingress"]).includes("Ingress"));
    if (applying.length === 0) {
      add("network-policy", id, `no NetworkPolicy selects the pods of group ${group}; any pod could reach its rank ports`);
      continue;
    }
    for (const policy of applying) {
      for (const [i, rule] of (policy.spec.ingress ?? []).entries()) {
        const where = `${describe(policy)} ingress[${i}]`;
        const peers = rule.from ?? [];
        const sameGroupOnly = peers.length > 0 && peers.every((peer) =>
          !peer.namespaceSelector && !peer.ipBlock && peer.podSelector &&
          Object.keys(peer.podSelector.matchLabels ?? {}).length > 0 &&
          peer.podSelector.matchLabels[LWS_NAME] === lws.metadata.name &&
          peer.podSelector.matchLabels[LWS_GROUP] === String(group));
        if (sameGroupOnly) continue;
        const ports = rule.ports ?? [];
        if (ports.length === 0) {
          add("network-policy", where, `opens every port of group ${group} to peers outside the group`);
          continue;
        }
        for (const port of ports) {
          const last = port.endPort ?? port.port;
          for (let p = port.port; p <= last; p++) {
            if (typeof p !== "number" || !servingPorts.has(p)) {
              add("network-policy", where, `opens port ${p} of group ${group} beyond the group; only gRPC and metrics ports may be open`);
              break;
            }
          }
        }
      }
    }
  }
}

function checkMonitoring(objects, templates, add, options) {
  for (const kind of ["ServiceMonitor", "PodMonitor", "PrometheusRule"]) {
    if (!objects.some((o) => o.kind === kind)) add("monitoring", "(all)", `no ${kind} rendered`);
  }
  for (const sm of objects.filter((o) => o.kind === "ServiceMonitor")) {
    const services = objects.filter((o) => o.kind === "Service" && selects(sm.spec.selector, o.metadata.labels ?? {}));
    if (services.length === 0) add("monitoring", describe(sm), "selects no rendered Service");
    for (const ep of sm.spec.endpoints ?? []) {
      for (const svc of services) {
        if (!(svc.spec.ports ?? []).some((p) => p.name === ep.port)) {
          add("monitoring", describe(sm), `Service ${svc.metadata.name} has no port named ${ep.port}`);
        }
      }
    }
  }
  for (const pm of objects.filter((o) => o.kind === "PodMonitor")) {
    const pods = templates.filter((t) => selects(pm.spec.selector, t.template.metadata?.labels ?? {}));
    if (pods.length === 0) add("monitoring", describe(pm), "selects no rendered pod template");
    const scraped = new Set((pm.spec.podMetricsEndpoints ?? []).map((ep) => ep.port));
    for (const t of pods) {
      const metricsPorts = t.containers.flatMap((c) => (c.container.ports ?? []).map((p) => p.name))
        .filter((name) => name && name.startsWith("metrics"));
      if (metricsPorts.length === 0) add("monitoring", t.owner, "selected by a PodMonitor but declares no metrics port");
      for (const name of metricsPorts) {
        if (!scraped.has(name)) add("monitoring", describe(pm), `does not scrape port ${name} of ${t.owner}`);
      }
    }
  }
  const dashboards = objects.filter((o) => o.kind === "ConfigMap" && o.metadata.labels?.grafana_dashboard === "1");
  if (dashboards.length === 0 && options.requireMonitoring) add("monitoring", "(all)", "no ConfigMap labelled grafana_dashboard: \"1\"");
  for (const cm of dashboards) {
    for (const [key, value] of Object.entries(cm.data ?? {})) {
      try {
        const dashboard = JSON.parse(value);
        if (!Array.isArray(dashboard.panels) || !dashboard.title) throw new Error("no title or panels");
      } catch (error) {
        add("monitoring", describe(cm), `${key} is not a Grafana dashboard: ${error.message}`);
      }
    }
  }
}
