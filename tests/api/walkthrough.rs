//! The README's walk-through, run as written against a real server: every
//! `sh` block of the "Walk-through" section goes to bash (with the
//! server's address for `localhost:8080`, and the built binary for `cargo
//! run --release --`), and every output line matches the `# …` line the
//! README shows under its command — character for character, except tokens,
//! times and whatever the README elides with `…`.

use serde_json::Value;

use crate::helpers::*;

/// The walk-through's shell blocks.
fn walkthrough() -> String {
    let readme = include_str!("../../README.md");
    let start = readme.find("## Walk-through").expect("the section");
    let end = readme[start..]
        .find("\n## ")
        .map_or(readme.len(), |at| start + at);
    let section = &readme[start..end];
    let mut script = String::new();
    let mut inside = false;
    for line in section.lines() {
        if line == "```sh" {
            inside = true;
        } else if line == "```" {
            inside = false;
        } else if inside {
            script.push_str(line);
            script.push('\n');
        }
    }
    script
}

/// Whether `actual` is what `shown` shows: the same JSON, where a shown
/// string holding `…`, a token or a time stands for any string.
fn matches(shown: &Value, actual: &Value, key: &str) -> bool {
    match (shown, actual) {
        (Value::String(s), Value::String(_))
            if s.contains('…')
                || ["access_token", "refresh_token", "created_at"].contains(&key) =>
        {
            true
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| matches(v, w, k)))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| matches(v, w, key))
        }
        _ => shown == actual,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_answers_what_it_shows() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8").to_owned();
    let server = ServerProcess::start(&["--data-dir", &data_dir], &[]);
    let script = walkthrough();
    let shown: Vec<&str> = script
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .collect();
    assert!(shown.len() >= 10, "{script}");
    let binary = env!("CARGO_BIN_EXE_rpcguard");
    let runnable = script
        .replace("localhost:8080", &server.addr.to_string())
        .replace(
            "cargo run --release -- user grant alice scope1",
            &format!("{binary} user grant alice scope1 --data-dir {data_dir}"),
        );
    let work = tempfile::tempdir().expect("dir");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &runnable])
            .current_dir(work.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("bash")
    })
    .await
    .expect("task");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the walk-through failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        printed.len(),
        shown.len(),
        "printed:\n{stdout}\nshown:\n{shown:#?}"
    );
    for (shown, printed) in shown.iter().zip(&printed) {
        let ok = match (
            serde_json::from_str::<Value>(shown),
            serde_json::from_str::<Value>(printed),
        ) {
            (Ok(a), Ok(b)) => matches(&a, &b, ""),
            _ => shown == printed,
        };
        assert!(
            ok,
            "the README shows\n  {shown}\nthe server answered\n  {printed}"
        );
    }
}
