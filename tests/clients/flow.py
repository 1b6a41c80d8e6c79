#!/usr/bin/env python3
"""Drives rpcguard over HTTP with nothing but Python's standard library.

Usage: flow.py http://127.0.0.1:PORT/
Exits non-zero on the first answer that differs from DESIGN.md's contract.
"""
import json
import sys
import urllib.request

URL = sys.argv[1]
NEXT_ID = 0


def rpc(method, params=None, token=None, scheme="Bearer"):
    global NEXT_ID
    NEXT_ID += 1
    body = {"jsonrpc": "2.0", "id": NEXT_ID, "method": method}
    if params is not None:
        body["params"] = params
    request = urllib.request.Request(URL, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"{scheme} {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200, response.status
        answer = json.loads(response.read())
    assert answer["id"] == NEXT_ID, answer
    return answer


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)


user = rpc("sign_up", {"username": "pyuser", "password": "python password"})
check(user.get("result", {}).get("username") == "pyuser", f"sign_up: {user}")
check("password" not in json.dumps(user) and "$2" not in json.dumps(user), "no hash")

again = rpc("sign_up", ["PyUser", "other password"])
check(again.get("error", {}).get("code") == -32003, f"taken: {again}")

bad = rpc("sign_in", {"username": "pyuser", "password": "wrong password"})
check(bad.get("error") == {"code": -32002, "message": "Authentication failed"}, f"wrong password: {bad}")

token = rpc("sign_in", ["pyuser", "python password"])["result"]
check(token["token_type"] == "bearer" and token["expires_in"] > 0, f"token: {token}")
access = token["access_token"]

me = rpc("get_caller", token=access, scheme="bEaReR")
check(me.get("result", {}).get("username") == "pyuser", f"get_caller: {me}")

denied = rpc("require_scopes", token=access)
check(denied.get("error", {}).get("code") == -32099, f"denied: {denied}")
check(denied["error"]["data"] == {"missing_scopes": {"Bearer": ["scope1"]}}, f"data: {denied}")

anon = rpc("get_caller")
check(anon.get("error", {}).get("data") == {"reason": "missing_token"}, f"anonymous: {anon}")

no_prefix = rpc("get_caller", token=access, scheme="")
check(no_prefix.get("error", {}).get("data") == {"reason": "invalid_token"}, f"no prefix: {no_prefix}")

doc = rpc("rpc.discover")["result"]
check(doc["openrpc"] == "1.3.2", "discover")
names = {m["name"] for m in doc["methods"]}
check({"sign_up", "sign_in", "get_caller", "require_scopes", "rpc.discover"} <= names, f"methods: {names}")

with urllib.request.urlopen(URL + "health", timeout=10) as response:
    check(response.status == 200, "health")

print("python client: all checks passed")
