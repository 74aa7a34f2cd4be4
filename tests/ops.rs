//! What an operator reads first: the version of what is installed, and a host that lacks
//! something told what to install.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use common::{Project, agent, repo_root};

#[test]
fn the_version_names_the_commit_and_the_build_date() {
    let out = agent().arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    assert!(
        text.starts_with(&format!("agent {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    if !head.trim().is_empty() {
        assert!(text.contains(&format!("commit {}", head.trim())), "{text}");
    }
    let date = text.split("built ").nth(1).unwrap().trim_end_matches(")\n");
    assert_eq!(date.len(), 10, "{text}");
    assert!(date.starts_with("20"), "{text}");
    let same = agent().arg("version").output().unwrap();
    assert_eq!(String::from_utf8(same.stdout).unwrap(), text);
}

#[test]
fn a_host_without_ca_certificates_is_told_what_to_install() {
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo hi\n");
    let empty = tempfile::tempdir().unwrap();
    let out = agent()
        .args([
            "run-local",
            "--executor",
            "host",
            "--logs",
            "s3://bucket/prefix",
        ])
        .arg("--source")
        .arg(p.path())
        .env("SSL_CERT_FILE", empty.path().join("none.pem"))
        .env("SSL_CERT_DIR", empty.path())
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "a panic: {stderr}");
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no CA certificates"), "{stderr}");
    assert!(
        stderr.contains("apt-get install ca-certificates"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
