//! `rpcguard backup DIR` (issue 25): taken while a sign-up load runs, it
//! restores every account acknowledged before it started, with the key set
//! (tokens issued before the backup verify on the restored server); its
//! files are private.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_a_sign_up_load_restores_every_acknowledged_account() {
    let live = tempfile::tempdir().expect("dir");
    let live_dir = live.path().to_str().expect("utf-8").to_owned();
    let server = ServerProcess::start(&["--data-dir", &live_dir], &[]);
    let client = server.client(None);
    call(
        &client,
        "sign_up",
        json!({ "username": "early", "password": PASSWORD }),
    )
    .await
    .expect("sign_up");
    let early_token = call(
        &client,
        "sign_in",
        json!({ "username": "early", "password": PASSWORD }),
    )
    .await
    .expect("sign_in")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    // The load: sign-ups one after another, each acknowledged one noted
    // with the time its answer arrived.
    let acknowledged: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acknowledged, stop, client) =
            (acknowledged.clone(), stop.clone(), server.client(None));
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("load{i}");
                i += 1;
                if call(
                    &client,
                    "sign_up",
                    json!({ "username": name, "password": PASSWORD }),
                )
                .await
                .is_ok()
                {
                    acknowledged
                        .lock()
                        .expect("lock")
                        .push((name, Instant::now()));
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let backups = tempfile::tempdir().expect("dir");
    let target = backups.path().join("backup");
    let started = Instant::now();
    let out = {
        let (target, live_dir) = (target.clone(), live_dir.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
                .args(["backup"])
                .arg(&target)
                .args(["--data-dir", &live_dir])
                .env("RUST_LOG", "warn")
                .output()
                .expect("rpcguard backup")
        })
        .await
        .expect("task")
    };
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.expect("load");
    let before: Vec<String> = acknowledged
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, at)| *at < started)
        .map(|(name, _)| name.clone())
        .collect();
    assert!(before.len() >= 5, "the load ran: {}", before.len());

    // Private files.
    assert_eq!(mode(&target), 0o700);
    for name in ["rpcguard.db", "keys.json"] {
        assert_eq!(mode(&target.join(name)), 0o600, "{name}");
    }

    // Restore: the backup's files into a new data dir.
    let restored = tempfile::tempdir().expect("dir");
    for name in ["rpcguard.db", "keys.json"] {
        std::fs::copy(target.join(name), restored.path().join(name)).expect("copy");
    }
    drop(server);
    let restored_dir = restored.path().to_str().expect("utf-8");
    let mut args = vec!["--data-dir", restored_dir];
    args.extend(NO_SIGNIN_THROTTLE);
    let server = ServerProcess::start(&args, &[]);
    let client = server.client(None);
    for name in &before {
        call(
            &client,
            "sign_in",
            json!({ "username": name, "password": PASSWORD }),
        )
        .await
        .unwrap_or_else(|err| panic!("{name} acknowledged before the backup: {err:?}"));
    }
    // The key set travelled: a token from before verifies.
    call(&server.client(Some(&early_token)), "get_caller", json!({}))
        .await
        .expect("a token of the backed-up key set");
}

#[test]
fn a_postgres_store_is_pointed_to_pg_dump() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args([
            "backup",
            "/nonexistent/backup",
            "--database-url",
            "postgres://h/db",
        ])
        .output()
        .expect("rpcguard backup");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(!std::path::Path::new("/nonexistent/backup").exists());
}
