#!/usr/bin/env python3
"""Lists the public API of a crate from rustdoc's JSON output, one item per
line, sorted: every public module, type, trait, function, constant, field,
variant and inherent or trait method reachable from the crate root (through
`pub use` too), with its signature.

Usage: public-api.py target/doc/CRATE.json > LIST

`.ci/run` regenerates crates/rpcguard/public-api.txt this way and fails when
the file in the repository differs: a change to the surface is a change to
that file, seen in review.
"""
import json
import sys

doc = json.load(open(sys.argv[1]))
index = doc["index"]
root = doc["root"]
out = set()


def args(a):
    if not a:
        return ""
    if "angle_bracketed" in a:
        parts = []
        for arg in a["angle_bracketed"]["args"]:
            if "type" in arg:
                parts.append(ty(arg["type"]))
            elif "lifetime" in arg:
                parts.append(arg["lifetime"])
            elif "const" in arg:
                parts.append(str(arg["const"].get("expr", "_")))
        for c in a["angle_bracketed"].get("constraints", []):
            binding = c.get("binding", {})
            if "equality" in binding:
                term = binding["equality"]
                parts.append(f'{c["name"]} = {ty(term["type"]) if "type" in term else "_"}')
            else:
                parts.append(f'{c["name"]}: {bounds(binding.get("constraint", []))}')
        return "<" + ", ".join(parts) + ">" if parts else ""
    if "parenthesized" in a:
        p = a["parenthesized"]
        o = f' -> {ty(p["output"])}' if p.get("output") else ""
        return "(" + ", ".join(ty(t) for t in p["inputs"]) + ")" + o
    return ""


def path(p):
    return p["path"] + args(p.get("args"))


def bounds(bs):
    parts = []
    for b in bs:
        if "trait_bound" in b:
            parts.append(path(b["trait_bound"]["trait"]))
        elif "outlives" in b:
            parts.append(b["outlives"])
        else:
            parts.append("?")
    return " + ".join(parts)


def ty(t):
    if t is None:
        return "()"
    if isinstance(t, str):
        return t
    (kind, v), = t.items()
    if kind == "resolved_path":
        return path(v)
    if kind in ("generic", "primitive"):
        return v
    if kind == "borrowed_ref":
        lt = (v["lifetime"] + " ") if v.get("lifetime") else ""
        return "&" + lt + ("mut " if v["is_mutable"] else "") + ty(v["type"])
    if kind == "slice":
        return "[" + ty(v) + "]"
    if kind == "array":
        return "[" + ty(v["type"]) + "; " + v["len"] + "]"
    if kind == "tuple":
        return "(" + ", ".join(ty(x) for x in v) + ")"
    if kind == "impl_trait":
        return "impl " + bounds(v)
    if kind == "dyn_trait":
        traits = " + ".join(path(x["trait"]) for x in v["traits"])
        return "dyn " + traits + (" + " + v["lifetime"] if v.get("lifetime") else "")
    if kind == "qualified_path":
        return "<" + ty(v["self_type"]) + ">::" + v["name"]
    if kind == "raw_pointer":
        return ("*mut " if v["is_mutable"] else "*const ") + ty(v["type"])
    if kind == "function_pointer":
        return "fn(..)"
    return kind


def sig(f):
    s = f["sig"]
    inputs = ", ".join(
        "self" if n == "self" else f"{n}: {ty(t)}" for n, t in s["inputs"]
    )
    generics = [
        p["name"] for p in f["generics"]["params"] if not p["name"].startswith("impl ")
    ]
    g = "<" + ", ".join(generics) + ">" if generics else ""
    header = f.get("header", {})
    prefix = ("const " if header.get("is_const") else "") + ("async " if header.get("is_async") else "")
    out_ty = f" -> {ty(s['output'])}" if s.get("output") else ""
    return prefix, g, f"({inputs}){out_ty}"


def public(item):
    return item.get("visibility") in ("public", "default")


def item_line(prefix, item, name):
    (kind, v), = item["inner"].items()
    if kind == "function":
        pre, g, s = sig(v)
        out.add(f"{pre}fn {prefix}{name}{g}{s}")
    elif kind == "constant":
        out.add(f"const {prefix}{name}: {ty(v['type'])}")
    elif kind == "static":
        out.add(f"static {prefix}{name}: {ty(v['type'])}")
    elif kind == "type_alias":
        out.add(f"type {prefix}{name} = {ty(v['type'])}")
    elif kind == "struct_field":
        out.add(f"field {prefix}{name}: {ty(v)}")
    elif kind == "assoc_type":
        out.add(f"type {prefix}{name}")
    elif kind == "assoc_const":
        out.add(f"const {prefix}{name}: {ty(v['type'])}")
    else:
        out.add(f"{kind} {prefix}{name}")


seen = set()


def walk(item_id, path_prefix):
    item = index.get(str(item_id))
    if item is None or (item_id, path_prefix) in seen:
        return
    seen.add((item_id, path_prefix))
    (kind, v), = item["inner"].items()
    name = item.get("name") or ""
    here = path_prefix + name
    if kind == "module":
        out.add(f"mod {here}")
        for child in v["items"]:
            c = index.get(str(child))
            if c and public(c):
                walk(child, here + "::")
        return
    if kind == "use":
        if v.get("id") is None:
            return
        target = index.get(str(v["id"]))
        if target is None:
            return
        if v.get("is_glob"):
            for child in target["inner"].get("module", {}).get("items", []):
                c = index.get(str(child))
                if c and public(c):
                    walk(child, path_prefix)
            return
        renamed = dict(target)
        renamed["name"] = v["name"]
        index[str(v["id"]) + "@" + here] = renamed
        walk(str(v["id"]) + "@" + here, path_prefix)
        return
    item_line(path_prefix, item, name)
    if kind == "struct":
        k = v["kind"]
        fields = k.get("plain", {}).get("fields", []) if isinstance(k, dict) else []
        if isinstance(k, dict) and "tuple" in k:
            fields = [f for f in k["tuple"] if f is not None]
        for f in fields:
            fi = index.get(str(f))
            if fi and public(fi):
                item_line(here + "::", fi, fi.get("name") or "_")
    if kind == "enum":
        for var in v["variants"]:
            vi = index.get(str(var))
            if vi:
                out.add(f"variant {here}::{vi['name']}")
    if kind == "trait":
        for m in v["items"]:
            mi = index.get(str(m))
            if mi:
                item_line(here + "::", mi, mi["name"])
    for impl_id in v.get("impls", []) if isinstance(v, dict) else []:
        impl = index.get(str(impl_id), {}).get("inner", {}).get("impl")
        if not impl or impl.get("is_synthetic") or impl.get("blanket_impl"):
            continue
        if impl.get("trait") is None:
            for m in impl["items"]:
                mi = index.get(str(m))
                if mi and public(mi):
                    item_line(here + "::", mi, mi["name"])
        else:
            out.add(f"impl {path(impl['trait'])} for {here}")


walk(root, "")
for line in sorted(out):
    print(line)
