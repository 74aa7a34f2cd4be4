//! Every example in docs/ parses, validates and passes the example config's policy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use std::path::{Path, PathBuf};

use agent_config::config;
use agent_config::jobspec::{self, JobKind};

/// The docs folder, relative to the crate's manifest; adjust when the crate moves.
const DOCS_DIR: &str = "../docs";

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(DOCS_DIR)
}

fn example_config() -> config::Config {
    config::load(&docs().join("examples/agent.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn job_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(docs().join("examples/jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_example_config_is_valid_and_complete() {
    let config = example_config();
    assert_eq!(config.agent.name, "build-01");
    assert_eq!(config.agent.concurrency, 2);
    assert_eq!(config.sources.len(), 3);
    assert_eq!(config.roles.environments.len(), 2);
    assert!(config.agent.metrics_address.is_some());
}

#[test]
fn every_example_job_parses_and_is_allowed_by_the_example_config() {
    let config = example_config();
    let files = job_files();
    assert!(files.len() >= 6, "{files:?}");
    let mut kinds = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let job = jobspec::parse(&bytes).unwrap_or_else(|e| {
            panic!(
                "{}:\n{}",
                file.display(),
                e.render(&file.display().to_string())
            )
        });
        let resolved = jobspec::check_policy(&job, &config).unwrap_or_else(|v| {
            panic!(
                "{}: {}",
                file.display(),
                v.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert!(resolved.timeout <= config.jobs.max_timeout);
        kinds.push(job.kind);
    }
    assert!(kinds.contains(&JobKind::Build) && kinds.contains(&JobKind::Deploy));
}

#[test]
fn example_jobs_round_trip() {
    for file in job_files() {
        let job = jobspec::parse(&std::fs::read(&file).unwrap()).unwrap();
        let again = jobspec::parse(job.to_json().as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), job.to_json()));
        assert_eq!(job, again, "{}", file.display());
    }
}

#[test]
fn the_example_config_round_trips() {
    let config = example_config();
    let text = config.to_toml().unwrap();
    let again = config::parse(&text, "round-trip.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config, again);
    assert!(config::live_changes(&config, &again).is_empty());
}
