// A real OpenID provider for rpcguard's interop test: oidc-provider
// (OpenID Certified, not written by us) on 127.0.0.1, driven over stdin.
//
//   node provider.mjs [--port N] [--issuer URL] [--alg RS256|ES256|Ed25519]
//
// It listens on 127.0.0.1:N (0: any free port) and prints one JSON line:
//   {"issuer": ..., "jwks_uri": ..., "client_id": ..., "resource": ..., "kids": [...]}
// then answers each JSON line it reads on stdin with one JSON line:
//   {"op":"client_credentials","scope":"scope1"}  the token endpoint's answer
//       (a JWT access token for the resource, RFC 9068, with the scopes the
//       resource allows of those asked)
//   {"op":"code_flow","scope":"openid scope1","nonce":"n"}  the token
//       endpoint's answer after a real authorization code flow (the
//       interaction logs the user `alice` in and grants what was asked,
//       without a browser): an ID token and a JWT access token
//   {"op":"set_ttl","seconds":2}  the lifetime of access tokens issued next
//   {"op":"rotate","alg":"Ed25519"}  a new signing key (the old one leaves
//       the JWKS), same issuer, same port
// Errors answer {"error": "..."}; end of stdin ends the process.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as readline from 'node:readline';

import Provider, { errors } from 'oidc-provider';

const CLIENT_ID = 'rpc-client';
const CLIENT_SECRET = 'rpcguard-interop-test-client-secret-0123456789';
const REDIRECT_URI = 'http://127.0.0.1/callback';
const RESOURCE = 'https://rpc.example/api';
const RESOURCE_SCOPES = 'scope1 reports';
const ACCOUNT = 'alice';

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && process.argv[at + 1] !== undefined ? process.argv[at + 1] : fallback;
}

/** A fresh private signing JWK of `alg`, with a kid of its own. */
function signingKey(alg) {
  const kid = `op-${alg.toLowerCase()}-${crypto.randomBytes(4).toString('hex')}`;
  let pair;
  if (alg === 'RS256') {
    pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  } else if (alg === 'ES256') {
    pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  } else if (alg === 'Ed25519') {
    pair = crypto.generateKeyPairSync('ed25519');
  } else {
    throw new Error(`unsupported alg ${alg}`);
  }
  return { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const state = { alg: option('alg', 'RS256'), ttl: 300 };

function makeProvider(issuer, key) {
  return new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials', 'authorization_code'],
      response_types: ['code'],
      redirect_uris: [REDIRECT_URI],
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: key.alg,
    }],
    jwks: { keys: [key] },
    scopes: ['openid'],
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== RESOURCE) throw new errors.InvalidTarget();
          return {
            scope: RESOURCE_SCOPES,
            audience: RESOURCE,
            accessTokenTTL: state.ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: key.alg } },
          };
        },
      },
    },
    ttl: {
      ClientCredentials: () => state.ttl,
      AccessToken: () => state.ttl,
      IdToken: 300,
      Interaction: 60,
      Session: 600,
      Grant: 600,
    },
  });
}

/**
 * Logs the user in and grants what the provider says is missing (the
 * pattern of oidc-provider's own example), without a page.
 */
async function finishInteraction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt: { details: missing }, params, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: ACCOUNT, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  await provider.interactionFinished(req, res, {
    login: { accountId: ACCOUNT },
    consent: { grantId: await grant.save() },
  }, { mergeWithLastSubmission: true });
}

const port = Number(option('port', '0'));
let provider;
let key = signingKey(state.alg);

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    finishInteraction(provider, req, res).catch((err) => {
      res.statusCode = 500;
      res.end(String(err));
    });
  } else {
    provider.callback()(req, res);
  }
});

await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const issuer = option('issuer', `http://127.0.0.1:${server.address().port}`);
const base = `http://127.0.0.1:${server.address().port}`;
provider = makeProvider(issuer, key);

/** A cookie jar just good enough for one flow against this provider. */
class Jar {
  cookies = new Map();

  take(response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const at = pair.indexOf('=');
      this.cookies.set(pair.slice(0, at).trim(), pair.slice(at + 1));
    }
  }

  header() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

async function tokenRequest(fields) {
  const response = await fetch(`${base}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, ...fields }),
  });
  return response.json();
}

async function codeFlow({ scope = 'openid', nonce }) {
  const jar = new Jar();
  const query = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope,
    state: crypto.randomBytes(8).toString('hex'),
    resource: RESOURCE,
  });
  if (nonce) query.set('nonce', nonce);
  let url = `${base}/auth?${query}`;
  // /auth -> /interaction/UID -> /auth/UID -> the redirect URI with a code.
  for (let hop = 0; hop < 8; hop += 1) {
    const response = await fetch(url, { redirect: 'manual', headers: { cookie: jar.header() } });
    jar.take(response);
    const location = response.headers.get('location');
    if (!location) {
      throw new Error(`the flow stopped at ${url} with HTTP ${response.status}: ${await response.text()}`);
    }
    const next = new URL(location, base);
    if (next.href.startsWith(REDIRECT_URI)) {
      const code = next.searchParams.get('code');
      if (!code) throw new Error(`no code: ${next.search}`);
      return tokenRequest({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI });
    }
    url = next.href;
  }
  throw new Error('too many redirects');
}

async function handle(command) {
  switch (command.op) {
    case 'client_credentials':
      return tokenRequest({ grant_type: 'client_credentials', scope: command.scope ?? '', resource: RESOURCE });
    case 'code_flow':
      return codeFlow(command);
    case 'set_ttl':
      state.ttl = command.seconds;
      return { ttl: state.ttl };
    case 'rotate':
      state.alg = command.alg ?? state.alg;
      key = signingKey(state.alg);
      provider = makeProvider(issuer, key);
      return { kids: [key.kid] };
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

console.log(JSON.stringify({
  issuer,
  jwks_uri: `${base}/jwks`,
  client_id: CLIENT_ID,
  resource: RESOURCE,
  kids: [key.kid],
}));

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer;
  try {
    answer = await handle(JSON.parse(line));
  } catch (err) {
    answer = { error: String(err?.stack ?? err) };
  }
  console.log(JSON.stringify(answer));
}
server.close();
process.exit(0);
