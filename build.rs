//! Marks the integration tests whose tools are missing here, so that they
//! show as `ignored` (with the reason) in `cargo test`'s summary instead of
//! passing without having run:
//!
//! - `rpcguard_no_postgres`: `RPCGUARD_TEST_DATABASE_URL` is not set;
//! - `rpcguard_no_node`: the npm tools are not installed
//!   (`npm ci --prefix tests/clients/openrpc`) or `node` is not on `PATH`;
//! - `rpcguard_no_jose`: `jose` is not installed
//!   (`npm ci --prefix tests/clients/jwks`) or `node` is not on `PATH`;
//! - `rpcguard_no_oidc_provider`: the OpenID provider `oidc-provider` is
//!   not installed (`npm ci --prefix tests/clients/oidc`) or `node` is not
//!   on `PATH`;
//! - `rpcguard_no_pyjwt`: `python3` cannot `import jwt, cryptography`
//!   (`pip install pyjwt cryptography`; checked when this script runs:
//!   `touch build.rs` after installing);
//! - `rpcguard_no_systemd`: `systemd-analyze` is not on `PATH` (Debian's
//!   `systemd` package);
//! - `rpcguard_no_prometheus`: `prometheus` or `promtool` is not on `PATH`
//!   (Debian's package is `prometheus`);
//! - `rpcguard_no_chromium`: no Chromium (`RPCGUARD_CHROMIUM`, else
//!   `chromium` on `PATH`; Debian's package is `chromium`), or the browser
//!   driver is not installed (`npm ci --prefix tests/clients/browser`), or
//!   `node` is not on `PATH`;
//! - `rpcguard_no_nginx`: no nginx (`RPCGUARD_NGINX`, else `nginx` on
//!   `PATH` or `/usr/sbin/nginx`; Debian's package is `nginx`) or no
//!   `openssl` on `PATH` (it makes the test's certificate).
//!
//! CI sets `RPCGUARD_REQUIRE_POSTGRES=1` / `RPCGUARD_REQUIRE_NODE=1` (also
//! for `jose` and `oidc-provider`) / `RPCGUARD_REQUIRE_PYJWT=1` / `RPCGUARD_REQUIRE_CHROMIUM=1` /
//! `RPCGUARD_REQUIRE_NGINX=1` / `RPCGUARD_REQUIRE_PROMETHEUS=1` / `RPCGUARD_REQUIRE_SYSTEMD=1`:
//! then nothing is marked, and a missing tool fails its tests.
//!
//! Only test builds look: the crate's own dev-dependency on itself turns on
//! the internal feature `__test-tools`, and without it this script probes
//! nothing and watches nothing but this file. So `cargo build`, `cargo run
//! --release`, the benchmarks and an embedder's build run no `python3` and
//! look for no tool, and installing a test tool (`npm ci`) never rebuilds
//! the binary they use.

use std::path::Path;

/// Every cfg this script may set.
const CFGS: [&str; 9] = [
    "rpcguard_no_postgres",
    "rpcguard_no_node",
    "rpcguard_no_chromium",
    "rpcguard_no_jose",
    "rpcguard_no_pyjwt",
    "rpcguard_no_prometheus",
    "rpcguard_no_systemd",
    "rpcguard_no_nginx",
    "rpcguard_no_oidc_provider",
];

fn main() {
    for cfg in CFGS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE___TEST_TOOLS").is_none() {
        return;
    }
    for var in [
        "RPCGUARD_TEST_DATABASE_URL",
        "RPCGUARD_REQUIRE_POSTGRES",
        "RPCGUARD_REQUIRE_NODE",
        "RPCGUARD_REQUIRE_CHROMIUM",
        "RPCGUARD_REQUIRE_PYJWT",
        "RPCGUARD_REQUIRE_PROMETHEUS",
        "RPCGUARD_REQUIRE_SYSTEMD",
        "RPCGUARD_CHROMIUM",
        "RPCGUARD_REQUIRE_NGINX",
        "RPCGUARD_NGINX",
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

    let node_on_path = on_path("node");
    let node_ready = npm_installed(Path::new("tests/clients/openrpc")) && node_on_path;
    if !node_ready && !required("RPCGUARD_REQUIRE_NODE") {
        println!("cargo::rustc-cfg=rpcguard_no_node");
    }

    let jose_ready = npm_installed(Path::new("tests/clients/jwks")) && node_on_path;
    if !jose_ready && !required("RPCGUARD_REQUIRE_NODE") {
        println!("cargo::rustc-cfg=rpcguard_no_jose");
    }

    let oidc_provider_ready = npm_installed(Path::new("tests/clients/oidc")) && node_on_path;
    if !oidc_provider_ready && !required("RPCGUARD_REQUIRE_NODE") {
        println!("cargo::rustc-cfg=rpcguard_no_oidc_provider");
    }

    let pyjwt_ready = std::process::Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !pyjwt_ready && !required("RPCGUARD_REQUIRE_PYJWT") {
        println!("cargo::rustc-cfg=rpcguard_no_pyjwt");
    }

    if !on_path("systemd-analyze") && !required("RPCGUARD_REQUIRE_SYSTEMD") {
        println!("cargo::rustc-cfg=rpcguard_no_systemd");
    }

    let prometheus_ready = on_path("prometheus") && on_path("promtool");
    if !prometheus_ready && !required("RPCGUARD_REQUIRE_PROMETHEUS") {
        println!("cargo::rustc-cfg=rpcguard_no_prometheus");
    }

    let chromium = match std::env::var_os("RPCGUARD_CHROMIUM") {
        Some(path) => Path::new(&path).is_file(),
        None => on_path("chromium"),
    };
    let browser_ready =
        npm_installed(Path::new("tests/clients/browser")) && node_on_path && chromium;
    if !browser_ready && !required("RPCGUARD_REQUIRE_CHROMIUM") {
        println!("cargo::rustc-cfg=rpcguard_no_chromium");
    }

    let nginx = match std::env::var_os("RPCGUARD_NGINX") {
        Some(path) => Path::new(&path).is_file(),
        None => on_path("nginx") || Path::new("/usr/sbin/nginx").is_file(),
    };
    let nginx_ready = nginx && on_path("openssl");
    if !nginx_ready && !required("RPCGUARD_REQUIRE_NGINX") {
        println!("cargo::rustc-cfg=rpcguard_no_nginx");
    }
}

/// Whether `npm ci` has run in the npm project `dir` (and reruns this
/// script when that changes).
fn npm_installed(dir: &Path) -> bool {
    let installed = dir.join("node_modules/.package-lock.json");
    if installed.is_file() {
        println!("cargo::rerun-if-changed={}", installed.display());
        true
    } else {
        // Small until `npm ci` fills it; any new file there reruns this.
        println!("cargo::rerun-if-changed={}", dir.display());
        false
    }
}

/// Whether an executable file named `name` is in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
}
