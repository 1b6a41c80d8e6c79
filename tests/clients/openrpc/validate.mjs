#!/usr/bin/env node
// Validates OpenRPC documents the way OpenRPC tools will read them.
//
// Usage: node validate.mjs FILE_OR_URL...
//   FILE_OR_URL: a path to a JSON file (e.g. openrpc.json), or an http(s) URL of
//   a running server, on which `rpc.discover` is called with a plain POST.
//
// For each document, in order:
//   1. every `$ref` is local ("#/..."): the check must pass offline;
//   2. the official `validateOpenRPCDocument` (@open-rpc/schema-utils-js 2.2.1);
//   3. the official `dereferenceDocument`, and no `$ref` left in a method's
//      params or result afterwards;
//   4. with ajv (draft-07, strict, standard formats only): every component
//      schema compiles; every method has a result and at least one example
//      (DESIGN.md); each example param value validates against that param's
//      schema and each example result value against the result schema, with
//      `#/components/schemas/...` resolved against the document's components;
//      the document itself validates against `rpc.discover`'s result schema;
//      every error's `data` (a JSON Schema, the document's
//      `x-error-data-schema`) compiles.
// Prints one line per valid document; exits 1 after printing every problem.

import { readFile } from "node:fs/promises";
import { validateOpenRPCDocument, dereferenceDocument } from "@open-rpc/schema-utils-js";
import Ajv from "ajv";
import addFormats from "ajv-formats";

const COMPONENTS_ID = "urn:rpcguard:openrpc-components";
const COMPONENT_SCHEMAS_PREFIX = "#/components/schemas/";

// --- small helpers ----------------------------------------------------------

/** JSON Pointer (RFC 6901) of a path given as a list of keys / indices. */
const pointer = (path) =>
  "/" + path.map((k) => String(k).replace(/~/g, "~0").replace(/\//g, "~1")).join("/");

/** Resolves a local "#/a/b" reference against the document, or undefined. */
function resolveLocal(doc, ref) {
  if (typeof ref !== "string" || !ref.startsWith("#")) return undefined;
  const fragment = decodeURIComponent(ref.slice(1));
  if (fragment === "") return doc;
  if (!fragment.startsWith("/")) return undefined;
  let node = doc;
  for (const raw of fragment.slice(1).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (node === null || typeof node !== "object" || !(key in node)) return undefined;
    node = node[key];
  }
  return node;
}

/** Follows a Reference Object ({"$ref": "#/components/..."}) if it is one. */
function deref(doc, item, path, problems) {
  if (item && typeof item === "object" && typeof item.$ref === "string") {
    const target = resolveLocal(doc, item.$ref);
    if (target === undefined) {
      problems.push(`${pointer([...path, "$ref"])}: cannot resolve ${JSON.stringify(item.$ref)}`);
    }
    return target;
  }
  return item;
}

/** Every `$ref` in a JSON value, with its path. */
function* refsIn(value, path = []) {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) yield* refsIn(value[i], [...path, i]);
  } else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (k === "$ref" && typeof v === "string") yield { path: [...path, k], ref: v };
      else yield* refsIn(v, [...path, k]);
    }
  }
}

/** True if a (possibly circular, dereferenced) object still holds a `$ref`. */
function hasRef(value, seen = new WeakSet()) {
  if (value === null || typeof value !== "object" || seen.has(value)) return false;
  seen.add(value);
  if (!Array.isArray(value) && typeof value.$ref === "string") return true;
  return Object.values(value).some((v) => hasRef(v, seen));
}

/** Copies a schema with "#/components/schemas/X" turned into a ref into COMPONENTS_ID. */
function rewriteRefs(schema, path, problems) {
  if (Array.isArray(schema)) return schema.map((s, i) => rewriteRefs(s, [...path, i], problems));
  if (schema === null || typeof schema !== "object") return schema;
  const out = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k === "$ref" && typeof v === "string") {
      if (v.startsWith(COMPONENT_SCHEMAS_PREFIX)) {
        out[k] = `${COMPONENTS_ID}#/definitions/${v.slice(COMPONENT_SCHEMAS_PREFIX.length)}`;
      } else {
        problems.push(
          `${pointer([...path, k])}: schema $ref ${JSON.stringify(v)} does not point into #/components/schemas/`,
        );
        out[k] = v;
      }
    } else {
      out[k] = rewriteRefs(v, [...path, k], problems);
    }
  }
  return out;
}

const formatAjvErrors = (errors) =>
  (errors || [])
    .map((e) => {
      const params = e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : "";
      return `value${e.instancePath || ""} ${e.message}${params} (schema ${e.schemaPath})`;
    })
    .join("; ");

// --- loading ----------------------------------------------------------------

async function load(source) {
  if (/^https?:\/\//i.test(source)) {
    const response = await fetch(source, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "rpc.discover" }),
    });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`rpc.discover: HTTP ${response.status}: ${text.slice(0, 500)}`);
    let answer;
    try {
      answer = JSON.parse(text);
    } catch (e) {
      throw new Error(`rpc.discover: the body is not JSON (${e.message}): ${text.slice(0, 500)}`);
    }
    if (answer.error !== undefined) throw new Error(`rpc.discover answered an error: ${JSON.stringify(answer.error)}`);
    if (answer.jsonrpc !== "2.0" || answer.id !== 1 || !("result" in answer)) {
      throw new Error(`rpc.discover: not a JSON-RPC 2.0 response to id 1: ${text.slice(0, 500)}`);
    }
    return answer.result;
  }
  const text = await readFile(source, "utf8");
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${source} is not JSON: ${e.message}`);
  }
}

// --- the checks -------------------------------------------------------------

/** The ajv checks of step 4. Returns the number of examples checked. */
function checkExamples(doc, problems) {
  const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, logger: false });
  addFormats(ajv);

  const componentSchemas = doc.components?.schemas ?? {};
  const definitions = {};
  for (const [name, schema] of Object.entries(componentSchemas)) {
    definitions[name] = rewriteRefs(schema, ["components", "schemas", name], problems);
  }
  try {
    ajv.addSchema({ $id: COMPONENTS_ID, definitions });
  } catch (e) {
    problems.push(`/components/schemas: ajv refuses the component schemas: ${e.message}`);
    return 0;
  }
  // Compile every component, referenced or not: an unknown `format` or keyword
  // anywhere is an error for strict validators.
  for (const name of Object.keys(componentSchemas)) {
    try {
      ajv.getSchema(`${COMPONENTS_ID}#/definitions/${name.replace(/~/g, "~0").replace(/\//g, "~1")}`);
    } catch (e) {
      problems.push(`${pointer(["components", "schemas", name])}: ajv cannot compile the schema: ${e.message}`);
    }
  }

  const compile = (schema, path) => {
    if (schema === undefined) {
      problems.push(`${pointer(path)}: no schema`);
      return null;
    }
    try {
      return ajv.compile(typeof schema === "boolean" ? schema : rewriteRefs(schema, path, problems));
    } catch (e) {
      problems.push(`${pointer(path)}: ajv cannot compile the schema: ${e.message}`);
      return null;
    }
  };

  let checked = 0;
  (doc.methods ?? []).forEach((methodOrRef, m) => {
    const method = deref(doc, methodOrRef, ["methods", m], problems);
    if (!method) return;
    const where = `method ${JSON.stringify(method.name)}`;

    const params = new Map();
    (method.params ?? []).forEach((p, i) => {
      const path = ["methods", m, "params", i];
      const param = deref(doc, p, path, problems);
      if (!param) return;
      params.set(param.name, { param, validate: compile(param.schema, [...path, "schema"]) });
    });

    const resultCd = deref(doc, method.result, ["methods", m, "result"], problems);
    if (method.result === undefined) problems.push(`${pointer(["methods", m])} (${where}): no result`);
    const validateResult = resultCd ? compile(resultCd.schema, ["methods", m, "result", "schema"]) : null;

    (method.errors ?? []).forEach((e, i) => {
      const path = ["methods", m, "errors", i];
      const error = deref(doc, e, path, problems);
      if (error?.data !== undefined) compile(error.data, [...path, "data"]);
    });

    if (method.name === "rpc.discover" && validateResult) {
      if (!validateResult(doc)) {
        problems.push(
          `/ (the document itself) does not match rpc.discover's result schema: ${formatAjvErrors(validateResult.errors)}`,
        );
      }
    }

    const examples = method.examples ?? [];
    if (examples.length === 0) {
      problems.push(`${pointer(["methods", m, "examples"])} (${where}): no example (DESIGN.md: every method has at least one)`);
    }
    examples.forEach((e, x) => {
      const examplePath = ["methods", m, "examples", x];
      const example = deref(doc, e, examplePath, problems);
      if (!example) return;
      const label = `${where} example ${JSON.stringify(example.name ?? x)}`;
      const seen = new Set();
      (example.params ?? []).forEach((ep, i) => {
        const path = [...examplePath, "params", i];
        const exampleParam = deref(doc, ep, path, problems);
        if (!exampleParam) return;
        seen.add(exampleParam.name);
        const entry = params.get(exampleParam.name);
        if (!entry) {
          problems.push(`${pointer(path)} (${label}): no param named ${JSON.stringify(exampleParam.name)}`);
          return;
        }
        if (!("value" in exampleParam)) {
          problems.push(`${pointer(path)} (${label}): no "value" to check`);
          return;
        }
        if (entry.validate && !entry.validate(exampleParam.value)) {
          problems.push(
            `${pointer([...path, "value"])} (${label}, param ${JSON.stringify(exampleParam.name)}): ${formatAjvErrors(entry.validate.errors)}`,
          );
        }
      });
      for (const [name, { param }] of params) {
        if (param.required && !seen.has(name)) {
          problems.push(`${pointer([...examplePath, "params"])} (${label}): required param ${JSON.stringify(name)} missing`);
        }
      }
      const resultPath = [...examplePath, "result"];
      const exampleResult = deref(doc, example.result, resultPath, problems);
      if (example.result === undefined) {
        problems.push(`${pointer(examplePath)} (${label}): no result`);
      } else if (exampleResult && !("value" in exampleResult)) {
        problems.push(`${pointer(resultPath)} (${label}): no "value" to check`);
      } else if (exampleResult && validateResult && !validateResult(exampleResult.value)) {
        problems.push(`${pointer([...resultPath, "value"])} (${label}, result): ${formatAjvErrors(validateResult.errors)}`);
      }
      checked++;
    });
  });
  return checked;
}

async function check(source) {
  const problems = [];
  let doc;
  try {
    doc = await load(source);
  } catch (e) {
    const cause = e.cause?.message ? ` (${e.cause.message})` : "";
    return { problems: [`cannot load: ${e.message}${cause}`] };
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
    return { problems: ["the document is not a JSON object"] };
  }

  // 1. offline: nothing may point outside the document.
  for (const { path, ref } of refsIn(doc)) {
    if (!ref.startsWith("#")) problems.push(`${pointer(path)}: non-local $ref ${JSON.stringify(ref)} (must pass offline)`);
  }
  if (problems.length) return { problems };

  // 2. the official validator (it mutates nothing, but be safe).
  try {
    const valid = validateOpenRPCDocument(structuredClone(doc));
    if (valid !== true) problems.push(`validateOpenRPCDocument: ${valid.message.replace(/\n/g, "\n      ")}`);
  } catch (e) {
    problems.push(`validateOpenRPCDocument threw: ${e.message}`);
  }

  // 3. the official dereferencer (it mutates its input: give it a copy).
  try {
    const dereffed = await dereferenceDocument(structuredClone(doc));
    (dereffed.methods ?? []).forEach((method, m) => {
      (method.params ?? []).forEach((p, i) => {
        if (hasRef(p)) problems.push(`${pointer(["methods", m, "params", i])}: a $ref is left after dereferenceDocument`);
      });
      if (hasRef(method.result)) problems.push(`${pointer(["methods", m, "result"])}: a $ref is left after dereferenceDocument`);
    });
  } catch (e) {
    problems.push(`dereferenceDocument: ${e.message}`);
  }

  // 4. examples against schemas.
  const examples = checkExamples(doc, problems);
  return { problems, doc, examples };
}

const sources = process.argv.slice(2);
if (sources.length === 0) {
  console.error("usage: node validate.mjs FILE_OR_URL...");
  process.exit(2);
}
let failed = false;
for (const source of sources) {
  const { problems, doc, examples } = await check(source);
  if (problems.length) {
    failed = true;
    console.error(`FAIL ${source}: ${problems.length} problem(s)`);
    for (const p of problems) console.error(`  - ${p}`);
  } else {
    console.log(
      `OK ${source}: OpenRPC ${doc.openrpc} ${JSON.stringify(doc.info?.title)} ${doc.info?.version}, ` +
        `${doc.methods.length} methods, ${examples} examples valid ` +
        `(validateOpenRPCDocument, dereferenceDocument, ajv examples)`,
    );
  }
}
process.exit(failed ? 1 : 0);
