//! The `rpcguard user …` commands against a live server's store.

use std::io::Write;
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
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = &app.config.database_url {
        command.arg("--database-url").arg(url);
    }
    if args.first() == Some(&"add") {
        command.args(["--bcrypt-cost", "4"]);
    }
    let mut child = command.spawn().expect("run rpcguard");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
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
        assert_eq!(app.call(Some(&token), "require_scopes", json!({})).await.expect("granted"), json!(true));
        rpcguard_user(&app, &["revoke", "alice", "scope1"], "");
        assert_eq!(app.call(Some(&token), "require_scopes", json!({})).await.expect_err("revoked").code(), -32099);
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
        assert_unauthenticated(app.call(Some(&token), "get_caller", json!({})).await, "invalid_token");
    }
}
