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

fn validate(name: &str, text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let out = agent()
        .args(["validate", "--color", "never"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_block_of_commands_is_never_rewritten_by_a_hint() {
    // `commands: |` is one command; the hint must not turn its `\` continuations into
    // something else.
    let (_, text) = validate(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: |\n      docker build \\\n        -t app \\\n        .\n",
    );
    assert!(text.contains("should be a list"), "{text}");
    assert!(text.contains("`- |`"), "{text}");
    assert!(!text.contains("\\\\"), "{text}");
}

#[test]
fn multi_line_commands_are_warned_about_only_where_splitting_them_is_right() {
    let quiet = [
        "cat > app.conf <<EOF\n        port=80\n        EOF\n        make",
        "if [ -f x ]; then\n          make\n          make test\n        fi",
        "for d in a b; do\n          make -C $d\n        done\n        make all",
    ];
    for script in quiet {
        let (code, text) = validate(
            "buildspec.yml",
            &format!(
                "version: 0.2\nphases:\n  build:\n    commands:\n      - |\n        {script}\n"
            ),
        );
        assert_eq!(code, 0, "{text}");
        assert!(!text.contains("multiline-command"), "{script}: {text}");
    }
    let (_, text) = validate(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - |\n        make\n        make test\n",
    );
    assert!(text.contains("multiline-command"), "{text}");
}

#[test]
fn appspecs_of_every_platform_are_read_as_their_platform_writes_them() {
    // ECS and Lambda spell it `Hooks`: no hint to lower-case it.
    let (_, text) = validate(
        "appspec.yml",
        "version: 0.0\nResources:\n  - myLambda:\n      Type: AWS::Lambda::Function\nHooks:\n  - BeforeAllowTraffic: check\n",
    );
    assert!(text.contains("ECS or Lambda"), "{text}");
    assert!(!text.contains("did you mean `hooks`"), "{text}");
    // A hook that lost its indentation would never run.
    let (code, text) = validate(
        "appspec.yml",
        "version: 0.0\nos: linux\nhooks:\nAfterInstall:\n  - location: scripts/after.sh\n",
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("appspec.yml:4:1"), "{text}");
    assert!(text.contains("this hook would never run"), "{text}");
}
