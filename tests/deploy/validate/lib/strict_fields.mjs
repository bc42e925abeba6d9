// Unknown-field detection for core Kubernetes kinds.
//
// kubernetes-models validates types, enums and required fields, but its
// schemas (like the API server's OpenAPI) allow fields they do not list, so a
// typo such as `terminationGracePeriodSecond` would pass and be dropped by the
// server. The package also ships TypeScript declarations that list every
// field of every type; this module reads them (import lines, interface bodies)
// and walks an object against them, reporting each field the API does not
// have — what `kubectl apply --validate=strict` reports against a live server.
import fs from "node:fs";
import path from "node:path";

// A type is {kind: "leaf"} | {kind: "object", file, name} | {kind: "array", of}
// | {kind: "map", of}.
const LEAF = { kind: "leaf" };

export class StrictFieldChecker {
  // `nodeModules`: the node_modules folder holding kubernetes-models.
  constructor(nodeModules) {
    this.nodeModules = nodeModules;
    this.files = new Map(); // .d.ts path -> parsed {imports, interfaces, aliases, typeAliases}
  }

  // Unknown-field findings for `object` as the type declared in `module`
  // (e.g. "kubernetes-models/apps/v1/Deployment") under interface name
  // `interfaceName` (e.g. "IDeployment"). Returns [{path, field}].
  check(object, module, interfaceName) {
    const file = path.join(this.nodeModules, `${module}.d.ts`);
    const findings = [];
    this.#walk(object, { kind: "object", file, name: interfaceName }, "", findings);
    return findings;
  }

  #walk(value, type, where, findings) {
    if (value === null || value === undefined || type.kind === "leaf") return;
    if (type.kind === "array") {
      if (Array.isArray(value)) value.forEach((v, i) => this.#walk(v, type.of, `${where}/${i}`, findings));
      return;
    }
    if (type.kind === "map") {
      if (typeof value === "object" && !Array.isArray(value)) {
        for (const [k, v] of Object.entries(value)) this.#walk(v, type.of, `${where}/${k}`, findings);
      }
      return;
    }
    if (typeof value !== "object" || Array.isArray(value)) return; // type errors are the schema's job
    const fields = this.#fields(type.file, type.name);
    if (fields === null) return; // a type alias (Quantity, IntOrString, Time, ...): a leaf
    for (const [key, child] of Object.entries(value)) {
      if (!fields.has(key)) {
        findings.push({ path: `${where}/${key}`, field: key });
        continue;
      }
      this.#walk(child, fields.get(key), `${where}/${key}`, findings);
    }
  }

  // Map field -> type for interface `name` in `file`, or null for a type alias.
  #fields(file, name) {
    const parsed = this.#parse(file);
    const local = parsed.aliases.get(name) ?? name;
    if (parsed.typeAliases.has(local)) return null;
    const body = parsed.interfaces.get(local);
    if (body === undefined) {
      throw new Error(`strict field check: no interface ${name} in ${file}`);
    }
    const fields = new Map();
    for (const declaration of splitTopLevel(body, ";")) {
      const match = declaration.trim().match(/^"([^"]+)"\??\s*:\s*([\s\S]+)$/);
      if (!match) continue;
      fields.set(match[1], this.#type(match[2].trim(), file, parsed));
    }
    return fields;
  }

  #type(text, file, parsed) {
    if (text.startsWith("Array<") && text.endsWith(">")) {
      return { kind: "array", of: this.#type(text.slice(6, -1).trim(), file, parsed) };
    }
    if (text.startsWith("{")) {
      const inner = text.match(/^\{\s*\[key: string\]\s*:\s*([\s\S]+?);?\s*\}$/);
      return inner ? { kind: "map", of: this.#type(inner[1].trim(), file, parsed) } : LEAF;
    }
    if (/^[A-Za-z_]\w*$/.test(text)) {
      const source = parsed.imports.get(text);
      if (source !== undefined) return { kind: "object", file: source, name: text };
      if (parsed.interfaces.has(text)) return { kind: "object", file, name: text };
    }
    return LEAF; // string, number, boolean, literal unions, any
  }

  #parse(file) {
    let parsed = this.files.get(file);
    if (parsed) return parsed;
    const text = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
    parsed = { imports: new Map(), interfaces: new Map(), aliases: new Map(), typeAliases: new Set() };
    for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
      const target = m[2].startsWith(".")
        ? path.resolve(path.dirname(file), `${m[2]}.d.ts`)
        : path.join(this.nodeModules, `${m[2]}.d.ts`);
      for (const name of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
        parsed.imports.set(name.split(/\s+as\s+/).pop(), target);
      }
    }
    for (const m of text.matchAll(/export\s*\{([^}]*)\}/g)) {
      for (const entry of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
        const [local, exported] = entry.split(/\s+as\s+/);
        if (exported) parsed.aliases.set(exported, local);
      }
    }
    for (const m of text.matchAll(/export\s+(?:declare\s+)?type\s+(\w+)/g)) parsed.typeAliases.add(m[1]);
    for (const m of text.matchAll(/export\s+interface\s+(\w+)[^{]*\{/g)) {
      parsed.interfaces.set(m[1], matchingBody(text, m.index + m[0].length));
    }
    this.files.set(file, parsed);
    return parsed;
  }
}

// The text from `start` up to the brace that closes the one opened just before it.
function matchingBody(text, start) {
  let depth = 1;
  for (let i = start; i < text.length; i++) {
    if (text[i] === "{") depth++;
    else if (text[i] === "}" && --depth === 0) return text.slice(start, i);
  }
  throw new Error("unbalanced braces in a .d.ts file");
}

function splitTopLevel(text, separator) {
  const parts = [];
  let depth = 0;
  let current = "";
  for (const ch of text) {
    if (ch === "{" || ch === "<" || ch === "(") depth++;
    if (ch === "}" || ch === ">" || ch === ")") depth--;
    if (ch === separator && depth === 0) {
      parts.push(current);
      current = "";
    } else {
      current += ch;
    }
  }
  if (current.trim() !== "") parts.push(current);
  return parts;
}
