//! Buildspecs as real repositories write them, accepted as CodeBuild accepts them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use common::{Exec, Project, agent, run_local};

/// AWS's own CI repositories keep a top-level buildspec that only lists the builds, each
/// with a buildspec of its own, and no `phases`.
const BATCH_ONLY: &str = "version: 0.2\nbatch:\n  fast-fail: false\n  build-list:\n    - identifier: unit\n      buildspec: ci/unit.yml\n    - identifier: lint\n      buildspec: ci/lint.yml\n";

fn batch_only_project() -> Project {
    let p = Project::new(BATCH_ONLY);
    for name in ["unit", "lint"] {
        p.write(
            &format!("ci/{name}.yml"),
            &format!("version: 0.2\nphases:\n  build:\n    commands:\n      - echo {name} ran\n"),
        );
    }
    p
}

#[test]
fn a_batch_whose_members_name_their_buildspecs_needs_no_phases() {
    let p = batch_only_project();
    let out = agent()
        .arg("validate")
        .arg(p.path().join("buildspec.yml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let run = run_local(&p, Exec::Host, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.status(), "SUCCEEDED", "{}", run.summary);
    for name in ["unit", "lint"] {
        assert!(
            run.stdout.contains(&format!("[{name}] {name} ran")),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn a_batch_member_that_would_run_a_buildspec_without_phases_is_named() {
    let p = Project::new(
        "version: 0.2\nbatch:\n  build-list:\n    - identifier: unit\n      buildspec: ci/unit.yml\n    - identifier: same\n",
    );
    let out = agent()
        .arg("validate")
        .arg(p.path().join("buildspec.yml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("buildspec.yml:2:1"), "{text}");
    assert!(
        text.contains("batch member `same` would run it: it would run nothing"),
        "{text}"
    );
    // A fan-out runs this very buildspec in every member: phases stay required.
    let p = Project::new("version: 0.2\nbatch:\n  build-fanout:\n    parallelism: 2\n");
    let run = run_local(&p, Exec::Host, &[]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("every member of this batch runs it"),
        "{}",
        run.stderr
    );
}
