//! Marks the integration tests whose tools are missing here, so that they
//! show as `ignored` (with the reason) in `cargo test`'s summary instead of
//! passing without having run:
//!
//! - `rpcguard_no_postgres`: `RPCGUARD_TEST_DATABASE_URL` is not set;
//! - `rpcguard_no_node`: the npm tools are not installed
//!   (`npm ci --prefix tests/clients/openrpc`) or `node` is not on `PATH`.
//!
//! CI sets `RPCGUARD_REQUIRE_POSTGRES=1` / `RPCGUARD_REQUIRE_NODE=1`: then
//! nothing is marked, and a missing tool fails its tests.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(rpcguard_no_postgres)");
    println!("cargo::rustc-check-cfg=cfg(rpcguard_no_node)");
    for var in [
        "RPCGUARD_TEST_DATABASE_URL",
        "RPCGUARD_REQUIRE_POSTGRES",
        "RPCGUARD_REQUIRE_NODE",
        "PATH",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let required = |var: &str| std::env::var(var).is_ok_and(|v| v == "1");

    if std::env::var_os("RPCGUARD_TEST_DATABASE_URL").is_none()
        && !required("RPCGUARD_REQUIRE_POSTGRES")
    {
        println!("cargo::rustc-cfg=rpcguard_no_postgres");
    }

    let tools = Path::new("tests/clients/openrpc");
    let installed = tools.join("node_modules/.package-lock.json");
    if installed.is_file() {
        println!("cargo::rerun-if-changed={}", installed.display());
    } else {
        // Small until `npm ci` fills it; any new file there reruns this.
        println!("cargo::rerun-if-changed={}", tools.display());
    }
    let node_on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("node").is_file()));
    let node_ready = installed.is_file() && node_on_path;
    if !node_ready && !required("RPCGUARD_REQUIRE_NODE") {
        println!("cargo::rustc-cfg=rpcguard_no_node");
    }
}
