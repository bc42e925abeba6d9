// Schema validation of rendered Kubernetes objects, offline.
//
// Core kinds (Deployment, Service, NetworkPolicy, ...): kubernetes-models'
// validate() (types, enums, required fields) plus StrictFieldChecker (unknown
// fields). Custom resources: the pinned subsets in tests/deploy/schemas with
// ajv; their embedded core types go through the same core validation.
//
// Findings are {rule: "schema", object: "Kind/name", message}.
import fs from "node:fs";
import path from "node:path";
import { StrictFieldChecker } from "./strict_fields.mjs";

export class SchemaValidator {
  // `requireModule`: a require() that resolves from the installed node_modules.
  // `nodeModules`: that folder. `schemaDir`: tests/deploy/schemas.
  constructor(requireModule, nodeModules, schemaDir) {
    this.require = requireModule;
    this.strict = new StrictFieldChecker(nodeModules);
    this.nodeModules = nodeModules;
    const Ajv = requireModule("ajv");
    this.ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
    const self = this;
    this.ajv.addKeyword({
      keyword: "x-strata-core-type",
      schemaType: "string",
      errors: true,
      validate: function validateCoreType(module, data) {
        const problems = self.#validateCore(data, module);
        validateCoreType.errors = problems.map((p) => ({
          keyword: "x-strata-core-type",
          message: p,
          params: { module },
        }));
        return problems.length === 0;
      },
    });
    this.crdValidators = new Map();
    for (const file of fs.readdirSync(schemaDir).filter((f) => f.endsWith(".json"))) {
      const schema = JSON.parse(fs.readFileSync(path.join(schemaDir, file), "utf8"));
      this.crdValidators.set(file.replace(/\.json$/, ""), this.ajv.compile(schema));
    }
  }

  // Returns the findings for one object.
  validate(object) {
    const id = describe(object);
    if (!object || typeof object !== "object" || !object.apiVersion || !object.kind) {
      return [{ rule: "schema", object: id, message: "not a Kubernetes object (apiVersion/kind missing)" }];
    }
    const [group, version] = object.apiVersion.includes("/")
      ? object.apiVersion.split("/")
      : ["", object.apiVersion];
    const crdKey = `${group}_${version}_${object.kind.toLowerCase()}`;
    if (this.crdValidators.has(crdKey)) {
      const validate = this.crdValidators.get(crdKey);
      if (validate(object)) return [];
      return validate.errors.map((e) => ({
        rule: "schema",
        object: id,
        message: `${e.instancePath || "/"}: ${e.message}${formatParams(e)}`,
      }));
    }
    const module = `kubernetes-models/${object.apiVersion}/${object.kind}`;
    if (!fs.existsSync(path.join(this.nodeModules, `${module}.js`))) {
      return [{
        rule: "schema",
        object: id,
        message: `no schema for ${object.apiVersion} ${object.kind}: not a core kind and not in tests/deploy/schemas`,
      }];
    }
    return this.#validateCore(object, module).map((message) => ({ rule: "schema", object: id, message }));
  }

  // Problems (strings) of `data` as the core type exported by `module`.
  #validateCore(data, module) {
    const exports = this.require(module);
    const typeName = path.basename(module);
    const Model = exports[typeName];
    const problems = [];
    try {
      new Model(data).validate();
    } catch (error) {
      if (!Array.isArray(error.errors)) throw error;
      for (const e of error.errors) problems.push(`${e.instancePath || "/"}: ${e.message}${formatParams(e)}`);
    }
    for (const unknown of this.strict.check(data, module, `I${typeName}`)) {
      problems.push(`${unknown.path}: unknown field "${unknown.field}" (not in ${typeName})`);
    }
    return problems;
  }
}

function formatParams(error) {
  if (error.keyword === "additionalProperties") return ` ("${error.params.additionalProperty}")`;
  if (error.keyword === "enum") return ` (${error.params.allowedValues.join(", ")})`;
  return "";
}

export function describe(object) {
  const name = object?.metadata?.name ?? "<unnamed>";
  return `${object?.kind ?? "<no kind>"}/${name}`;
}
