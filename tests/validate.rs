//! `agent validate` driven as a user drives it: the real binary, real files, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agent"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../buildspec/tests/fixtures")
}

fn fixture_files(dir: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["buildspec", "appspec"] {
        for entry in std::fs::read_dir(fixtures().join(dir).join(kind)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    files.sort();
    files
}

fn validate(args: &[&str], files: &[PathBuf]) -> Output {
    agent()
        .arg("validate")
        .args(args)
        .args(files)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn valid_fixtures_exit_zero() {
    let files = fixture_files("valid");
    let output = validate(&["--color", "never"], &files);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let text = stdout(&output);
    assert_eq!(text.matches(": valid ").count(), files.len(), "{text}");
}

#[test]
fn each_invalid_fixture_exits_two_with_its_location() {
    for file in fixture_files("invalid") {
        let output = validate(&["--color", "never"], std::slice::from_ref(&file));
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(2), "{}: {text}", file.display());
        let located = format!(" --> {}:", file.display());
        assert!(text.contains(&located), "{}: {text}", file.display());
        assert!(text.contains("error["), "{text}");
        assert!(text.contains("= help: "), "{text}");
        assert!(text.contains(": invalid "), "{text}");
    }
}

#[test]
fn human_output_shows_the_line_and_a_caret() {
    let file = fixtures().join("invalid/buildspec/command-is-mapping.yml");
    let output = validate(&["--color", "never"], std::slice::from_ref(&file));
    let text = stdout(&output);
    let expected = format!(
        "error[command-is-mapping]: a command in `phases.build.commands` was read as a mapping, not as a command\n --> {}:5:9\n",
        file.display()
    );
    assert!(text.contains(&expected), "{text}");
    assert!(
        text.contains("5 |       - echo Build started on: $(date)\n"),
        "{text}"
    );
    assert!(
        text.contains("  |         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"),
        "{text}"
    );
    assert!(text.contains("= help: YAML reads `: ` as a key and value: quote the whole command, e.g. `- 'echo Build started on: $(date)'`"), "{text}");
    assert!(text.contains("(2 errors, 0 warnings)"), "{text}");
}

#[test]
fn json_output_lists_every_diagnostic() {
    let good = fixtures().join("valid/buildspec/minimal-build-only.yml");
    let bad = fixtures().join("invalid/buildspec/exported-variables.yml");
    let output = validate(&["--format", "json"], &[good.clone(), bad.clone()]);
    assert_eq!(output.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let files = report["files"].as_array().unwrap();
    assert_eq!(files[0]["valid"], true);
    assert_eq!(files[0]["kind"], "buildspec");
    assert_eq!(files[1]["valid"], false);
    assert_eq!(files[1]["errors"], 4);
    let first = &files[1]["diagnostics"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["code"], "exported-variable");
    assert_eq!(first["line"], 8);
    assert_eq!(first["column"], 7);
    assert_eq!(first["end"]["line"], 8);
    assert_eq!(first["end"]["column"], 17);
    assert!(first["hint"].as_str().unwrap().contains("export"));
}

#[test]
fn warnings_alone_keep_the_exit_code_zero() {
    let file = fixtures().join("warnings/buildspec/multiline-command.yml");
    let output = validate(&["--color", "never"], std::slice::from_ref(&file));
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.contains("warning[multiline-command]"), "{text}");
    assert!(text.contains("(0 errors, 1 warning)"), "{text}");
}

#[test]
fn kind_can_be_forced() {
    let file = fixtures().join("valid/appspec/minimal-linux.yml");
    let output = validate(
        &["--kind", "buildspec", "--format", "json"],
        std::slice::from_ref(&file),
    );
    assert_eq!(output.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["files"][0]["kind"], "buildspec");
}

#[test]
fn standard_input_is_read_with_a_dash() {
    let mut child = agent()
        .args(["validate", "--color", "never", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"version: 0.2\nphases:\n  build:\n    commands:\n      - make\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("-: valid buildspec"));
}

#[test]
fn unreadable_and_non_utf8_files_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yml");
    let binary = dir.path().join("binary.yml");
    std::fs::write(&binary, b"version: 0.2\n\xff\xfe").unwrap();
    let output = validate(&["--color", "never"], &[missing.clone(), binary.clone()]);
    assert_eq!(output.status.code(), Some(2));
    let text = stdout(&output);
    assert!(
        text.contains(&format!("error: cannot read {}", missing.display())),
        "{text}"
    );
    assert!(
        text.contains("it is not UTF-8 text (invalid byte at offset 13)"),
        "{text}"
    );
}

#[test]
fn bad_flags_are_bad_input() {
    let output = agent()
        .args(["validate", "--format", "xml", "x.yml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = agent().arg("validate").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn version_prints_the_version() {
    let output = agent().arg("version").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    // The commit and build date follow (see tests/ops.rs).
    assert!(
        stdout(&output).starts_with(&format!("agent {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{}",
        stdout(&output)
    );
}
