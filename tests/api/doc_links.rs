//! The README and the guide link to what exists: every relative link in the
//! repository's own Markdown files names a file that is there, and every
//! `#anchor` a heading of that file (GitHub's anchor rules).

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The repository's own Markdown files: the top level, `docs/`, `bench/`
/// and the crates (not `node_modules`, not `target`).
fn markdown_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["", "docs", "bench", "crates/rpcguard"] {
        let Ok(entries) = std::fs::read_dir(Path::new(ROOT).join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// GitHub's anchor of a heading: lower case, punctuation but `-` and `_`
/// dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut inside_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            inside_code = !inside_code;
        } else if !inside_code && line.starts_with('#') {
            found.push(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// `(target)` of every `[text](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut inside_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            inside_code = !inside_code;
            continue;
        }
        if inside_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_relative_link_and_anchor_exists() {
    let files = markdown_files();
    assert!(files.len() >= 10, "{files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for link in links(&text) {
            if link.starts_with("http://")
                || link.starts_with("https://")
                || link.starts_with("mailto:")
            {
                continue;
            }
            let (path, fragment) = match link.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("dir").join(path)
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", file.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let heads = anchors(&std::fs::read_to_string(&target).unwrap_or_default());
                if !heads.iter().any(|h| h == fragment) {
                    broken.push(format!("{}: {link} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_fits_the_first_hour() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README");
    let lines: Vec<&str> = readme.lines().collect();
    assert!(lines.len() <= 400, "README.md has {} lines", lines.len());
    let own_methods = lines
        .iter()
        .position(|l| l.starts_with("## Secure your own methods"))
        .expect("the section");
    assert!(
        own_methods < 150,
        "\"Secure your own methods\" at line {own_methods}"
    );
    for file in [
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "CHANGELOG.md",
        "SECURITY.md",
        "CONTRIBUTING.md",
    ] {
        assert!(Path::new(ROOT).join(file).is_file(), "{file}");
    }
}

/// The configuration table (docs/configuration.md) is `rpcguard serve
/// --help`'s: every flag there is in the table, with the same environment
/// variable, and every row has its four cells.
#[test]
fn the_configuration_table_matches_the_help() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["serve", "--help"])
        .output()
        .expect("rpcguard serve --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    // flag → env, from the help text (an option's description may span
    // lines; its `[env: …]` ends it).
    let mut from_help = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--") {
            let flag = rest.split([' ', '=']).next().unwrap_or_default();
            if flag != "help" {
                current = Some(format!("--{flag}"));
                from_help.insert(format!("--{flag}"), None);
            }
        }
        if let (Some(flag), Some(at)) = (&current, line.find("[env: ")) {
            let env = line[at + 6..]
                .split([']', '='])
                .next()
                .unwrap_or_default()
                .to_owned();
            from_help.insert(flag.clone(), Some(env));
        }
    }
    assert!(from_help.len() > 40, "{from_help:?}");
    let table =
        std::fs::read_to_string(Path::new(ROOT).join("docs/configuration.md")).expect("read");
    let mut rows = std::collections::BTreeMap::new();
    for line in table.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 4, "four cells: {line}");
        let flag = cells[0].trim().trim_matches('`').to_owned();
        let env = cells[1].trim().trim_matches('`').to_owned();
        rows.insert(flag, env);
    }
    for (flag, env) in &from_help {
        let documented = rows
            .get(flag)
            .unwrap_or_else(|| panic!("{flag} is not in docs/configuration.md"));
        if let Some(env) = env {
            assert_eq!(documented, env, "{flag}'s variable");
        }
    }
}

/// Every source file of the two libraries (and every folder of them) is
/// named in CONTRIBUTING.md's Layout, so the description cannot fall
/// behind the tree.
#[test]
fn the_layout_names_every_source_file() {
    let contributing =
        std::fs::read_to_string(Path::new(ROOT).join("CONTRIBUTING.md")).expect("CONTRIBUTING.md");
    let layout = contributing
        .split("## Layout")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Layout section");
    let mut missing = Vec::new();
    for root in ["src", "crates/rpcguard/src"] {
        let mut dirs = vec![Path::new(ROOT).join(root)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("dir").flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    if !layout.contains(&format!("{name}/")) {
                        missing.push(path.display().to_string());
                    }
                    dirs.push(path);
                } else if name.ends_with(".rs")
                    && !["lib.rs", "mod.rs"].contains(&name.as_str())
                    && !layout.contains(&name)
                {
                    missing.push(path.display().to_string());
                }
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "CONTRIBUTING.md's Layout does not name:\n{}",
        missing.join("\n")
    );
}
