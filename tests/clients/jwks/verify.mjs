// Verifies rpcguard tokens against its JWKS with `jose` (a library nobody
// here wrote), the way a separate service would: keys fetched by URL with
// createRemoteJWKSet, chosen by the token's `kid`, asymmetric algorithms only.
//
// Usage: node verify.mjs JWKS_URL TOKEN...
// Exits non-zero on the first token that does not verify, or on a tampered
// token that does.
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from "jose";

const [jwksUrl, ...tokens] = process.argv.slice(2);
if (!jwksUrl || tokens.length === 0) {
  console.error("usage: node verify.mjs JWKS_URL TOKEN...");
  process.exit(2);
}
const jwks = createRemoteJWKSet(new URL(jwksUrl));
const options = {
  issuer: "rpcguard",
  audience: "rpcguard",
  algorithms: ["EdDSA", "ES256", "RS256"],
  requiredClaims: ["exp", "iat", "sub"],
};
const seen = new Set();
for (const token of tokens) {
  const header = decodeProtectedHeader(token);
  const { payload, protectedHeader } = await jwtVerify(token, jwks, options);
  if (protectedHeader.kid !== header.kid || !payload.sub) {
    throw new Error(`unexpected verification result ${JSON.stringify(protectedHeader)}`);
  }
  seen.add(protectedHeader.alg);
  const [head, body, signature] = token.split(".");
  const tampered = `${head}.${body.slice(0, -2)}AA.${signature}`;
  let refused = false;
  try {
    await jwtVerify(tampered, jwks, options);
  } catch {
    refused = true;
  }
  if (!refused) throw new Error(`a tampered ${protectedHeader.alg} token verified`);
  console.log(`jose: ${protectedHeader.alg} token of ${payload.sub} verified with kid ${header.kid}`);
}
console.log(`jose: all checks passed (${[...seen].sort().join(", ")})`);
