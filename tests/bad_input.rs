//! The bad-input corpus (tests/corpus, written by tests/corpus/generate.py): every
//! malformed buildspec, appspec, JobSpec and config is refused with exit code 2 and a
//! message that points at a line and column inside the file and says how to fix it;
//! never a panic, never a hang.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{agent, repo_root};

/// Each kind: its folder, the command that checks one file.
const KINDS: &[(&str, &[&str])] = &[
    (
        "buildspec",
        &["validate", "--kind", "buildspec", "--color", "never"],
    ),
    (
        "appspec",
        &["validate", "--kind", "appspec", "--color", "never"],
    ),
    ("jobspec", &["job", "check"]),
    ("config", &["config", "check"]),
];

#[test]
fn every_bad_input_gets_a_positioned_error_and_exit_2() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (kind, command) in KINDS {
        let dir = repo_root().join("tests/corpus").join(kind);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert!(files.len() >= 40, "{kind}: only {} files", files.len());
        for name in files {
            if let Err(why) = check(&dir, command, &name) {
                failures.push(format!("{kind}/{name}: {why}"));
            }
            checked += 1;
        }
    }
    assert!(checked >= 200, "the corpus holds {checked} files");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn check(dir: &Path, command: &[&str], name: &str) -> Result<(), String> {
    let started = Instant::now();
    let mut child = agent()
        .args(command)
        .arg(name)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A hang is a failure: kill it rather than wait forever.
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("still running after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.code() != Some(2) {
        return Err(format!("exit {:?}, not 2:\n{text}", output.status.code()));
    }
    if text.contains("panicked") {
        return Err(format!("panicked:\n{text}"));
    }
    let content = std::fs::read(dir.join(name)).unwrap();
    let lines = content.split(|&b| b == b'\n').count();
    let positions = positions(&text, name);
    if positions.is_empty() {
        return Err(format!("no `{name}:line:column` in:\n{text}"));
    }
    for (line, column) in positions {
        if line == 0 || line > lines || column == 0 {
            return Err(format!(
                "position {line}:{column} is outside the file ({lines} lines):\n{text}"
            ));
        }
    }
    if !text.contains("help:") && !text.contains("hint:") {
        return Err(format!("no hint on how to fix it:\n{text}"));
    }
    Ok(())
}

/// Every `name:line:column` in `text`.
fn positions(text: &str, name: &str) -> Vec<(usize, usize)> {
    let prefix = format!("{name}:");
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&prefix) {
        rest = &rest[at + prefix.len()..];
        let mut numbers = rest.splitn(3, ':');
        let line = numbers.next().and_then(|n| n.parse().ok());
        let column = numbers
            .next()
            .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            found.push((line, column));
        }
    }
    found
}
