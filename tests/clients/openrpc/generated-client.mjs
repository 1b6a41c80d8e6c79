#!/usr/bin/env node
// Generates the TypeScript client of a running rpcguard with the official
// @open-rpc/generator, compiles it, and drives the account flow with it.
//
// Usage: node generated-client.mjs http://HOST:PORT/ [WORKDIR]
//
//   1. `open-rpc-generator generate -t client -l typescript -d URL/openrpc.json`:
//      the generator fetches the live document with a GET, as a user would;
//   2. works around the generator's bugs (below), in the generated code only:
//      the document stays as it is;
//   3. writes `error-data.ts`: TypeScript types of the errors' `data`, made
//      from the document's `errors[].data` schemas with the transpiler the
//      generator itself uses (the generator types only params and results);
//   4. compiles the generated `index.ts` with `generated-flow.ts` (strict);
//   5. runs the flow (generated-flow.ts), which prints `GRANT <user> scope1`
//      and waits for a line on stdin once the scope is granted.
//
// Everything runs offline from this directory's node_modules (`npm ci`):
// nothing is installed into the generated package.
//
// WORKDIR (default: a new temporary directory) receives the generated
// package; it is left in place for inspection.

import { spawnSync } from "node:child_process";
import { copyFile, mkdtemp, readFile, symlink, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

if (process.argv.length < 3 || !/^https?:\/\//i.test(process.argv[2])) {
  console.error("usage: node generated-client.mjs http://HOST:PORT/ [WORKDIR]");
  process.exit(2);
}
const base = new URL(process.argv[2]);
const workdir = process.argv[3] ?? (await mkdtemp(join(tmpdir(), "rpcguard-generated-")));

function run(what, command, args, cwd) {
  const started = Date.now();
  const out = spawnSync(command, args, { cwd, encoding: "utf8" });
  if (out.status !== 0) {
    console.error(`FAILED: ${what} (exit ${out.status ?? out.signal})\n${out.stdout}\n${out.stderr}`);
    process.exit(1);
  }
  console.error(`${what}: ok in ${Date.now() - started} ms`);
}

// --- 1. generate from the live document ------------------------------------
const documentUrl = new URL("openrpc.json", base).toString();
const generator = join(dirname(require.resolve("@open-rpc/generator/package.json")), "build", "cli.js");
run(
  `open-rpc-generator generate -d ${documentUrl}`,
  process.execPath,
  [generator, "generate", "-t", "client", "-l", "typescript", "-n", "rpcguard-client", "-d", documentUrl, "-o", workdir],
  here,
);
const pkg = join(workdir, "client", "typescript");
const indexPath = join(pkg, "src", "index.ts");

// --- 2. the generator's bugs, worked around in its output ------------------
let index = await readFile(indexPath, "utf8");

// open-rpc/generator#619 (fix proposed in PR #728, not released in 1.22.3):
// the TypeScript template writes every method name as a class property, so
// `rpc.discover` (which the spec allows in `methods`, and rpcguard lists)
// becomes `public rpc.discover: RpcDiscover = …`, a syntax error. Rename
// dotted names the way PR #728 does (`rpc.discover` -> `rpcDiscover`); the
// property still calls `this.request("rpc.discover", …)`.
const camel = (name) =>
  name
    .split(/[._]/)
    .map((part, i) => (i === 0 || part === "" ? part : part[0].toUpperCase() + part.slice(1)))
    .join("");
index = index.replace(/^(\s*public )([A-Za-z_$][\w$]*(?:\.[\w$]+)+)(: )/gm, (_, pre, name, post) => pre + camel(name) + post);
if (!/public rpcDiscover: RpcDiscover/.test(index)) {
  console.error("FAILED: the generated client has no rpcDiscover property (template changed?)");
  process.exit(1);
}
await writeFile(indexPath, index);

// The template's toolchain is pinned to 2021 (its _package.json: typescript
// 4.2.4, typedoc 0.20, tslint 5, @open-rpc/client-js 1.7.1,
// schema-utils-js 1.15.0), and its `npm install && npm run build` needs the
// network and fails: TypeScript 4.2 cannot parse the @types/lodash and
// @types/node its own version ranges install today (found by trying it;
// no open-rpc/generator issue about it was found). So the generated
// package's own package.json and tsconfig.json are not used: its source is
// compiled with the TypeScript and the current client-js / schema-utils-js
// installed here. client-js 2 is an ES module only, hence ESM output.
await symlink(join(here, "node_modules"), join(pkg, "node_modules"), "dir");
await writeFile(
  join(pkg, "tsconfig.rpcguard.json"),
  JSON.stringify(
    {
      compilerOptions: {
        module: "esnext",
        moduleResolution: "bundler",
        target: "es2022",
        lib: ["es2023"],
        types: ["node"],
        strict: true,
        esModuleInterop: true,
        // The libraries' own .d.ts files are not ours to check (isomorphic-ws
        // refers to `ws` types nobody installs).
        skipLibCheck: true,
        rootDir: "src",
        outDir: "build",
      },
      files: ["src/index.ts", "src/error-data.ts", "src/flow.ts"],
    },
    null,
    2,
  ),
);

// --- 3. types of the errors' data, from the document -------------------------
const response = await fetch(documentUrl);
if (response.status !== 200) {
  console.error(`FAILED: GET ${documentUrl} answered ${response.status}`);
  process.exit(1);
}
const doc = await response.json();
const components = doc.components?.schemas ?? {};
/** Replaces `#/components/schemas/X` references with (copies of) their schemas. */
function inline(schema, depth = 0) {
  if (depth > 32) throw new Error("schema references nest too deeply");
  if (Array.isArray(schema)) return schema.map((s) => inline(s, depth + 1));
  if (schema === null || typeof schema !== "object") return schema;
  if (typeof schema.$ref === "string" && schema.$ref.startsWith("#/components/schemas/")) {
    return inline(components[schema.$ref.slice("#/components/schemas/".length)], depth + 1);
  }
  return Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, inline(v, depth + 1)]));
}
const dataSchemas = new Map();
for (const method of doc.methods) {
  for (const error of method.errors ?? []) {
    if (error.data !== undefined) dataSchemas.set(JSON.stringify(error.data), inline(error.data));
  }
}
const Transpiler = require("@json-schema-tools/transpiler").default;
const errorTypes = new Transpiler([...dataSchemas.values()]).to("typescript");
await writeFile(
  join(pkg, "src", "error-data.ts"),
  `// Types of the errors' \`data\`, from the document's errors[].data schemas.\n${errorTypes}\n`,
);

// --- 4. compile ---------------------------------------------------------------
await copyFile(join(here, "generated-flow.ts"), join(pkg, "src", "flow.ts"));
const tsc = join(dirname(require.resolve("typescript/package.json")), "bin", "tsc");
run("tsc (strict, the generated client and the flow)", process.execPath, [tsc, "-p", "tsconfig.rpcguard.json"], pkg);
// The output is ES modules; the generated package.json says nothing of it.
await writeFile(join(pkg, "build", "package.json"), JSON.stringify({ type: "module" }));

// --- 5. run -------------------------------------------------------------------
const { main } = await import(pathToFileURL(join(pkg, "build", "flow.js")).toString());
await main(base.toString());
process.exit(0);
