//! `live_changes`: which edits apply at once and which restart the job sources.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use agent_config::config::{self, Config, Reloads};

const BASE: &str = r#"
version = 1
[agent]
name = "build-01"
concurrency = 2
metrics_address = "127.0.0.1:9095"
[jobs]
allowed_images = ["agent-*"]
[roles]
allowed = ["arn:aws:iam::123456789012:role/deploy-*"]
[[sources]]
type = "spool"
path = "/var/lib/agent/spool"
"#;

fn with(from: &str, to: &str) -> Config {
    assert!(BASE.contains(from), "{from}");
    config::parse(&BASE.replacen(from, to, 1), "agent.toml").unwrap()
}

fn base() -> Config {
    config::parse(BASE, "agent.toml").unwrap()
}

#[test]
fn nothing_changed() {
    let reload = config::live_changes(&base(), &base());
    assert!(reload.is_empty());
    assert!(!reload.needs_restart());
}

#[test]
fn live_values_do_not_restart() {
    let new = with(
        "concurrency = 2",
        "concurrency = 4\nlabels = { team = \"web\" }",
    );
    let reload = config::live_changes(&base(), &new);
    assert_eq!(reload.live, ["agent.concurrency", "agent.labels"]);
    assert!(!reload.needs_restart());

    let new = with(
        "[\"agent-*\"]",
        "[\"agent-*\", \"registry.example.com/**\"]\nmax_timeout = \"4h\"",
    );
    let reload = config::live_changes(&base(), &new);
    assert_eq!(reload.live, ["jobs.max_timeout", "jobs.allowed_images"]);
    assert!(reload.restart.is_empty());

    let new = with(
        "role/deploy-*\"]",
        "role/deploy-*\", \"arn:aws:iam::123456789012:role/ci\"]",
    );
    assert_eq!(config::live_changes(&base(), &new).live, ["roles.allowed"]);
}

#[test]
fn sources_and_listeners_restart() {
    let new = with("/var/lib/agent/spool", "/srv/spool");
    let reload = config::live_changes(&base(), &new);
    assert_eq!(reload.restart, ["sources"]);
    assert!(reload.needs_restart());

    let new = with("127.0.0.1:9095", "127.0.0.1:9096");
    assert_eq!(
        config::live_changes(&base(), &new).restart,
        ["agent.metrics_address"]
    );

    let new = with(
        "concurrency = 2",
        "concurrency = 3\nwork_dir = \"/srv/work\"\nstate_dir = \"/srv/state\"",
    );
    let reload = config::live_changes(&base(), &new);
    assert!(reload.restart.is_empty());
    assert_eq!(reload.process, ["agent.work_dir", "agent.state_dir"]);
    assert_eq!(reload.live, ["agent.concurrency"]);
    assert!(!reload.needs_restart());

    let new = config::parse(
        &format!("{BASE}\n[aws]\nregion = \"eu-west-1\"\n"),
        "agent.toml",
    )
    .unwrap();
    assert_eq!(config::live_changes(&base(), &new).restart, ["aws.region"]);
}

#[test]
fn every_field_has_a_reload_class() {
    for (field, how) in config::FIELDS {
        assert_eq!(config::reloads(field), Some(*how));
    }
    assert_eq!(config::reloads("sources"), Some(Reloads::Restart));
    assert_eq!(config::reloads("agent.concurrency"), Some(Reloads::Live));
    assert_eq!(config::reloads("agent.name"), Some(Reloads::Process));
    assert_eq!(config::reloads("nope"), None);
}
