#!/usr/bin/env python3
"""Verifies rpcguard tokens against its JWKS with PyJWT (a library nobody
here wrote), the way a separate service would: keys fetched by URL, chosen
by the token's `kid`, each key's own algorithm only.

Usage: jwks_verify.py JWKS_URL TOKEN...
Exits non-zero on the first token that does not verify, or on a tampered
token that does.
"""
import sys

import jwt

JWKS_URL = sys.argv[1]
TOKENS = sys.argv[2:]
assert TOKENS, "no tokens given"

client = jwt.PyJWKClient(JWKS_URL, cache_keys=False)
seen = set()
for token in TOKENS:
    key = client.get_signing_key_from_jwt(token)
    header = jwt.get_unverified_header(token)
    assert key.key_id == header["kid"], (key.key_id, header)
    # The algorithm comes from the published key, not from the token.
    alg = key.algorithm_name
    assert alg == header["alg"], (alg, header)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=[alg],
        audience="rpcguard",
        issuer="rpcguard",
        options={"require": ["exp", "iat", "sub", "iss", "aud"]},
    )
    assert claims["sub"], claims
    seen.add(alg)
    # A changed payload must not verify.
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload[:-2]}AA.{signature}"
    try:
        jwt.decode(tampered, key.key, algorithms=[alg], audience="rpcguard", issuer="rpcguard")
    except jwt.PyJWTError:
        pass
    else:
        raise AssertionError(f"a tampered {alg} token verified")
    print(f"pyjwt: {alg} token of {claims['sub']} verified with kid {key.key_id}")

print(f"pyjwt: all checks passed ({', '.join(sorted(seen))})")
