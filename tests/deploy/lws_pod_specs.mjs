#!/usr/bin/env node
// Turns a rendered LeaderWorkerSet into the processes one of its groups (one
// replica) would run: for each pod, the container's command and arguments and
// its environment exactly as the LeaderWorkerSet controller and the kubelet
// would compute them, so that tests/deploy/lws_replica_test.sh can start the
// pods as local processes.
//
// What is filled in, as a cluster would:
//   - the LeaderWorkerSet webhook: pod names (<set>-<group>, <set>-<group>-<i>),
//     host name and subdomain, the labels and the size annotation, and the env
//     LWS_LEADER_ADDRESS=<set>-<group>.<subdomain>.<namespace>, LWS_GROUP_SIZE,
//     LWS_WORKER_INDEX, put first in the env of every container (they replace
//     template entries of the same name);
//   - the kubelet: envFrom (ConfigMaps of the rendered output, with prefix),
//     env values with $(VAR) expansion, valueFrom (configMapKeyRef, fieldRef
//     of the downward API, resourceFieldRef), the "kubernetes" Service's
//     variables, then $(VAR) expansion of command and args; a hosts file with
//     the pod's own FQDN;
//   - the container runtime: HOSTNAME, and PATH/HOME of the image.
// What is not a cluster's (each one is written to deviations.txt):
//   - PATH starts with --local-bin (the build's binaries instead of the image's);
//   - a hostPath or PVC volume is a local folder (--host-path, --pvc), so a
//     path under its mountPath in an env value or argument is rewritten to that
//     folder; an emptyDir is a tmpfs mounted at its mountPath, unless that
//     would hide a path the pod needs (--keep-visible: the binaries, the model,
//     this run's files) or the mountPath does not exist here: then it is a
//     local folder, with the same rewrite;
//   - cluster DNS is a hosts file that lists every pod of the group under the
//     names the headless Service and the search path resolve.
//
// Usage:
//   lws_pod_specs.mjs --node-dir DIR --manifest FILE --out DIR --first-pod-ip IP
//     [--lws NAME] [--group N] [--host-path NODE_PATH=DIR]... [--pvc CLAIM=DIR]...
//     [--local-bin DIR] [--keep-visible PATH]... [--cluster-domain D] [--node-name N]
//     [--host-ip IP]
//
// Writes, for pod i of the group (0 = leader), OUT/pod<i>/:
//   argv      command and args, NUL-separated
//   env       NAME=VALUE entries, NUL-separated
//   hosts     the pod's /etc/hosts
//   sandbox   lines for lws_pod_sandbox.sh: hostname NAME, user UID, group GID,
//             groups G,G, no-new-privs, drop-capabilities, tmpfs PATH BYTES (0: no limit)
//   ready     "PORT SERVICE" of the readiness probe (gRPC probes only); absent
//             when the pod has none
// and OUT/pods.tsv (index, pod name, IP, role, termination grace seconds),
// OUT/deviations.txt, OUT/replica.json (all of the above, for people).
// Exit status: 0, 1 on a manifest this cannot emulate (the message says
// which field), 2 on usage errors.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const kLwsApiVersion = "leaderworkerset.x-k8s.io/v1";
const kImagePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
// The image's user (deploy/docker: useradd --home-dir /home/strata).
const kImageHome = "/home/strata";
// kind's default Service CIDR puts the API server's Service here.
const kKubernetesServiceIp = "10.96.0.1";

class EmulationError extends Error {}

function fail(message) {
  throw new EmulationError(message);
}

// --- Kubernetes $(VAR) expansion (k8s.io/kubernetes third_party/forked/golang/expansion).
// $(NAME) becomes NAME's value when NAME is defined, else stays as written;
// $$ becomes $; any other $ is kept.
function expand(input, lookup) {
  let out = "";
  let cursor = 0;
  while (cursor < input.length) {
    if (input[cursor] === "$" && cursor + 1 < input.length) {
      const rest = input.slice(cursor + 1);
      if (rest[0] === "$") {
        out += "$";
        cursor += 2;
      } else if (rest[0] === "(") {
        const close = rest.indexOf(")", 1);
        if (close < 0) {
          out += "$(";
          cursor += 2;
        } else {
          const name = rest.slice(1, close);
          const value = lookup(name);
          out += value === undefined ? `$(${name})` : value;
          cursor += close + 2;
        }
      } else {
        out += "$" + rest[0];
        cursor += 2;
      }
    } else {
      out += input[cursor];
      cursor += 1;
    }
  }
  return out;
}

// --- Quantities, for resourceFieldRef.
const kSuffixes = {
  "": 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12,
  Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4,
};

function parseQuantity(text, field) {
  const match = /^([0-9.]+)([a-zA-Z]*)$/.exec(String(text));
  if (!match || !(match[2] in kSuffixes)) fail(`${field}: cannot parse quantity "${text}"`);
  return Number(match[1]) * kSuffixes[match[2]];
}

function parseArgs(argv) {
  const options = { hostPaths: {}, pvcs: {}, keepVisible: [], group: 0, clusterDomain: "cluster.local",
    nodeName: "local-node", hostIp: "" };
  const mapping = (value, flag) => {
    const eq = value.indexOf("=");
    if (eq <= 0) usage(`${flag} takes NAME=DIR, got "${value}"`);
    return [value.slice(0, eq), path.resolve(value.slice(eq + 1))];
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) usage(`${flag} needs a value`);
    i++;
    switch (flag) {
      case "--node-dir": options.nodeDir = value; break;
      case "--manifest": options.manifest = value; break;
      case "--out": options.out = value; break;
      case "--first-pod-ip": options.firstPodIp = value; break;
      case "--lws": options.lws = value; break;
      case "--group": options.group = Number(value); break;
      case "--host-path": { const [k, v] = mapping(value, flag); options.hostPaths[k] = v; break; }
      case "--pvc": { const [k, v] = mapping(value, flag); options.pvcs[k] = v; break; }
      case "--local-bin": options.localBin = path.resolve(value); break;
      case "--keep-visible": options.keepVisible.push(path.resolve(value)); break;
      case "--cluster-domain": options.clusterDomain = value; break;
      case "--node-name": options.nodeName = value; break;
      case "--host-ip": options.hostIp = value; break;
      default: usage(`unknown option ${flag}`);
    }
  }
  for (const required of ["nodeDir", "manifest", "out", "firstPodIp"]) {
    if (!options[required]) usage(`--${required.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase())} is required`);
  }
  if (!Number.isInteger(options.group) || options.group < 0) usage("--group must be >= 0");
  return options;
}

function usage(message) {
  console.error(`lws_pod_specs: ${message}`);
  console.error("usage: lws_pod_specs.mjs --node-dir DIR --manifest FILE --out DIR --first-pod-ip IP " +
    "[--lws NAME] [--group N] [--host-path NODE_PATH=DIR]... [--pvc CLAIM=DIR]... [--local-bin DIR]");
  process.exit(2);
}

function loadObjects(nodeDir, manifest) {
  const requireModule = createRequire(path.join(path.resolve(nodeDir), "package.json"));
  const YAML = requireModule("yaml");
  const objects = [];
  for (const doc of YAML.parseAllDocuments(fs.readFileSync(manifest, "utf8"))) {
    if (doc.errors.length > 0) fail(`${manifest}: ${doc.errors[0].message}`);
    const value = doc.toJS();
    if (value) objects.push(value);
  }
  return objects;
}

// The pods of group `group`, as the LeaderWorkerSet controller and webhook make them.
function groupPods(lws, group) {
  const name = lws.metadata.name;
  const namespace = lws.metadata.namespace ?? "default";
  const template = lws.spec.leaderWorkerTemplate;
  const size = template.size ?? 1;
  const subdomainPolicy = lws.spec.networkConfig?.subdomainPolicy ?? "Shared";
  const subdomain = subdomainPolicy === "UniquePerReplica" ? `${name}-${group}` : name;
  const pods = [];
  for (let index = 0; index < size; index++) {
    const podTemplate = index === 0 && template.leaderTemplate ? template.leaderTemplate
      : template.workerTemplate;
    const podName = index === 0 ? `${name}-${group}` : `${name}-${group}-${index}`;
    const labels = {
      ...(podTemplate.metadata?.labels ?? {}),
      "leaderworkerset.sigs.k8s.io/name": name,
      "leaderworkerset.sigs.k8s.io/group-index": String(group),
      "leaderworkerset.sigs.k8s.io/worker-index": String(index),
    };
    const annotations = {
      ...(podTemplate.metadata?.annotations ?? {}),
      "leaderworkerset.sigs.k8s.io/size": String(size),
    };
    if (index > 0) annotations["leaderworkerset.sigs.k8s.io/leader-name"] = `${name}-${group}`;
    pods.push({
      index, name: podName, namespace, hostname: podName, subdomain, labels, annotations,
      spec: podTemplate.spec,
      lwsEnv: [
        { name: "LWS_LEADER_ADDRESS", value: `${name}-${group}.${subdomain}.${namespace}` },
        { name: "LWS_GROUP_SIZE", value: String(size) },
        { name: "LWS_WORKER_INDEX", value: String(index) },
      ],
    });
  }
  return pods;
}

function findConfigMap(objects, namespace, name, field) {
  const found = objects.find((o) => o.kind === "ConfigMap" && o.metadata?.name === name &&
    (o.metadata?.namespace ?? "default") === namespace);
  if (!found) fail(`${field}: ConfigMap ${namespace}/${name} is not in the rendered output`);
  return found;
}

const kEnvName = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

function fieldRefValue(pod, fieldPath, ip, options, field) {
  const labelOrAnnotation = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (labelOrAnnotation) {
    const map = labelOrAnnotation[1] === "labels" ? pod.labels : pod.annotations;
    const key = labelOrAnnotation[2];
    if (!(key in map) && key.startsWith("leaderworkerset.sigs.k8s.io/")) {
      fail(`${field}: ${fieldPath} is set by the LeaderWorkerSet controller and not emulated here`);
    }
    return map[key] ?? "";
  }
  switch (fieldPath) {
    case "metadata.name": return pod.name;
    case "metadata.namespace": return pod.namespace;
    case "spec.nodeName": return options.nodeName;
    case "spec.serviceAccountName": return pod.spec.serviceAccountName ?? "default";
    case "status.podIP": case "status.podIPs": return ip;
    case "status.hostIP": case "status.hostIPs": return options.hostIp || ip;
    default: fail(`${field}: fieldRef ${fieldPath} is not emulated`);
  }
}

function resourceFieldValue(container, ref, field) {
  const [kind, resource] = ref.resource.split(".");
  const value = container.resources?.[kind]?.[resource];
  if (value === undefined) {
    // A cluster substitutes the node's allocatable capacity, unknown here.
    fail(`${field}: ${ref.resource} is not set on container ${container.name}; ` +
      "the node's capacity a cluster would use is not emulated");
  }
  const divisor = parseQuantity(ref.divisor ?? "1", `${field}.divisor`);
  return String(Math.ceil(parseQuantity(value, field) / divisor));
}

// The container's environment as the kubelet computes it (makeEnvironmentVariables).
function containerEnv(objects, pod, container, ip, options) {
  const where = `pod ${pod.name} container ${container.name}`;
  const env = new Map();
  for (const [i, source] of (container.envFrom ?? []).entries()) {
    const field = `${where} envFrom[${i}]`;
    if (source.secretRef) fail(`${field}: Secrets are not in the rendered output`);
    if (!source.configMapRef) fail(`${field}: only configMapRef is emulated`);
    const configMap = source.configMapRef.optional
      ? objects.find((o) => o.kind === "ConfigMap" && o.metadata?.name === source.configMapRef.name)
      : findConfigMap(objects, pod.namespace, source.configMapRef.name, field);
    for (const [key, value] of Object.entries(configMap?.data ?? {})) {
      const name = (source.prefix ?? "") + key;
      if (kEnvName.test(name)) env.set(name, String(value));
    }
  }
  // The LeaderWorkerSet webhook puts its variables first and drops template
  // entries of the same names.
  const lwsNames = new Set(pod.lwsEnv.map((e) => e.name));
  const entries = [...pod.lwsEnv, ...(container.env ?? []).filter((e) => !lwsNames.has(e.name))];
  const serviceEnv = new Map([
    ["KUBERNETES_SERVICE_HOST", kKubernetesServiceIp],
    ["KUBERNETES_SERVICE_PORT", "443"],
    ["KUBERNETES_SERVICE_PORT_HTTPS", "443"],
    ["KUBERNETES_PORT", `tcp://${kKubernetesServiceIp}:443`],
    ["KUBERNETES_PORT_443_TCP", `tcp://${kKubernetesServiceIp}:443`],
    ["KUBERNETES_PORT_443_TCP_PROTO", "tcp"],
    ["KUBERNETES_PORT_443_TCP_PORT", "443"],
    ["KUBERNETES_PORT_443_TCP_ADDR", kKubernetesServiceIp],
  ]);
  const lookup = (name) => env.get(name) ?? serviceEnv.get(name);
  for (const entry of entries) {
    const field = `${where} env ${entry.name}`;
    let value = "";
    if (entry.value !== undefined && entry.value !== "") {
      value = expand(String(entry.value), lookup);
    } else if (entry.valueFrom) {
      const from = entry.valueFrom;
      if (from.fieldRef) {
        value = fieldRefValue(pod, from.fieldRef.fieldPath, ip, options, field);
      } else if (from.resourceFieldRef) {
        value = resourceFieldValue(container, from.resourceFieldRef, field);
      } else if (from.configMapKeyRef) {
        const ref = from.configMapKeyRef;
        const configMap = findConfigMap(objects, pod.namespace, ref.name, field);
        if (!(ref.key in (configMap.data ?? {})) && !ref.optional) {
          fail(`${field}: ConfigMap ${ref.name} has no key ${ref.key}`);
        }
        value = String(configMap.data?.[ref.key] ?? "");
      } else {
        fail(`${field}: only fieldRef, resourceFieldRef and configMapKeyRef are emulated`);
      }
    }
    env.set(entry.name, value);
  }
  for (const [name, value] of serviceEnv) if (!env.has(name)) env.set(name, value);
  return env;
}

// Where each of the container's volumes is here: [{mountPath, local, kind, ...}].
function volumePlan(pod, container, options, scratch, deviations) {
  const where = `pod ${pod.name} container ${container.name}`;
  const volumes = new Map((pod.spec.volumes ?? []).map((v) => [v.name, v]));
  const plan = [];
  for (const mount of container.volumeMounts ?? []) {
    const volume = volumes.get(mount.name);
    if (!volume) fail(`${where}: volumeMount ${mount.name} has no volume`);
    const sub = mount.subPath ? `/${mount.subPath}` : "";
    if (volume.hostPath) {
      const local = options.hostPaths[volume.hostPath.path];
      if (!local) fail(`${where}: volume ${mount.name} is hostPath ${volume.hostPath.path}; give --host-path ${volume.hostPath.path}=DIR`);
      plan.push({ mountPath: mount.mountPath, local: local + sub,
        why: `volume ${mount.name}: hostPath ${volume.hostPath.path} mounted at ${mount.mountPath}` });
    } else if (volume.persistentVolumeClaim) {
      const claim = volume.persistentVolumeClaim.claimName;
      const local = options.pvcs[claim];
      if (!local) fail(`${where}: volume ${mount.name} is PVC ${claim}; give --pvc ${claim}=DIR`);
      plan.push({ mountPath: mount.mountPath, local: local + sub,
        why: `volume ${mount.name}: PVC ${claim} mounted at ${mount.mountPath}` });
    } else if (volume.emptyDir) {
      const size = volume.emptyDir.sizeLimit ?? "";
      const exists = fs.existsSync(mount.mountPath) && fs.statSync(mount.mountPath).isDirectory();
      const hidden = options.keepVisible.find((p) => p === mount.mountPath ||
        p.startsWith(mount.mountPath.endsWith("/") ? mount.mountPath : mount.mountPath + "/"));
      if (exists && !hidden) {
        plan.push({ mountPath: mount.mountPath, tmpfs: size });
      } else {
        const local = path.join(scratch, `emptydir-${mount.name}`);
        fs.mkdirSync(local, { recursive: true, mode: 0o777 });
        fs.chmodSync(local, 0o777);
        plan.push({ mountPath: mount.mountPath, local: local + sub,
          why: `volume ${mount.name}: emptyDir mounted at ${mount.mountPath}, ` +
            (exists ? `a tmpfs there would hide ${hidden}` : "which does not exist here") });
        deviations.push(`${pod.name} volume ${mount.name}: emptyDir at ${mount.mountPath} is ` +
          `${local} (${exists ? `a tmpfs there would hide ${hidden}` : `${mount.mountPath} does not exist here`})`);
      }
    } else {
      fail(`${where}: volume ${mount.name} is of a kind not emulated (${Object.keys(volume).join(", ")})`);
    }
  }
  return plan;
}

// Replaces each mapped mountPath where it starts a path: at the start of the
// text or after "=", ":" or ",", and followed by the end or "/". One pass, so
// a replacement is never rewritten again by another mount's mapping.
function mapPaths(text, plan, describe, deviations) {
  const mapped = plan.filter((entry) => entry.local)
    .sort((a, b) => b.mountPath.length - a.mountPath.length);
  if (mapped.length === 0) return text;
  const escape = (p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = new RegExp(`(^|[=:,])(${mapped.map((e) => escape(e.mountPath)).join("|")})(?=$|/)`, "g");
  const reasons = new Set();
  const result = text.replace(pattern, (_, before, mountPath) => {
    const entry = mapped.find((e) => e.mountPath === mountPath);
    reasons.add(entry.why);
    return before + entry.local;
  });
  if (result !== text) {
    deviations.push(`${describe}: "${text}" -> "${result}" (${[...reasons].join("; ")})`);
  }
  return result;
}

function hostsFile(pods, ips, self, options) {
  const fqdn = (p) => `${p.hostname}.${p.subdomain}.${p.namespace}.svc.${options.clusterDomain}`;
  const lines = [
    "# Kubernetes-managed hosts file.",
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    `${ips[self.index]}\t${fqdn(self)}\t${self.hostname}`,
    "# Cluster DNS stand-in: the headless Service's records for every pod of the group,",
    "# under the names the pod's DNS search path (<ns>.svc.<domain>, svc.<domain>) resolves.",
  ];
  for (const p of pods) {
    lines.push(`${ips[p.index]}\t${fqdn(p)} ${p.hostname}.${p.subdomain}.${p.namespace} ` +
      `${p.hostname}.${p.subdomain}`);
  }
  return lines.join("\n") + "\n";
}

// `count` consecutive IPv4 addresses from `first` (pod i gets first + i).
function podAddresses(first, count) {
  const octets = first.split(".").map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) {
    usage(`--first-pod-ip ${first} is not an IPv4 address`);
  }
  if (octets[3] + count - 1 > 254) fail(`--first-pod-ip ${first}: ${count} pods run past .254`);
  return Array.from({ length: count }, (_, i) => [...octets.slice(0, 3), octets[3] + i].join("."));
}

function writeNulList(file, items) {
  for (const item of items) {
    if (item.includes("\0")) fail(`${file}: a value contains a NUL byte`);
  }
  fs.writeFileSync(file, items.map((item) => item + "\0").join(""));
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  const objects = loadObjects(options.nodeDir, options.manifest);
  const sets = objects.filter((o) => o.kind === "LeaderWorkerSet" && o.apiVersion === kLwsApiVersion &&
    (!options.lws || o.metadata?.name === options.lws));
  if (sets.length !== 1) {
    fail(`${options.manifest}: expected one LeaderWorkerSet${options.lws ? ` named ${options.lws}` : ""}, found ${sets.length}`);
  }
  const lws = sets[0];
  if (options.group >= (lws.spec.replicas ?? 1)) {
    fail(`--group ${options.group}: the LeaderWorkerSet has ${lws.spec.replicas ?? 1} replicas`);
  }
  const pods = groupPods(lws, options.group);
  options.podIps = podAddresses(options.firstPodIp, pods.length);
  fs.rmSync(options.out, { recursive: true, force: true });
  fs.mkdirSync(options.out, { recursive: true });
  const deviations = [];
  const summary = [];
  const table = [];
  for (const pod of pods) {
    const ip = options.podIps[pod.index];
    const containers = pod.spec.containers ?? [];
    if (containers.length !== 1) {
      fail(`pod ${pod.name}: ${containers.length} containers; one is emulated`);
    }
    if ((pod.spec.initContainers ?? []).length > 0) fail(`pod ${pod.name}: init containers are not emulated`);
    const container = containers[0];
    const dir = path.join(options.out, `pod${pod.index}`);
    fs.mkdirSync(dir);
    const plan = volumePlan(pod, container, options, dir, deviations);

    const env = containerEnv(objects, pod, container, ip, options);
    const argv = [...(container.command ?? []), ...(container.args ?? [])]
      .map((item) => expand(String(item), (name) => env.get(name)));
    if ((container.command ?? []).length === 0) fail(`pod ${pod.name}: no command (the image's entry point is not emulated)`);
    // Runtime-level variables; the container's own win.
    const processEnv = new Map([
      ["PATH", options.localBin ? `${options.localBin}:${kImagePath}` : kImagePath],
      ["HOSTNAME", pod.hostname],
      ["HOME", kImageHome],
      ...env,
    ]);
    if (options.localBin && !env.has("PATH")) {
      deviations.push(`${pod.name} env PATH: ${options.localBin} comes before the image's ${kImagePath} (the build's binaries)`);
    }
    // Only the manifest's values refer to the pod's mounts; PATH, HOSTNAME
    // and HOME above are this run's own.
    const finalEnv = [...processEnv].map(([name, value]) => `${name}=${env.has(name)
      ? mapPaths(value, plan, `${pod.name} env ${name}`, deviations) : value}`);
    const finalArgv = argv.map((arg, i) => mapPaths(arg, plan, `${pod.name} argv[${i}]`, deviations));
    writeNulList(path.join(dir, "argv"), finalArgv);
    writeNulList(path.join(dir, "env"), finalEnv);
    fs.writeFileSync(path.join(dir, "hosts"), hostsFile(pods, options.podIps, pod, options));

    const podSecurity = pod.spec.securityContext ?? {};
    const security = { ...podSecurity, ...(container.securityContext ?? {}) };
    const sandbox = [`hostname ${pod.hostname}`];
    if (security.runAsUser !== undefined) sandbox.push(`user ${security.runAsUser}`);
    if (security.runAsGroup !== undefined) sandbox.push(`group ${security.runAsGroup}`);
    const groups = [podSecurity.fsGroup, ...(podSecurity.supplementalGroups ?? [])]
      .filter((g) => g !== undefined);
    if (groups.length > 0) sandbox.push(`groups ${groups.join(",")}`);
    if (security.allowPrivilegeEscalation === false) sandbox.push("no-new-privs");
    const drop = security.capabilities?.drop ?? [];
    if (drop.includes("ALL") && (security.capabilities?.add ?? []).length === 0) {
      sandbox.push("drop-capabilities");
    }
    for (const entry of plan) {
      if (entry.tmpfs === undefined) continue;
      const bytes = entry.tmpfs === "" ? 0 : parseQuantity(entry.tmpfs, `pod ${pod.name} emptyDir sizeLimit`);
      // 0: tmpfs's default size (half of the memory), like an emptyDir without a limit.
      sandbox.push(`tmpfs ${entry.mountPath} ${Math.ceil(bytes)}`);
    }
    fs.writeFileSync(path.join(dir, "sandbox"), sandbox.join("\n") + "\n");

    const probe = container.readinessProbe;
    let ready = null;
    if (probe) {
      if (!probe.grpc) fail(`pod ${pod.name}: readinessProbe is not gRPC; only gRPC probes are emulated`);
      ready = { port: probe.grpc.port, service: probe.grpc.service ?? "" };
      fs.writeFileSync(path.join(dir, "ready"), `${ready.port} ${ready.service}\n`);
    }
    const grace = pod.spec.terminationGracePeriodSeconds ?? 30;
    table.push([pod.index, pod.name, ip, pod.index === 0 ? "leader" : "worker", grace].join("\t"));
    summary.push({ index: pod.index, name: pod.name, ip, hostname: pod.hostname,
      subdomain: pod.subdomain, argv: finalArgv, env: finalEnv, readiness: ready,
      sandbox, terminationGracePeriodSeconds: grace });
  }
  fs.writeFileSync(path.join(options.out, "pods.tsv"), table.join("\n") + "\n");
  fs.writeFileSync(path.join(options.out, "deviations.txt"),
    deviations.length > 0 ? deviations.join("\n") + "\n" : "");
  fs.writeFileSync(path.join(options.out, "replica.json"), JSON.stringify({
    leaderWorkerSet: lws.metadata.name, namespace: lws.metadata.namespace ?? "default",
    group: options.group, pods: summary, deviations }, null, 2) + "\n");
  console.log(`lws_pod_specs: ${pods.length} pods of ${lws.metadata.name} group ${options.group} -> ${options.out}`);
}

try {
  main();
} catch (error) {
  if (!(error instanceof EmulationError)) throw error;
  console.error(`lws_pod_specs: ${error.message}`);
  process.exit(1);
}
