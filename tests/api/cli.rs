//! The `rpcguard user …` commands against a live server's store.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::both_stores;
use crate::helpers::*;

/// Runs `rpcguard user ARGS` on the app's store; returns stdout.
pub fn rpcguard_user(app: &TestApp, args: &[&str], stdin: &str) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpcguard"));
    command
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(app.data_dir.path())
        .env("RUST_LOG", "warn");
    if let Some(url) = &app.config.database_url {
        command.arg("--database-url").arg(url);
    }
    if args.first() == Some(&"add") {
        command.args(["--bcrypt-cost", "4"]);
    }
    let out = output_with_stdin(command, stdin);
    assert!(
        out.status.success(),
        "rpcguard user {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

both_stores! {
    async fn grant_makes_require_scopes_pass_for_a_live_token(app) {
        let token = app.signed_in("alice").await;
        assert_eq!(app.call(Some(&token), "require_scopes", json!({})).await.expect_err("denied").code(), -32099);
        rpcguard_user(&app, &["grant", "alice", "scope1"], "");
        let granted = app.after_external_write(&token, "require_scopes", |a| a.is_ok()).await;
        assert_eq!(granted.expect("granted"), json!(true));
        rpcguard_user(&app, &["revoke", "alice", "scope1"], "");
        let revoked = app.after_external_write(&token, "require_scopes", |a| a.is_err()).await;
        assert_eq!(revoked.expect_err("revoked").code(), -32099);
    }

    async fn add_list_and_delete(app) {
        rpcguard_user(&app, &["add", "carol"], "carol's password\n");
        let token = app.sign_in("carol", "carol's password").await.expect("sign in")["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        rpcguard_user(&app, &["grant", "carol", "scope1", "admin"], "");
        let listing = rpcguard_user(&app, &["list"], "");
        assert!(listing.contains("carol") && listing.contains("admin scope1"), "{listing}");
        assert!(!listing.contains("$2"), "no hash in the listing: {listing}");
        rpcguard_user(&app, &["delete", "carol"], "");
        let gone = app.after_external_write(&token, "get_caller", |a| a.is_err()).await;
        assert_unauthenticated(gone, "invalid_token");
    }
}

/// Runs `rpcguard ARGS` in `dir` with `stdin`; (success, stdout, stderr).
fn rpcguard_in(dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpcguard"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RPCGUARD_SECRET")
        .env_remove("RPCGUARD_DATA_DIR")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info");
    let out = output_with_stdin(command, stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_commands_never_create_a_store_and_say_where_they_looked() {
    let dir = tempfile::tempdir().expect("dir");
    for args in [
        &["user", "grant", "nosuchuser", "scope1"][..],
        &["user", "revoke", "nosuchuser", "scope1"],
        &["user", "delete", "nosuchuser"],
        &["user", "list"],
        &["user", "add", "newuser"],
    ] {
        let (ok, _, stderr) = rpcguard_in(dir.path(), args, "a fine password\n");
        assert!(!ok, "{args:?} succeeded");
        assert!(
            stderr.contains("no rpcguard database at ./rpcguard-data/rpcguard.db"),
            "{args:?}: {stderr}"
        );
        assert!(
            !dir.path().join("rpcguard-data").exists(),
            "{args:?} created a store"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_name_the_user_and_the_database() {
    let app = TestApp::spawn().await;
    let data_dir = app.data_dir.path().display().to_string();
    for args in [
        &[
            "user",
            "grant",
            "nosuchuser",
            "scope1",
            "--data-dir",
            &data_dir,
        ][..],
        &["user", "delete", "nosuchuser", "--data-dir", &data_dir],
    ] {
        let (ok, _, stderr) = rpcguard_in(app.data_dir.path(), args, "");
        assert!(!ok);
        assert!(
            stderr.contains(&format!("no user nosuchuser in {data_dir}/rpcguard.db")),
            "{stderr}"
        );
    }
    let (ok, _, stderr) = rpcguard_in(
        app.data_dir.path(),
        &["user", "add", "carol", "--data-dir", &data_dir],
        "",
    );
    assert!(!ok);
    assert!(stderr.contains("no password on standard input"), "{stderr}");
}

#[test]
fn a_bad_key_is_reported_before_the_port_and_leaves_no_data_dir() {
    let dir = tempfile::tempdir().expect("dir");
    // Hold the port: a busy port must not hide the real error.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["serve", "--addr", &addr])
        .current_dir(dir.path())
        .env("RPCGUARD_SECRET", "too short")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read");
    assert!(!status.success());
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    assert!(
        !dir.path().join("rpcguard-data").exists(),
        "left a data dir"
    );
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("dir");
    // A first start that logs (a key is generated) and then fails: the
    // port is taken.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let (ok, _, stderr) = rpcguard_in(dir.path(), &["serve", "--addr", &addr], "");
    assert!(!ok);
    assert!(stderr.contains("generated a new signing key"), "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "ANSI escape in {stderr:?}");
    assert!(
        !dir.path().join("rpcguard-data").exists(),
        "left a data dir"
    );
}

/// The start lines name where the API and the docs page are; with the page
/// off, only the API.
#[test]
fn the_start_lines_name_the_docs_page_when_it_is_on() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8");
    let on = ServerProcess::start(&["--data-dir", data_dir], &[]);
    let wanted = [
        format!("rpcguard listening on http://{}/", on.addr),
        format!("rpcguard docs on http://{}/docs", on.addr),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = on.log();
        let lines: Vec<&str> = log.lines().collect();
        let at = |line: &str| lines.iter().position(|l| *l == line);
        if let (Some(api), Some(docs)) = (at(&wanted[0]), at(&wanted[1])) {
            assert_eq!(docs, api + 1, "{log}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(on);
    let off_dir = tempfile::tempdir().expect("dir");
    let off = ServerProcess::start(
        &[
            "--data-dir",
            off_dir.path().to_str().expect("utf-8"),
            "--docs",
            "off",
        ],
        &[],
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!off.log().contains("rpcguard docs on"), "{}", off.log());
}

/// Read-only and key commands never create a data dir or a key set; each
/// error names the real cause once (issue 27).
#[test]
fn key_commands_never_create_state_and_say_why() {
    let dir = tempfile::tempdir().expect("dir");
    for args in [
        &["key", "list", "--data-dir", "./typo"][..],
        &["key", "rotate", "--data-dir", "./typo"],
    ] {
        let (ok, _, stderr) = rpcguard_in(dir.path(), args, "");
        assert!(!ok, "{args:?} succeeded");
        assert!(
            stderr.contains(
                "error: no data dir ./typo: pass the server's --data-dir (`rpcguard serve` creates it at its first start)"
            ),
            "{args:?}: {stderr}"
        );
        assert!(!dir.path().join("typo").exists(), "{args:?} created it");
    }
    // A data dir without a key set.
    std::fs::create_dir(dir.path().join("empty")).expect("dir");
    let (ok, _, stderr) = rpcguard_in(dir.path(), &["key", "list", "--data-dir", "./empty"], "");
    assert!(!ok);
    assert!(
        stderr.contains("error: no key set in ./empty (keys.json): `rpcguard serve` makes one at its first start"),
        "{stderr}"
    );
    assert!(!dir.path().join("empty/keys.json").exists());
}

#[test]
fn a_missing_policy_file_is_named_once_with_its_cause() {
    let dir = tempfile::tempdir().expect("dir");
    let (ok, _, stderr) = rpcguard_in(
        dir.path(),
        &["serve", "--addr", "127.0.0.1:0", "--policy", "nope.toml"],
        "",
    );
    assert!(!ok);
    assert!(
        stderr.contains("error: nope.toml: cannot read it (no such file)"),
        "{stderr}"
    );
    assert!(!stderr.contains("os error"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_list_has_a_header_and_json_and_revoke_says_no_scopes() {
    let app = TestApp::spawn().await;
    app.sign_up("dora", PASSWORD).await.expect("sign_up");
    rpcguard_user(&app, &["grant", "dora", "reports"], "");
    assert_eq!(
        rpcguard_user(&app, &["revoke", "dora", "reports"], ""),
        "dora: no scopes\n"
    );
    let listing = rpcguard_user(&app, &["list"], "");
    let mut lines = listing.lines();
    assert_eq!(
        lines.next(),
        Some("USERNAME\tCREATED\tSCOPES\tSTATE\tSESSIONS")
    );
    let row = lines.next().expect("dora");
    assert!(
        row.starts_with("dora\t") && row.ends_with("\t-\tenabled\t0"),
        "{row}"
    );
    let json = rpcguard_user(&app, &["list", "--json"], "");
    let user: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(user["username"], "dora");
    assert_eq!(user["scopes"], serde_json::json!([]));
    assert_eq!(user["disabled"], false);
    assert_eq!(user["sessions"], 0);
}

/// Values that would make the server useless are refused with the allowed
/// range; a host name is resolved or refused with a hint; a bad value from
/// the environment names the variable (issue 27).
#[test]
fn useless_values_and_bad_environment_values_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rpcguard"));
        command.arg("serve").args(args).current_dir(dir.path());
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().expect("run");
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for (flag, range) in [
        ("--token-ttl", "1..=604800"),
        ("--max-body-bytes", "256..=1073741824"),
        ("--max-batch-len", "1..=10000"),
    ] {
        let stderr = serve(&[flag, "0"], &[]);
        assert!(
            stderr.contains(&format!("0 is not in {range}")),
            "{flag}: {stderr}"
        );
    }
    let stderr = serve(&["--addr", "localhost"], &[]);
    assert!(
        stderr.contains("\"localhost\" has no port: give IP:PORT (127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080) or HOST:PORT"),
        "{stderr}"
    );
    let stderr = serve(&[], &[("RPCGUARD_TOKEN_TTL", "abc")]);
    assert!(
        stderr.starts_with(
            "error: invalid value 'abc' in RPCGUARD_TOKEN_TTL (the environment variable of --token-ttl): invalid digit found in string"
        ),
        "{stderr}"
    );
    assert!(
        !dir.path().join("rpcguard-data").exists(),
        "nothing created"
    );
}

/// `--addr localhost:PORT` is resolved, not refused.
#[test]
fn a_host_name_in_addr_is_resolved() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args([
            "serve",
            "--addr",
            "localhost:0",
            "--bcrypt-cost",
            "4",
            "--data-dir",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("stderr");
    let listening = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("rpcguard listening on http://")
                .map(str::to_owned)
        });
    let _ = child.kill();
    let _ = child.wait();
    let addr: std::net::SocketAddr = listening
        .expect("a listening line")
        .trim_end_matches('/')
        .parse()
        .expect("an address");
    assert!(addr.ip().is_loopback(), "{addr}");
}

/// A database migrated by a newer rpcguard is named as such, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_version_is_named_once() {
    use sqlx::Connection;
    let app = TestApp::spawn().await;
    let url = format!(
        "sqlite://{}",
        app.data_dir.path().join("rpcguard.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', TRUE, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .expect("insert");
    drop(conn);
    let data_dir = app.data_dir.path().display().to_string();
    let (ok, _, stderr) = rpcguard_in(
        app.data_dir.path(),
        &["user", "list", "--data-dir", &data_dir],
        "",
    );
    assert!(!ok);
    let said =
        "the database was written by a newer rpcguard (it has migration 999, which this version";
    assert_eq!(stderr.matches(said).count(), 1, "{stderr}");
    assert!(!stderr.contains("migration failed"), "{stderr}");
}

/// `user list` on a data directory this user may not read says so, once,
/// instead of "no database". As root (CI), the command runs as `nobody`
/// (runuser); as another user, the directory is made unreadable.
#[tokio::test]
async fn a_data_dir_without_permission_is_named_as_such() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn().await;
    let dir = app.data_dir.path();
    let data_dir = dir.display().to_string();
    let root = unsafe { libc::geteuid() } == 0;
    let out = if root {
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_rpcguard")])
            .args(["user", "list", "--data-dir", &data_dir])
            .current_dir("/")
            .output()
            .expect("runuser")
    } else {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
            .args(["user", "list", "--data-dir", &data_dir])
            .output()
            .expect("rpcguard");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        out
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.matches("permission denied").count(), 1, "{stderr}");
    assert!(!stderr.contains("no rpcguard database"), "{stderr}");
    assert!(!stderr.contains("os error"), "{stderr}");
}
