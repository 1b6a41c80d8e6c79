// The account flow, driven by the TypeScript client that @open-rpc/generator
// made from rpcguard's live document. generated-client.mjs copies this file
// next to the generated `index.ts` (as `flow.ts`), compiles both with the
// strict TypeScript compiler, and calls `main`. So the flow is type-checked
// against the generated types: `User`, `Token`, `OpenrpcDocument`, … and the
// error data types made from the document's `errors[].data` schemas
// (`error-data.ts`).
//
// HTTP: sign_up -> sign_in -> get_caller with `Authorization: Bearer` (set on
// the client's transport: the generated constructor takes no headers) ->
// require_scopes denied (-32099) -> [scope1 granted] -> require_scopes true.
// WebSocket: a session authorized by the `access_token` query parameter of
// its URL (the generated constructor's `path`), opened before the grant and
// still open after it. Plus the errors with data (-32001, -32099, -32005),
// each checked against the schema the document gives its `data`, and
// rpc.discover through the generated client.
//
// Granting scope1 is the server's business, not the client's: the flow
// prints `GRANT <username> scope1` on stdout and waits for a line on stdin
// (the Rust test grants through the server's store; by hand, run
// `rpcguard user grant <username> scope1` and press enter).

import { once } from "node:events";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import { isDeepStrictEqual } from "node:util";

import { Client, HTTPTransport, JSONRPCError, RequestManager } from "@open-rpc/client-js";
import Ajv from "ajv";

import Rpcguard, { OpenrpcDocument, Token, User } from "./index.js";
import type {
  AuthFailure,
  PermissionErrorData,
  TooManyRequestsData,
  UnauthenticatedData,
} from "./error-data.js";

const TIMEOUT_MS = 10_000;

let checks = 0;
let step = "start";

function fail(what: string, got?: unknown): never {
  const shown =
    got instanceof Error
      ? `${got.constructor.name} ${JSON.stringify({ message: got.message, ...(got as object) })}`
      : JSON.stringify(got);
  console.error(`FAILED at ${step}: ${what}${got === undefined ? "" : `\n  got: ${shown}`}`);
  process.exit(1);
}

function check(cond: boolean, what: string, got?: unknown): void {
  if (!cond) fail(what, got);
  checks++;
}

/** The generated client for `url` (its own HTTP or WebSocket transport). */
function generated(url: URL, type: "http" | "websocket", path = "/"): Rpcguard {
  const client = new Rpcguard({ transport: { type, host: url.hostname, port: Number(url.port), path } });
  client.setDefaultTimeout(TIMEOUT_MS);
  return client;
}

/**
 * Sends `Authorization: Bearer <token>` on every call of `client`: the
 * generated constructor takes no headers, but its `transport` and `rpc` are
 * public, so an HTTPTransport with headers (client-js's own option) replaces
 * the one it made.
 */
function useBearer(client: Rpcguard, url: URL, token: string): void {
  const transport = new HTTPTransport(url.toString(), { headers: { Authorization: `Bearer ${token}` } });
  client.transport = transport;
  client.rpc = new Client(new RequestManager([transport]));
}

/** Expects the call to fail with a JSON-RPC error object; returns it. */
async function rpcError(call: Promise<unknown>, what: string): Promise<JSONRPCError> {
  let result: unknown;
  try {
    result = await call;
  } catch (e) {
    if (e instanceof JSONRPCError) return e;
    fail(`${what}: expected a JSON-RPC error object`, e);
  }
  fail(`${what}: expected an error, got a result`, result);
}

/**
 * Checks an error against the document: the method lists its code with that
 * message, and its `data` validates against the schema the document gives
 * that error's `data`.
 */
function checkDocumented(doc: OpenrpcDocument, method: string, err: JSONRPCError): void {
  const entry = (doc.methods as { name: string; errors?: { code: number; message: string; data?: unknown }[] }[])
    .find((m) => m.name === method)
    ?.errors?.find((e) => e.code === err.code);
  check(entry !== undefined, `${method} lists error ${err.code}`, doc.methods);
  check(entry?.message === err.message, `${method} ${err.code}: the documented message`, err.message);
  check(entry?.data !== undefined, `${method} ${err.code}: a data schema`, entry);
  const ajv = new Ajv({ allErrors: true, strict: false });
  const local = (schema: unknown) =>
    JSON.parse(JSON.stringify(schema).replaceAll('"#/components/schemas/', '"urn:rpcguard:components#/definitions/'));
  ajv.addSchema({ $id: "urn:rpcguard:components", definitions: local((doc.components as { schemas: object }).schemas) });
  const validate = ajv.compile(local(entry?.data));
  check(validate(err.data), `${method} ${err.code}: data matches its schema`, { data: err.data, errors: validate.errors });
}

function checkUser(user: User, username: string, scopes: string[]): void {
  check(user.username === username, `username ${username}`, user);
  check(isDeepStrictEqual(user.scopes, { Bearer: scopes }), `scopes {Bearer: ${JSON.stringify(scopes)}}`, user);
  check(!Number.isNaN(Date.parse(user.created_at)), "created_at is a date", user);
  const text = JSON.stringify(user);
  check(!text.includes("$2") && !/hash|password/i.test(text), "no password or hash", user);
}

export async function main(base: string): Promise<void> {
  try {
    await flow(base);
  } catch (e) {
    fail("unexpected exception", e);
  }
}

async function flow(base: string): Promise<void> {
  setTimeout(() => fail(`no end within ${6 * TIMEOUT_MS} ms`), 6 * TIMEOUT_MS).unref();
  const url = new URL(base);
  const stdin = createInterface({ input: process.stdin });
  const username = `ts_${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`;
  const password = `generated ${randomBytes(8).toString("hex")}`;

  step = "GET /openrpc.json";
  const response = await fetch(new URL("openrpc.json", url));
  check(response.status === 200, "GET /openrpc.json answers 200", response.status);
  const doc = (await response.json()) as OpenrpcDocument;

  // --- HTTP ---------------------------------------------------------------
  const http = generated(url, "http");

  step = "rpc.discover (rpcDiscover)";
  const discovered: OpenrpcDocument = await http.rpcDiscover();
  check(isDeepStrictEqual(discovered, doc), "rpc.discover answers what GET /openrpc.json does", discovered.info);

  step = "sign_up, a password the schema refuses";
  let refused: unknown;
  try {
    await http.sign_up(username, "short");
  } catch (e) {
    refused = e;
  }
  check(Array.isArray(refused) && refused.length > 0, "the generated client refuses it before sending", refused);

  step = "HTTP sign_up";
  checkUser(await http.sign_up(username, password), username, []);

  step = "HTTP sign_in";
  const token: Token = await http.sign_in(username, password);
  check(token.access_token.split(".").length === 3, "a JWT access_token", token);
  check(token.token_type === "bearer" && Number.isInteger(token.expires_in) && token.expires_in > 0, "bearer, expires_in > 0", token);

  step = "HTTP get_caller without a token";
  const anonymous = await rpcError(http.get_caller(), "get_caller");
  check(anonymous.code === -32001, "-32001", anonymous);
  checkDocumented(doc, "get_caller", anonymous);
  const reason: AuthFailure = (anonymous.data as UnauthenticatedData).reason;
  check(reason === "missing_token", "reason missing_token", anonymous.data);

  step = "HTTP get_caller (Authorization: Bearer on the transport)";
  const bearer = generated(url, "http");
  useBearer(bearer, url, token.access_token);
  checkUser(await bearer.get_caller(), username, []);

  step = "HTTP require_scopes without scope1";
  let denied = await rpcError(bearer.require_scopes(), "require_scopes");
  check(denied.code === -32099, "-32099", denied);
  checkDocumented(doc, "require_scopes", denied);
  check(
    isDeepStrictEqual((denied.data as PermissionErrorData).missing_scopes, { Bearer: ["scope1"] }),
    "missing_scopes {Bearer: [scope1]}",
    denied.data,
  );

  // --- WebSocket ------------------------------------------------------------
  step = "WebSocket get_caller (?access_token=)";
  const ws = generated(url, "websocket", `/?access_token=${encodeURIComponent(token.access_token)}`);
  checkUser(await ws.get_caller(), username, []);

  step = "WebSocket require_scopes without scope1";
  denied = await rpcError(ws.require_scopes(), "require_scopes");
  check(denied.code === -32099, "-32099", denied);
  checkDocumented(doc, "require_scopes", denied);

  // --- granted ----------------------------------------------------------------
  step = "grant scope1";
  console.log(`GRANT ${username} scope1`);
  const [answer] = await once(stdin, "line");
  check(typeof answer === "string", "granted", answer);
  stdin.close();

  step = "HTTP require_scopes with scope1";
  check((await bearer.require_scopes()) === true, "require_scopes is true");
  checkUser(await bearer.get_caller(), username, ["scope1"]);

  step = "WebSocket require_scopes with scope1 (the same session)";
  check((await ws.require_scopes()) === true, "require_scopes is true");
  ws.rpc.close();

  // --- throttled ----------------------------------------------------------------
  step = "sign_in throttled";
  let throttled: JSONRPCError | undefined;
  for (let attempt = 0; attempt < 10 && throttled === undefined; attempt++) {
    const err = await rpcError(http.sign_in(`${username}_x`, "not the password"), "sign_in");
    if (err.code === -32005) throttled = err;
    else check(err.code === -32002, "-32002 until throttled", err);
  }
  check(throttled !== undefined, "-32005 within 10 attempts");
  if (throttled !== undefined) {
    checkDocumented(doc, "sign_in", throttled);
    const wait = (throttled.data as TooManyRequestsData).retry_after_s;
    check(Number.isInteger(wait) && wait >= 0, "retry_after_s", throttled.data);
  }

  console.log(`OK ${checks} checks: generated client over HTTP (Bearer header) and WebSocket (access_token) as ${username}`);
}
