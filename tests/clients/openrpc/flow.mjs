#!/usr/bin/env node
// Drives a running rpcguard with the official @open-rpc/client-js.
//
// Usage: node flow.mjs http://127.0.0.1:PORT/
//
// Over HTTP (HTTPTransport, headers):  sign_up -> sign_in -> get_caller with
// `Authorization: Bearer <token>` -> require_scopes denied with -32099, and
// get_caller without a token denied with -32001.
// Over WebSocket (WebSocketTransport, which cannot send headers): get_caller
// with the token in the `access_token` query parameter of the upgrade URL ->
// require_scopes denied with -32099; a session without a token is denied -32001.
//
// Uses a new username on every run and a single sign_in (the server throttles
// sign_in to 5 attempts per minute per account and IP). Exits 1 on the first
// answer that differs from DESIGN.md's contract.

import { randomBytes } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { Client, RequestManager, HTTPTransport, WebSocketTransport } from "@open-rpc/client-js";

const TIMEOUT_MS = 10_000;

if (process.argv.length !== 3 || !/^https?:\/\//i.test(process.argv[2])) {
  console.error("usage: node flow.mjs http://HOST:PORT/");
  process.exit(2);
}
const httpUrl = new URL(process.argv[2]);
const wsUrl = (token) => {
  const url = new URL(httpUrl);
  url.protocol = httpUrl.protocol === "https:" ? "wss:" : "ws:";
  if (token !== undefined) url.searchParams.set("access_token", token);
  return url.toString();
};

let step = "start";
function fail(what, got) {
  const cause = got?.data instanceof Error ? ` (${got.data.message}${got.data.cause ? `: ${got.data.cause.message}` : ""})` : "";
  const shown =
    got instanceof Error
      ? `${got.constructor.name} ${JSON.stringify({ code: got.code, message: got.message, data: got.data })}${cause}`
      : JSON.stringify(got);
  console.error(`FAILED at ${step}: ${what}${got === undefined ? "" : `\n  got: ${shown}`}`);
  process.exit(1);
}
function check(cond, what, got) {
  if (!cond) fail(what, got);
}

/** Races a promise against a timeout (client-js's WebSocket connect never rejects). */
function withTimeout(promise, what, extra = []) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout, ...extra]).finally(() => clearTimeout(timer));
}

function httpClient(headers) {
  return { client: new Client(new RequestManager([new HTTPTransport(httpUrl.toString(), { headers })])), broken: [] };
}

function wsClient(url) {
  const transport = new WebSocketTransport(url);
  // A refused upgrade or a dropped connection must fail the run, not hang it.
  const broken = new Promise((_, reject) => {
    transport.connection.addEventListener("error", (e) =>
      reject(new Error(`WebSocket error: ${e.message ?? e.error?.message ?? e.type}`)),
    );
    transport.connection.addEventListener("close", (e) =>
      reject(new Error(`WebSocket closed: code ${e.code} ${e.reason ?? ""}`)),
    );
  });
  broken.catch(() => {}); // only an error when raced while a call is pending
  return { client: new Client(new RequestManager([transport])), broken: [broken] };
}

async function call({ client, broken }, method, params) {
  return withTimeout(client.request({ method, params }, TIMEOUT_MS), method, broken);
}

/** Expects a JSON-RPC error; returns it. */
async function callError(conn, method, params) {
  let result;
  try {
    result = await call(conn, method, params);
  } catch (e) {
    check(typeof e.code === "number" && e.code < 0 && e.code > -33000, `${method}: expected a JSON-RPC error object`, e);
    return e;
  }
  fail(`${method}: expected an error, got a result`, result);
}

function checkUser(user, username) {
  check(user && user.username === username, `username ${username}`, user);
  check(isDeepStrictEqual(user.scopes, { Bearer: [] }), "scopes {Bearer: []}", user);
  check(typeof user.created_at === "string" && !Number.isNaN(Date.parse(user.created_at)), "created_at RFC 3339", user);
  check(isDeepStrictEqual(Object.keys(user).sort(), ["created_at", "scopes", "username"]), "exactly username, scopes, created_at", user);
  const text = JSON.stringify(user);
  check(!text.includes("$2") && !/hash|password/i.test(text), "no password or hash", user);
}

const DENIED = { missing_scopes: { Bearer: ["scope1"] } };

try {
  const username = `js_${Date.now().toString(36)}_${randomBytes(4).toString("hex")}`;
  const password = `client-js ${randomBytes(8).toString("hex")}`;

  // --- HTTP --------------------------------------------------------------
  const anonymous = httpClient();

  step = "HTTP sign_up";
  checkUser(await call(anonymous, "sign_up", { username, password }), username);

  step = "HTTP sign_in";
  const token = await call(anonymous, "sign_in", [username, password]);
  check(token && typeof token.access_token === "string" && token.access_token.split(".").length === 3, "a JWT access_token", token);
  check(token.token_type === "bearer", 'token_type "bearer"', token);
  check(Number.isInteger(token.expires_in) && token.expires_in > 0, "expires_in > 0", token);
  const access = token.access_token;

  step = "HTTP get_caller (Authorization: Bearer)";
  const bearer = httpClient({ Authorization: `Bearer ${access}` });
  checkUser(await call(bearer, "get_caller"), username);

  step = "HTTP require_scopes (Bearer, no scope1)";
  let denied = await callError(bearer, "require_scopes");
  check(denied.code === -32099 && denied.message === "Permission error", "-32099 Permission error", denied);
  check(isDeepStrictEqual(denied.data, DENIED), `data ${JSON.stringify(DENIED)}`, denied);

  step = "HTTP get_caller (no token)";
  const anon = await callError(anonymous, "get_caller");
  check(anon.code === -32001 && isDeepStrictEqual(anon.data, { reason: "missing_token" }), "-32001 missing_token", anon);
  console.log(`HTTP ${httpUrl}: sign_up, sign_in, get_caller (Bearer header) ok; require_scopes -> -32099; anonymous get_caller -> -32001`);

  // --- WebSocket ---------------------------------------------------------
  step = "WebSocket get_caller (?access_token=)";
  const ws = wsClient(wsUrl(access));
  checkUser(await call(ws, "get_caller"), username);

  step = "WebSocket require_scopes (?access_token=, no scope1)";
  denied = await callError(ws, "require_scopes");
  check(denied.code === -32099 && denied.message === "Permission error", "-32099 Permission error", denied);
  check(isDeepStrictEqual(denied.data, DENIED), `data ${JSON.stringify(DENIED)}`, denied);
  ws.client.close();

  step = "WebSocket get_caller (no token)";
  const wsAnon = wsClient(wsUrl());
  const wsDenied = await callError(wsAnon, "get_caller");
  check(wsDenied.code === -32001 && isDeepStrictEqual(wsDenied.data, { reason: "missing_token" }), "-32001 missing_token", wsDenied);
  wsAnon.client.close();
  console.log(`WebSocket ${wsUrl()}: get_caller (access_token query parameter) ok; require_scopes -> -32099; session without token -> -32001`);

  console.log(`OK flow as ${username}`);
  process.exit(0);
} catch (e) {
  fail("unexpected exception", e);
}
