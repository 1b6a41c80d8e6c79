//! The deployment files (issue 25): `deploy/rpcguard.service` passes
//! `systemd-analyze verify` (with its `ExecStart` pointed at the binary
//! under test), every `RPCGUARD_*` variable it sets is one `rpcguard serve`
//! reads, and its stop timeout covers the drain delay plus the grace.
//! Marked `ignored` without `systemd-analyze`, unless
//! `RPCGUARD_REQUIRE_SYSTEMD=1` (CI).

const UNIT: &str = include_str!("../../deploy/rpcguard.service");

/// `KEY=VALUE` of the unit's `Environment=` lines.
fn environment() -> Vec<(String, String)> {
    UNIT.lines()
        .filter_map(|line| line.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn setting(key: &str) -> String {
    UNIT.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing"))
        .to_owned()
}

#[test]
#[cfg_attr(
    rpcguard_no_systemd,
    ignore = "systemd-analyze: install Debian's systemd package"
)]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("dir");
    let unit = dir.path().join("rpcguard.service");
    let binary = env!("CARGO_BIN_EXE_rpcguard");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/rpcguard", binary)).expect("unit");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Nothing about our unit (other units' warnings on the host aside).
    assert!(
        !stderr.lines().any(|l| l.contains("rpcguard.service")),
        "{stderr}"
    );
}

#[test]
fn the_unit_sets_only_variables_the_server_reads_and_waits_for_the_drain() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["serve", "--help"])
        .output()
        .expect("rpcguard serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let env = environment();
    assert!(env.len() >= 6);
    for (key, _) in &env {
        assert!(
            help.contains(&format!("[env: {key}")),
            "{key} is not read by rpcguard serve"
        );
    }
    let seconds = |key: &str| -> u64 {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.parse().expect("seconds"))
            .unwrap_or_else(|| panic!("{key} not set"))
    };
    let stop: u64 = setting("TimeoutStopSec").parse().expect("seconds");
    assert!(
        stop > seconds("RPCGUARD_DRAIN_DELAY") + seconds("RPCGUARD_SHUTDOWN_GRACE"),
        "TimeoutStopSec {stop} must cover the drain delay and the grace"
    );
    for hardening in [
        "DynamicUser",
        "NoNewPrivileges",
        "ProtectSystem",
        "StateDirectory",
    ] {
        setting(hardening);
    }
}
