//! A client that is not Rust: Python's standard library over HTTP.

use std::process::Command;

use crate::helpers::*;

#[tokio::test]
async fn python_stdlib_client_full_flow() {
    let app = TestApp::spawn().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/flow.py");
    let url = app.url.clone();
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(url).output())
            .await
            .expect("join")
            .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client: all checks passed"));
}
