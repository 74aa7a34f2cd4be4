//! `agent run-local` end to end, on both executors: the real binary, a real Docker engine
//! with the busybox test image, real shells. Each case is aws-spec §1.4 / §6 behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use common::{Exec, Project, containers_of, run_local};

/// Runs `case` once on the host executor and once in a container.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod host {
            $(#[test] fn $name() { super::$name(super::Exec::Host) })*
        }
        mod docker {
            $(#[test] fn $name() { super::$name(super::Exec::Docker) })*
        }
    };
}

both!(
    state_carries_across_commands_and_phases,
    version_0_1_runs_each_command_in_a_fresh_shell,
    commands_read_nothing_from_stdin,
    exit_ends_the_command_and_a_new_shell_goes_on,
    install_failure_skips_to_finalizing,
    build_failure_still_runs_post_build_and_upload,
    post_build_failure_still_uploads,
    finally_runs_after_a_failure_and_can_fail_the_phase,
    on_failure_abort_skips_everything_after,
    on_failure_continue_goes_on_but_the_build_fails,
    on_failure_retry_runs_the_phase_again,
    on_failure_retry_regex_only_retries_matching_failures,
    timeout_kills_everything_and_reports_timed_out,
    exported_variables_reach_the_summary,
    secrets_are_masked_everywhere,
    env_precedence_is_buildspec_then_env_file_then_cli,
    builtin_variables_are_set,
    runtime_versions_give_the_codebuild_warning,
    bash_is_used_when_asked,
    artifacts_are_laid_out_as_codebuild_does,
    unmatched_artifact_patterns_fail_upload,
    artifacts_never_leave_the_source,
    reports_are_counted_and_copied,
    cache_is_restored_by_key_and_fallback,
    a_multiline_command_counts_only_its_last_status,
    plain_retry_and_retry_regex_forms,
);

fn state_carries_across_commands_and_phases(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  install:\n    commands:\n      - mkdir -p sub && cd sub\n      - export CARRIED=yes\n      - greet() { echo \"hello $1\"; }\n      - LOCAL=shellvar\n  build:\n    commands:\n      - echo \"cwd=$(basename $PWD)\"\n      - echo \"carried=$CARRIED local=$LOCAL\"\n      - greet world\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("cwd=sub"), "{}", run.stdout);
    assert!(run.printed("carried=yes local=shellvar"), "{}", run.stdout);
    assert!(run.printed("hello world"), "{}", run.stdout);
    assert_eq!(run.status(), "SUCCEEDED");
}

fn version_0_1_runs_each_command_in_a_fresh_shell(exec: Exec) {
    let p = Project::new(
        "version: 0.1\nenvironment_variables:\n  plaintext:\n    FROM_SPEC: spec\nphases:\n  build:\n    commands:\n      - mkdir -p sub && cd sub && export X=1\n      - echo \"top=$(test $PWD = $CODEBUILD_SRC_DIR && echo yes) x=[$X] spec=$FROM_SPEC\"\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("top=yes x=[] spec=spec"), "{}", run.stdout);
}

fn commands_read_nothing_from_stdin(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - cat; echo \"cat ended $?\"\n      - read line; echo \"read=[$line] rc=$?\"\n      - echo still-here\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("cat ended 0"), "{}", run.stdout);
    assert!(run.printed("read=[] rc=1"), "{}", run.stdout);
    assert!(run.printed("still-here"), "{}", run.stdout);
}

fn exit_ends_the_command_and_a_new_shell_goes_on(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - export GONE=1; exit 7\n      - echo not-run\n    finally:\n      - echo \"finally gone=[$GONE]\"\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("Command did not exit successfully export GONE=1; exit 7 exit status 7"),
        "{}",
        run.stdout
    );
    assert!(!run.printed("not-run"));
    assert!(run.printed("finally gone=[]"), "{}", run.stdout);
    assert_eq!(run.phase_status("BUILD").as_deref(), Some("FAILED"));
    assert_eq!(
        run.phase("BUILD").unwrap()["message"],
        "Error while executing command: export GONE=1; exit 7. Reason: exit status 7"
    );
}

fn install_failure_skips_to_finalizing(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  install:\n    commands:\n      - false\n  pre_build:\n    commands:\n      - echo pre\n  build:\n    commands:\n      - echo build\n  post_build:\n    commands:\n      - echo post\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.phase_names(),
        ["DOWNLOAD_SOURCE", "INSTALL", "FINALIZING"]
    );
    assert_eq!(run.status(), "FAILED");
    assert!(run.output_lines().is_empty(), "{}", run.stdout);
}

fn build_failure_still_runs_post_build_and_upload(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"during build $CODEBUILD_BUILD_SUCCEEDING\"\n      - exit 2\n  post_build:\n    commands:\n      - echo \"post_build sees $CODEBUILD_BUILD_SUCCEEDING\"\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 1);
    assert!(run.printed("during build 1"), "{}", run.stdout);
    assert!(run.printed("post_build sees 0"), "{}", run.stdout);
    assert_eq!(
        run.phase_names(),
        [
            "DOWNLOAD_SOURCE",
            "BUILD",
            "POST_BUILD",
            "UPLOAD_ARTIFACTS",
            "FINALIZING"
        ]
    );
    assert_eq!(run.phase_status("POST_BUILD").as_deref(), Some("SUCCEEDED"));
    assert_eq!(run.status(), "FAILED");
}

fn post_build_failure_still_uploads(exec: Exec) {
    let p = Project::new("version: 0.2\nphases:\n  post_build:\n    commands:\n      - false\n");
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.phase_status("UPLOAD_ARTIFACTS").as_deref(),
        Some("SUCCEEDED")
    );
    assert_eq!(run.phase_status("POST_BUILD").as_deref(), Some("FAILED"));
}

fn finally_runs_after_a_failure_and_can_fail_the_phase(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  pre_build:\n    commands:\n      - echo one\n      - false\n      - echo skipped\n    finally:\n      - echo cleanup\n  build:\n    commands:\n      - echo never\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.output_lines(), ["one", "cleanup"], "{}", run.stdout);
    assert_eq!(
        run.phase_names(),
        ["DOWNLOAD_SOURCE", "PRE_BUILD", "FINALIZING"]
    );

    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo fine\n    finally:\n      - exit 4\n      - echo not-after-failure\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.phase_status("BUILD").as_deref(), Some("FAILED"));
    assert!(!run.printed("not-after-failure"));
}

fn on_failure_abort_skips_everything_after(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    on-failure: ABORT\n    commands:\n      - false\n  post_build:\n    commands:\n      - echo post\nartifacts:\n  files:\n    - '**/*'\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.phase_names(),
        ["DOWNLOAD_SOURCE", "BUILD", "FINALIZING"]
    );
    assert!(!run.printed("post"));
}

fn on_failure_continue_goes_on_but_the_build_fails(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  pre_build:\n    on-failure: CONTINUE\n    commands:\n      - false\n  build:\n    commands:\n      - echo \"build runs, succeeding=$CODEBUILD_BUILD_SUCCEEDING\"\n",
    );
    let run = run_local(&p, exec, &[]);
    assert!(run.printed("build runs, succeeding=0"), "{}", run.stdout);
    assert_eq!(run.phase_status("BUILD").as_deref(), Some("SUCCEEDED"));
    assert_eq!(run.status(), "FAILED");
    assert_eq!(run.code, 1);
}

fn on_failure_retry_runs_the_phase_again(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    on-failure: RETRY-3\n    commands:\n      - echo x >> attempts\n      - test $(wc -l < attempts) -ge 3\n    finally:\n      - echo \"attempt $(wc -l < attempts) done\"\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        run.output_lines(),
        ["attempt 1 done", "attempt 2 done", "attempt 3 done"],
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Phase BUILD failed: retrying, attempt 2 of 3"),
        "{}",
        run.stdout
    );
    assert_eq!(run.status(), "SUCCEEDED");
}

fn on_failure_retry_regex_only_retries_matching_failures(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    on-failure: RETRY-5-.*connection refused.*\n    commands:\n      - echo x >> attempts\n      - 'echo \"error: disk full\"; false'\n",
    );
    let run = run_local(&p, exec, &["--bind"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        std::fs::read_to_string(p.path().join("attempts")).unwrap(),
        "x\n"
    );

    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    on-failure: RETRY-2-.*connection refused.*\n    commands:\n      - echo x >> attempts\n      - 'echo \"dial tcp: connection refused\"; false'\n",
    );
    let run = run_local(&p, exec, &["--bind"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        std::fs::read_to_string(p.path().join("attempts")).unwrap(),
        "x\nx\nx\n"
    );
}

fn timeout_kills_everything_and_reports_timed_out(exec: Exec) {
    // A duration no other test sleeps: `ps` below must find this test's processes only,
    // and the Docker variant's (running beside it) show in the host's `ps` too.
    let nap = match exec {
        Exec::Host => 313,
        Exec::Docker => 311,
    };
    let p = Project::new(&format!(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - (sleep {nap}; echo leaked > leaked) &\n      - echo started\n      - sleep {nap}\n  post_build:\n    commands:\n      - echo never\n",
    ));
    let started = std::time::Instant::now();
    let run = run_local(&p, exec, &["--timeout", "2s"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.status(), "TIMED_OUT");
    assert_eq!(run.phase_status("BUILD").as_deref(), Some("TIMED_OUT"));
    assert_eq!(
        run.phase_names(),
        ["DOWNLOAD_SOURCE", "BUILD", "FINALIZING"]
    );
    let build_id = run.summary["build_id"].as_str().unwrap();
    if exec == Exec::Docker {
        assert!(containers_of(build_id).is_empty());
    } else {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        let sleeping = format!("sleep {nap}");
        assert!(
            !String::from_utf8_lossy(&ps.stdout)
                .lines()
                .any(|l| l.trim() == sleeping)
        );
    }
}

fn exported_variables_reach_the_summary(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nenv:\n  variables:\n    FROM_SPEC: initial\n  exported-variables:\n    - IMAGE_TAG\n    - FROM_SPEC\n    - NEVER_SET\nphases:\n  build:\n    commands:\n      - export IMAGE_TAG=\"v1 with spaces\"\n      - FROM_SPEC=changed\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        run.summary["exported_variables"]["IMAGE_TAG"],
        "v1 with spaces"
    );
    assert_eq!(run.summary["exported_variables"]["FROM_SPEC"], "changed");
    assert!(run.summary["exported_variables"].get("NEVER_SET").is_none());
}

fn secrets_are_masked_everywhere(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nenv:\n  exported-variables:\n    - LEAK\nphases:\n  build:\n    commands:\n      - echo \"plain $TOKEN\"\n      - printf 'split %s' \"$TOKEN\" | fold -w 5\n      - export LEAK=\"x${TOKEN}y\"\n      - echo \"$TOKEN\" | base64\n      - echo \"$TOKEN\" && false\n",
    );
    p.write("secrets.env", "FILE_SECRET=another-very-secret\n");
    let secret = "Sup3r-S3cret-Value";
    let run = run_local(
        &p,
        exec,
        &[
            "--secret",
            &format!("TOKEN={secret}"),
            "--secret-file",
            p.path().join("secrets.env").to_str().unwrap(),
        ],
    );
    assert!(run.printed("plain ***"), "{}", run.stdout);
    let build_id = run.summary["build_id"].as_str().unwrap().to_string();
    let log = std::fs::read_to_string(p.log_file(&build_id)).unwrap();
    let summary = run.summary.to_string();
    for (name, text) in [
        ("stdout", &run.stdout),
        ("log file", &log),
        ("summary", &summary),
    ] {
        assert!(!text.contains(secret), "{name} leaks the secret:\n{text}");
        assert!(
            !text.contains("U3VwMy1TM2NyZXQtVmFsdW"),
            "{name} leaks the base64 form:\n{text}"
        );
    }
    assert!(log.contains("plain ***"), "{log}");
    assert_eq!(run.summary["exported_variables"]["LEAK"], "x***y");
}

fn env_precedence_is_buildspec_then_env_file_then_cli(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nenv:\n  variables:\n    A: spec\n    B: spec\n    C: spec\n    NUMBER: 012345678901\n    LITERAL: \"$PATH:/x\"\nphases:\n  build:\n    commands:\n      - echo \"A=$A B=$B C=$C N=$NUMBER\"\n      - echo \"literal=$LITERAL\"\n",
    );
    p.write("vars.env", "# comment\nB=file\nC=file\n");
    let run = run_local(
        &p,
        exec,
        &[
            "--env-file",
            p.path().join("vars.env").to_str().unwrap(),
            "-e",
            "C=cli",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.printed("A=spec B=file C=cli N=012345678901"),
        "{}",
        run.stdout
    );
    assert!(run.printed("literal=$PATH:/x"), "{}", run.stdout);
}

fn builtin_variables_are_set(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"id=$CODEBUILD_BUILD_ID\"\n      - echo \"ci=$CODEBUILD_CI succeeding=$CODEBUILD_BUILD_SUCCEEDING\"\n      - echo \"src=$CODEBUILD_SRC_DIR pwd=$PWD\"\n      - echo \"start=$CODEBUILD_START_TIME\"\n      - echo \"sha=$CODEBUILD_RESOLVED_SOURCE_VERSION\"\n",
    );
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(p.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        String::from_utf8_lossy(&ok.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "buildspec.yml"]);
    git(&["commit", "-q", "-m", "x"]);
    let sha = git(&["rev-parse", "HEAD"]);
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let build_id = run.summary["build_id"].as_str().unwrap();
    assert!(build_id.starts_with("local:"));
    assert!(run.printed(&format!("id={build_id}")), "{}", run.stdout);
    assert!(run.printed("ci=true succeeding=1"), "{}", run.stdout);
    assert!(run.printed(&format!("sha={sha}")), "{}", run.stdout);
    let src_line = run
        .output_lines()
        .into_iter()
        .find(|l| l.starts_with("src="))
        .unwrap();
    let (src, pwd) = src_line
        .trim_start_matches("src=")
        .split_once(" pwd=")
        .unwrap();
    assert_eq!(src, pwd);
    if exec == Exec::Docker {
        assert!(
            src.starts_with("/codebuild/output/src") && src.ends_with("/src"),
            "{src}"
        );
    }
    let start = run
        .output_lines()
        .into_iter()
        .find(|l| l.starts_with("start="))
        .unwrap();
    let ms: u128 = start.trim_start_matches("start=").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(ms <= now && now - ms < 60_000, "{ms} vs {now}");
}

fn runtime_versions_give_the_codebuild_warning(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  install:\n    runtime-versions:\n      nodejs: 18.x\n    commands:\n      - echo installed\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Skipping install of runtimes. Runtime version selection is not supported by this build image"));
}

fn bash_is_used_when_asked(exec: Exec) {
    if exec == Exec::Docker {
        // The busybox test image has no bash; the standard image is covered by the example.
        return;
    }
    let p = Project::new(
        "version: 0.2\nenv:\n  shell: bash\nphases:\n  build:\n    commands:\n      - 'if [[ \"abc\" == a* ]]; then echo \"bash ${BASH_VERSION%%.*}\"; fi'\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.output_lines().iter().any(|l| l.starts_with("bash ")),
        "{}",
        run.stdout
    );
}

#[test]
fn invalid_buildspec_is_bad_input_and_runs_nothing() {
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo a: b\n");
    let run = run_local(&p, Exec::Host, &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("error[command-is-mapping]"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing ran"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn missing_buildspec_and_bad_flags_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::agent()
        .args(["run-local", "--executor", "host", "--source"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no buildspec at"));
    let out = common::agent()
        .args(["run-local", "--timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_image_cannot_run() {
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo hi\n");
    let out = common::agent()
        .args([
            "run-local",
            "--pull",
            "never",
            "--image",
            "agent-no-such-image:1",
        ])
        .arg("--source")
        .arg(p.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("image `agent-no-such-image:1` is not available"),
        "{stderr}"
    );
    assert!(stderr.contains("images/build-all.sh"), "{stderr}");
}

#[test]
fn unreachable_docker_cannot_run() {
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo hi\n");
    let out = common::agent()
        .args(["run-local", "--image", "agent-busybox:latest"])
        .arg("--source")
        .arg(p.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Docker engine is not reachable"),
        "{stderr}"
    );
}

#[test]
fn docker_ignores_the_image_entrypoint_and_labels_the_container() {
    let image = common::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {image}\nENTRYPOINT [\"/bin/false\"]\nENV FROM_IMAGE=image\n"),
    )
    .unwrap();
    let built = std::process::Command::new("docker")
        .args(["build", "-q", "-t", "agent-test-entrypoint:latest"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - 'echo \"from image: $FROM_IMAGE\"'\n      - echo \"pid1=$(cat /proc/1/comm)\"\n      - sleep 2\n",
    );
    let summary = p.path().join(".summary.json");
    let child = common::agent()
        .args([
            "run-local",
            "--image",
            "agent-test-entrypoint:latest",
            "--summary",
        ])
        .arg(&summary)
        .arg("--source")
        .arg(p.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While the build runs, its container carries both labels.
    let mut labelled = String::new();
    let mut host_config = String::new();
    let mut isolation_seen = String::new();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "--filter",
                "label=agent.job-id",
                "--filter",
                "ancestor=agent-test-entrypoint:latest",
                "--format",
                "{{.Label \"agent.job-id\"}} {{.Label \"agent.instance\"}}",
            ])
            .output()
            .unwrap();
        labelled = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !labelled.is_empty() {
            // Docker's init is PID 1, and the default limits apply.
            let inspect = std::process::Command::new("docker")
                .args([
                    "ps",
                    "-q",
                    "--filter",
                    "ancestor=agent-test-entrypoint:latest",
                ])
                .output()
                .unwrap();
            let id = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
            let config = std::process::Command::new("docker")
                .args(["inspect", "--format", "{{.HostConfig.Init}} {{.HostConfig.Privileged}} {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.NanoCpus}}", &id])
                .output()
                .unwrap();
            host_config = String::from_utf8_lossy(&config.stdout).trim().to_string();
            let isolation = std::process::Command::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{.HostConfig.CapDrop}}|{{.HostConfig.MemorySwap}}|{{range .Mounts}}{{.Source}};{{end}}",
                    &id,
                ])
                .output()
                .unwrap();
            isolation_seen = String::from_utf8_lossy(&isolation.stdout)
                .trim()
                .to_string();
            break;
        }
    }
    let run = common::finish(child.wait_with_output().unwrap(), &summary);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("from image: image"), "{}", run.stdout);
    let build_id = run.summary["build_id"].as_str().unwrap();
    assert!(labelled.starts_with(build_id), "labels seen: {labelled:?}");
    assert_eq!(host_config, "true false 4294967296 4096 2000000000");
    // Capabilities a build has no use for are dropped, there is no swap past the limit, and
    // nothing but the source is mounted (no Docker socket).
    let mut parts = isolation_seen.split('|');
    let mut dropped: Vec<String> = parts
        .next()
        .unwrap()
        .trim_matches(['[', ']'])
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    dropped.sort();
    assert_eq!(
        dropped,
        ["AUDIT_WRITE", "MKNOD", "NET_RAW", "SETFCAP"],
        "{isolation_seen}"
    );
    assert_eq!(parts.next(), Some("4294967296"), "{isolation_seen}");
    let mounts = parts.next().unwrap();
    assert!(!mounts.contains("docker.sock"), "{mounts}");
    assert_eq!(mounts.matches(';').count(), 1, "only the source: {mounts}");
    assert!(run.printed("pid1=docker-init"), "{}", run.stdout);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", "agent-test-entrypoint:latest"])
        .output();
    assert!(
        containers_of(build_id).is_empty(),
        "the container was left behind"
    );
}

#[test]
fn docker_run_as_switches_user_per_phase() {
    let p = Project::new(
        "version: 0.2\nrun-as: builder\nphases:\n  install:\n    run-as: root\n    commands:\n      - echo \"install uid=$(id -u)\"\n  build:\n    commands:\n      - echo \"build uid=$(id -u) home=$HOME\"\n",
    );
    let run = run_local(&p, Exec::Docker, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("install uid=0"), "{}", run.stdout);
    assert!(
        run.printed("build uid=1000 home=/home/builder"),
        "{}",
        run.stdout
    );
}

#[test]
fn ctrl_c_stops_the_command_runs_finally_and_reports_stopped() {
    for exec in [Exec::Host, Exec::Docker] {
        let p = Project::new(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - echo started\n      - sleep 60\n      - echo not-run\n    finally:\n      - echo finally-ran\n  post_build:\n    commands:\n      - echo not-post\n",
        );
        let (child, summary) = common::start_run_local(&p, exec, "Running command sleep 60");
        common::ctrl_c(&child);
        let run = common::finish(child.wait_with_output().unwrap(), &summary);
        assert_eq!(run.code, 1, "{exec:?}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.status(), "STOPPED", "{exec:?}: {}", run.stdout);
        assert!(run.printed("finally-ran"), "{exec:?}: {}", run.stdout);
        assert!(
            !run.printed("not-run") && !run.printed("not-post"),
            "{}",
            run.stdout
        );
        assert_eq!(run.phase_status("BUILD").as_deref(), Some("STOPPED"));
        let build_id = run.summary["build_id"].as_str().unwrap();
        if exec == Exec::Docker {
            assert!(containers_of(build_id).is_empty());
        }
    }
}

fn artifacts_are_laid_out_as_codebuild_does(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nenv:\n  variables:\n    VERSION: \"1.2\"\nphases:\n  build:\n    commands:\n      - mkdir -p my-build-1 my-build-2/my-subdirectory logs\n      - echo 1 > my-build-1/my-file-1.txt\n      - echo 2 > my-build-2/my-file-2.txt\n      - echo 3 > my-build-2/my-subdirectory/my-file-3.txt\n      - echo log > logs/build.log\nartifacts:\n  files:\n    - '**/*'\n  base-directory: 'my-build*'\n  discard-paths: yes\n  name: app-$VERSION-$(echo x)\n  secondary-artifacts:\n    nested:\n      files:\n        - '*/my-file-3.txt'\n      base-directory: my-build-2\n    logs:\n      files:\n        - logs/*\n      base-directory: $CODEBUILD_SRC_DIR\n",
    );
    let out = p.path().join("out");
    let run = run_local(&p, exec, &["--artifacts", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let files = |id: &str| -> Vec<String> {
        let mut found: Vec<String> = walkdir::WalkDir::new(out.join(id))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                e.path()
                    .strip_prefix(out.join(id))
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        found.sort();
        found
    };
    assert_eq!(
        files("primary"),
        ["my-file-1.txt", "my-file-2.txt", "my-file-3.txt"]
    );
    assert_eq!(files("nested"), ["my-subdirectory/my-file-3.txt"]);
    assert_eq!(files("logs"), ["logs/build.log"]);
    let artifacts = run.summary["artifacts"].as_array().unwrap();
    assert_eq!(artifacts[0]["identifier"], "primary");
    assert_eq!(artifacts[0]["name"], "app-1.2-x");
    assert_eq!(artifacts[0]["files"].as_array().unwrap().len(), 3);
}

fn unmatched_artifact_patterns_fail_upload(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo hi > present.txt\nartifacts:\n  files:\n    - present.txt\n    - target/*.jar\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.phase_status("UPLOAD_ARTIFACTS").as_deref(),
        Some("FAILED")
    );
    let message = run.phase("UPLOAD_ARTIFACTS").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("no matching artifact paths found for pattern 'target/*.jar'"),
        "{message}"
    );
    assert_eq!(run.status(), "FAILED");
}

fn artifacts_never_leave_the_source(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - ln -s /etc/passwd leak.txt\nartifacts:\n  files:\n    - leak.txt\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(
        run.phase_status("UPLOAD_ARTIFACTS").as_deref(),
        Some("FAILED")
    );
    assert!(!p.state_dir().join("artifacts/primary/leak.txt").exists());
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - 'true'\nartifacts:\n  files:\n    - '**/*'\n  base-directory: /etc\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 1);
    let message = run.phase("UPLOAD_ARTIFACTS").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("outside the build's source directories"),
        "{message}"
    );
}

fn reports_are_counted_and_copied(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p results\n      - printf '<testsuite><testcase name=\"a\"/><testcase name=\"b\"><failure message=\"x\"/></testcase><testcase name=\"c\"><skipped/></testcase></testsuite>' > results/junit.xml\n      - printf '[{\"elements\":[{\"type\":\"scenario\",\"steps\":[{\"result\":{\"status\":\"passed\"}}]}]}]' > results/cucumber.json\nreports:\n  unit:\n    files:\n      - '*.xml'\n    base-directory: results\n  features:\n    files:\n      - results/cucumber.json\n    file-format: cucumberjson\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let reports = run.summary["reports"].as_array().unwrap();
    assert_eq!(reports[0]["group"], "unit");
    assert_eq!(reports[0]["format"], "JUNITXML");
    assert_eq!(
        (
            reports[0]["total"].as_u64(),
            reports[0]["passed"].as_u64(),
            reports[0]["failed"].as_u64(),
            reports[0]["skipped"].as_u64()
        ),
        (Some(3), Some(1), Some(1), Some(1))
    );
    assert_eq!(reports[1]["format"], "CUCUMBERJSON");
    assert_eq!(reports[1]["passed"], 1);
    assert!(
        p.state_dir()
            .join("artifacts/reports/unit/junit.xml")
            .is_file()
    );
    assert!(
        run.stdout
            .contains("Report unit: 3 tests, 1 passed, 1 failed, 1 skipped"),
        "{}",
        run.stdout
    );
}

fn cache_is_restored_by_key_and_fallback(exec: Exec) {
    let spec = |key: &str| {
        format!(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - 'if [ -f deps/stamp ]; then echo \"restored $(cat deps/stamp)\"; else echo fresh; fi'\n      - mkdir -p deps && echo {key} > deps/stamp\ncache:\n  key: {key}\n  fallback-keys:\n    - deps-\n  paths:\n    - 'deps/**/*'\n"
        )
    };
    let p = Project::new(&spec("deps-one"));
    let cache = tempfile::tempdir().unwrap();
    let args = ["--cache-dir", cache.path().to_str().unwrap()];
    let run = run_local(&p, exec, &args);
    assert!(run.printed("fresh"), "{}", run.stdout);
    // Each build starts from a fresh copy of the source: only the cache brings deps back.
    assert!(!p.path().join("deps").exists());
    let run = run_local(&p, exec, &args);
    assert!(run.printed("restored deps-one"), "{}", run.stdout);
    assert!(
        run.stdout.contains("keyed entries are never replaced"),
        "{}",
        run.stdout
    );
    // Another key restores the newest entry that matches a fallback prefix.
    p.write("buildspec.yml", &spec("deps-two"));
    let run = run_local(&p, exec, &args);
    assert!(run.printed("restored deps-one"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Cache: saved 1 paths"),
        "{}",
        run.stdout
    );
}

#[test]
fn examples_build_as_documented() {
    let copy = |name: &str| {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(common::repo_root().join("examples").join(name).join("."))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        dir
    };
    let multi = copy("multi-artifact");
    let run = common::finish(
        common::agent()
            .args(["run-local", "--image", common::busybox_image(), "--summary"])
            .arg(multi.path().join("s.json"))
            .arg("--source")
            .arg(multi.path())
            .output()
            .unwrap(),
        &multi.path().join("s.json"),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("hello from the app, version 2.3.1"));
    let ids: Vec<&str> = run.summary["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["primary", "docs", "checksums"]);

    let failing = copy("failing-build");
    let run = common::finish(
        common::agent()
            .args(["run-local", "--image", common::busybox_image(), "--summary"])
            .arg(failing.path().join("s.json"))
            .arg("--source")
            .arg(failing.path())
            .output()
            .unwrap(),
        &failing.path().join("s.json"),
    );
    assert_eq!(run.code, 1);
    assert!(
        run.printed("tests failed: not publishing; notifying the team instead"),
        "{}",
        run.stdout
    );

    let python = copy("python-app");
    let image = common::standard_image();
    let cache = python.path().join(".cache-dir");
    let mut args = vec![
        "run-local",
        "--image",
        image,
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let summary = python.path().join("s.json");
    args.extend([
        "--summary",
        summary.to_str().unwrap(),
        "--source",
        python.path().to_str().unwrap(),
    ]);
    let run = common::finish(common::agent().args(&args).output().unwrap(), &summary);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.printed("dependencies prepared and cached"),
        "{}",
        run.stdout
    );
    assert_eq!(run.summary["reports"][0]["passed"], 4);
    assert_eq!(run.summary["reports"][0]["skipped"], 1);
    let run = common::finish(common::agent().args(&args).output().unwrap(), &summary);
    assert!(
        run.output_lines()
            .iter()
            .any(|l| l.starts_with("dependencies restored from the cache")),
        "{}",
        run.stdout
    );
}

#[test]
fn batch_graph_runs_members_in_order_with_their_own_environment() {
    let p = Project::new(
        "version: 0.2\nbatch:\n  build-graph:\n    - identifier: first\n      env:\n        variables:\n          STEP: one\n    - identifier: second\n      depend-on:\n        - first\n      buildspec: second.yml\n    - identifier: flaky\n      ignore-failure: true\n      env:\n        variables:\n          STEP: fail\nphases:\n  build:\n    commands:\n      - echo \"$CODEBUILD_BATCH_BUILD_IDENTIFIER step=$STEP\"\n      - echo done > marker\n      - '[ \"$STEP\" != fail ]'\nartifacts:\n  files:\n    - marker\n",
    );
    p.write("second.yml", "version: 0.2\nphases:\n  build:\n    commands:\n      - test ! -f marker\n      - echo \"second sees a fresh source\"\n");
    let run = run_local(&p, Exec::Docker, &["--parallel", "2"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.status(), "SUCCEEDED");
    let builds = run.summary["builds"].as_array().unwrap();
    let status: Vec<(&str, &str)> = builds
        .iter()
        .map(|b| {
            (
                b["identifier"].as_str().unwrap(),
                b["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        status,
        [
            ("first", "SUCCEEDED"),
            ("second", "SUCCEEDED"),
            ("flaky", "FAILED")
        ]
    );
    assert!(
        run.stdout.contains("[first] first step=one"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("[second] second sees a fresh source"),
        "{}",
        run.stdout
    );
    assert!(
        p.state_dir()
            .join("artifacts/first/primary/marker")
            .is_file()
    );
    assert!(
        !p.path().join("marker").exists(),
        "members must not write into the original source"
    );
}

#[test]
fn batch_fast_fail_stops_the_rest() {
    let p = Project::new(
        "version: 0.2\nbatch:\n  fast-fail: true\n  build-list:\n    - identifier: slow\n      env:\n        variables:\n          WAIT: \"30\"\n    - identifier: broken\n      env:\n        variables:\n          WAIT: fail\nphases:\n  build:\n    commands:\n      - '[ \"$WAIT\" != fail ]'\n      - sleep $WAIT\n",
    );
    let started = std::time::Instant::now();
    let run = run_local(&p, Exec::Host, &["--parallel", "2"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "fast-fail did not stop the slow build"
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.status(), "FAILED");
    let builds = run.summary["builds"].as_array().unwrap();
    assert_eq!(builds[0]["status"], "STOPPED", "{}", run.summary);
    assert_eq!(builds[1]["status"], "FAILED");
}

#[test]
fn batch_matrix_runs_every_combination() {
    let p = Project::new(
        "version: 0.2\nbatch:\n  build-matrix:\n    dynamic:\n      env:\n        variables:\n          OS:\n            - linux\n            - bsd\n          ARCH:\n            - amd64\n            - arm64\nphases:\n  build:\n    commands:\n      - echo \"combo $OS-$ARCH\"\n",
    );
    let run = run_local(&p, Exec::Host, &["--parallel", "2"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for combo in ["linux-amd64", "linux-arm64", "bsd-amd64", "bsd-arm64"] {
        assert!(
            run.stdout.contains(&format!("combo {combo}")),
            "{combo}: {}",
            run.stdout
        );
    }
    assert_eq!(run.summary["builds"].as_array().unwrap().len(), 4);
}

#[test]
fn host_run_as_switches_user() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    run-as: nobody\n    commands:\n      - echo \"uid=$(id -un)\"\n",
    );
    std::fs::set_permissions(
        p.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let run = run_local(&p, Exec::Host, &[]);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(run.printed("uid=nobody"), "{}", run.stdout);
    } else {
        assert_eq!(run.code, 1);
        assert!(
            run.stdout.contains("needs the agent to run as root"),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn secondary_sources_are_mounted_and_exported() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - cat \"$CODEBUILD_SRC_DIR_libs/lib.txt\"\n      - echo \"dir=$CODEBUILD_SRC_DIR_libs\"\n",
    );
    let libs = tempfile::tempdir().unwrap();
    std::fs::write(libs.path().join("lib.txt"), "library content\n").unwrap();
    let secondary = format!("libs={}", libs.path().display());
    let run = run_local(&p, Exec::Docker, &["--secondary-source", &secondary]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("library content"), "{}", run.stdout);
    let dir = run
        .output_lines()
        .into_iter()
        .find(|l| l.starts_with("dir="))
        .unwrap();
    assert!(
        dir.starts_with("dir=/codebuild/output/src") && dir.ends_with("/libs"),
        "{dir}"
    );
}

#[test]
fn quiet_and_json_logs() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo visible-output\n",
    );
    let run = run_local(&p, Exec::Host, &["--quiet"]);
    assert_eq!(run.code, 0);
    assert!(!run.printed("visible-output"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("Phase complete: BUILD State: SUCCEEDED")
    );
    let run = run_local(&p, Exec::Host, &["--json-logs"]);
    assert_eq!(run.code, 0);
    let records: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["origin"] == "output" && r["line"] == "visible-output")
    );
    assert!(
        records
            .iter()
            .all(|r| r["time"].as_str().is_some_and(|t| t.contains('T')))
    );
}

fn a_multiline_command_counts_only_its_last_status(exec: Exec) {
    // CodeBuild runs a `- |` block as one script without `set -e`: an earlier failing line
    // does not fail the build (the validator warns about it).
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - |\n        false\n        echo after-false\n",
    );
    let run = run_local(&p, exec, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("after-false"));
    assert!(
        run.stderr.contains("warning[multiline-command]"),
        "{}",
        run.stderr
    );
}

fn plain_retry_and_retry_regex_forms(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    on-failure: RETRY\n    commands:\n      - echo x >> attempts\n      - false\n",
    );
    let run = run_local(&p, exec, &["--bind"]);
    assert_eq!(run.code, 1);
    // RETRY means three more attempts.
    assert_eq!(
        std::fs::read_to_string(p.path().join("attempts")).unwrap(),
        "x\nx\nx\nx\n"
    );
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    on-failure: RETRY-.*flaky.*\n    commands:\n      - echo x >> attempts\n      - test $(wc -l < attempts) -ge 2 || (echo flaky network; false)\n",
    );
    let run = run_local(&p, exec, &["--bind"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        std::fs::read_to_string(p.path().join("attempts")).unwrap(),
        "x\nx\n"
    );
}

#[test]
fn ctrl_c_twice_kills_everything_now() {
    for exec in [Exec::Host, Exec::Docker] {
        let p = Project::new(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - trap '' TERM; sleep 60\n    finally:\n      - sleep 60\n",
        );
        let (child, summary) = common::start_run_local(&p, exec, "Running command trap");
        let started = std::time::Instant::now();
        common::ctrl_c(&child);
        std::thread::sleep(std::time::Duration::from_millis(500));
        common::ctrl_c(&child);
        let run = common::finish(child.wait_with_output().unwrap(), &summary);
        assert!(
            run.stdout.contains("`finally` is skipped"),
            "{exec:?}: {}",
            run.stdout
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{exec:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(run.code, 1, "{exec:?}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.status(), "STOPPED", "{exec:?}: {}", run.stdout);
        let build_id = run.summary["build_id"].as_str().unwrap();
        if exec == Exec::Docker {
            assert!(containers_of(build_id).is_empty());
        }
    }
}

// ---- The source stays the engineer's ----

/// Every entry under `dir` that `uid` does not own.
fn not_owned_by(dir: &std::path::Path, uid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().symlink_metadata().unwrap().uid() != uid)
        // The summary the test asked the agent for is the test's file, not the build's.
        .filter(|e| !e.file_name().to_string_lossy().starts_with(".summary"))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// The source's entries, relative, sorted; without the test's own summary file.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut found: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
        .filter(|p| !p.starts_with(".summary"))
        .collect();
    found.sort();
    found
}

#[test]
fn the_source_is_left_as_it_was_and_state_lives_outside_it() {
    for exec in [Exec::Host, Exec::Docker] {
        let p = Project::new(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p dist && echo built > dist/app.txt\n      - echo changed > input.txt\nartifacts:\n  files:\n    - '**/*'\n",
        );
        p.write("input.txt", "original\n");
        p.write(".git/HEAD", "ref: refs/heads/main\n");
        let before = listing(p.path());
        // The second build must not collect the first one's log or artifacts.
        for round in 1..=2 {
            let run = run_local(&p, exec, &[]);
            assert_eq!(
                run.code, 0,
                "{exec:?} #{round}: {}{}",
                run.stdout, run.stderr
            );
            assert_eq!(listing(p.path()), before, "{exec:?}: the source changed");
            assert_eq!(
                std::fs::read_to_string(p.path().join("input.txt")).unwrap(),
                "original\n"
            );
            let state = p.state_dir();
            assert!(
                state.starts_with(common::state_home().join("agent")),
                "{}",
                state.display()
            );
            let build_id = run.summary["build_id"].as_str().unwrap();
            let log = p.log_file(build_id);
            assert!(log.is_file(), "{exec:?}: no log at {}", log.display());
            assert!(
                run.stderr.contains(&format!("Log: {}", log.display())),
                "{}",
                run.stderr
            );
            let artifacts = state.join("artifacts");
            assert!(
                run.stderr
                    .contains(&format!("Artifacts: {}", artifacts.display())),
                "{}",
                run.stderr
            );
            // Artifacts come from the build's copy, as it left it.
            assert_eq!(
                std::fs::read_to_string(artifacts.join("primary/dist/app.txt")).unwrap(),
                "built\n"
            );
            assert_eq!(
                std::fs::read_to_string(artifacts.join("primary/input.txt")).unwrap(),
                "changed\n"
            );
            assert!(artifacts.join("primary/.git/HEAD").is_file());
            let first = run.stdout.lines().next().unwrap_or("");
            assert!(
                first.contains(&format!("Source directory: {}", p.path().display()))
                    && first.contains("copy"),
                "{exec:?}: {first}"
            );
        }
    }
}

/// A user with no login, for tests that run the agent or a build as someone else.
fn test_user() -> (u32, u32) {
    let name = "agentuxtest";
    let _ = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output();
    let user = nix::unistd::User::from_name(name).unwrap().unwrap();
    (user.uid.as_raw(), user.gid.as_raw())
}

fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) {
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid)).unwrap();
    }
}

#[test]
fn bind_builds_in_the_source_as_its_owner_and_leaves_every_file_theirs() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("this test makes a user and switches to it: it needs root (CI runs as root)");
        return;
    }
    let (uid, gid) = test_user();
    let docker_gid = std::fs::metadata("/var/run/docker.sock").unwrap().gid();
    let image = common::busybox_image();
    for (who, as_user, exec) in [
        ("a non-root engineer", true, Exec::Docker),
        ("root", false, Exec::Docker),
        ("a non-root engineer", true, Exec::Host),
        ("root", false, Exec::Host),
    ] {
        // In a container the owner's uid has no home of its own: it gets a writable one.
        let home = if exec == Exec::Docker {
            "      - touch $HOME/.writable\n"
        } else {
            ""
        };
        let p = Project::new(&format!(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p dist __pycache__ && id -u > dist/uid && echo x > __pycache__/m.pyc\n{home}"
        ));
        let state = tempfile::tempdir().unwrap();
        chown_tree(p.path(), uid, gid);
        chown_tree(state.path(), uid, gid);
        let summary = p.path().join(".summary.json");
        let mut command = if as_user {
            let mut c = std::process::Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg(format!("--groups={docker_gid}"))
                .arg(env!("CARGO_BIN_EXE_agent"));
            c
        } else {
            common::agent()
        };
        let output = command
            .env("XDG_STATE_HOME", state.path())
            .args(["run-local", "--bind", "--summary"])
            .arg(&summary)
            .args(match exec {
                Exec::Docker => ["--image", image],
                Exec::Host => ["--executor", "host"],
            })
            .arg("--source")
            .arg(p.path())
            .output()
            .unwrap();
        let run = common::finish(output, &summary);
        let who = format!("{who} ({exec:?})");
        assert_eq!(run.code, 0, "{who}: {}{}", run.stdout, run.stderr);
        assert_eq!(
            std::fs::read_to_string(p.path().join("dist/uid"))
                .unwrap()
                .trim(),
            uid.to_string(),
            "{who}: the build ran as someone else"
        );
        assert!(p.path().join("__pycache__/m.pyc").is_file());
        assert_eq!(not_owned_by(p.path(), uid), Vec::<String>::new(), "{who}");
        assert!(run.stdout.contains("--bind"), "{who}: {}", run.stdout);
    }
}

#[test]
fn a_copy_built_by_a_non_root_engineer_in_docker_is_removed() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("this test switches to another user: it needs root (CI runs as root)");
        return;
    }
    let (uid, gid) = test_user();
    let docker_gid = std::fs::metadata("/var/run/docker.sock").unwrap().gid();
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p dist && echo x > dist/app && test \"$(id -u)\" = 0\n",
    );
    let state = tempfile::tempdir().unwrap();
    chown_tree(p.path(), uid, gid);
    chown_tree(state.path(), uid, gid);
    let before = listing(p.path());
    let output = std::process::Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(format!("--groups={docker_gid}"))
        .arg(env!("CARGO_BIN_EXE_agent"))
        .env("XDG_STATE_HOME", state.path())
        .args(["run-local", "--image", common::busybox_image(), "--source"])
        .arg(p.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(listing(p.path()), before);
    let copy = stdout
        .split("the build runs in a copy, ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("the copy's path in the log");
    assert!(
        !std::path::Path::new(copy).exists(),
        "the copy {copy} was left behind: {stderr}"
    );
    assert!(!stderr.contains("cannot remove"), "{stderr}");
}

#[test]
fn a_buildspec_elsewhere_makes_its_directory_the_source() {
    let p =
        Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - cat marker.txt\n");
    p.write("marker.txt", "from-the-buildspec-dir");
    let elsewhere = tempfile::tempdir().unwrap();
    let output = common::agent()
        .args(["run-local", "--executor", "host"])
        .arg(p.path().join("buildspec.yml"))
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.lines().any(|l| l == "from-the-buildspec-dir"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("Source directory: {}", p.path().display())),
        "{stdout}"
    );
    let help = common::agent()
        .args(["run-local", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("The source directory") && help.contains("buildspec's own directory"),
        "{help}"
    );
}

// ---- A clear ending ----

#[test]
fn ctrl_c_sends_sigterm_then_sigkill_after_the_stop_timeout_then_runs_finally() {
    for exec in [Exec::Host, Exec::Docker] {
        let p = Project::new(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - trap '' TERM; sleep 60\n    finally:\n      - echo finally-ran\n",
        );
        let (child, summary) = common::start_run_local_with(
            &p,
            exec,
            "Running command trap",
            &["--stop-timeout", "2"],
        );
        let started = std::time::Instant::now();
        common::ctrl_c(&child);
        let run = common::finish(child.wait_with_output().unwrap(), &summary);
        let took = started.elapsed();
        assert_eq!(run.code, 1, "{exec:?}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.status(), "STOPPED", "{exec:?}: {}", run.stdout);
        assert!(run.printed("finally-ran"), "{exec:?}: {}", run.stdout);
        assert!(
            took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(20),
            "{exec:?}: took {took:?}"
        );
        let term = run.stdout.find("SIGTERM sent").expect("SIGTERM said");
        let kill = run.stdout.find("SIGKILL sent").expect("SIGKILL said");
        let finally = run.stdout.find("finally-ran").unwrap_or(0);
        assert!(term < kill && kill < finally, "{exec:?}: {}", run.stdout);
    }
}

#[test]
fn a_failed_build_ends_with_the_command_its_line_status_and_last_lines() {
    let p = Project::new(
        "version: 0.2\nphases:\n  install:\n    commands:\n      - echo ok\n  build:\n    commands:\n      - echo building\n      - for i in $(seq 1 15); do echo \"out $i\"; done; exit 3\n",
    );
    let run = run_local(&p, Exec::Host, &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let tail: Vec<&str> = run.stderr.lines().rev().take(16).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let end = tail.join("\n");
    assert!(
        end.contains(&format!(
            "Failed in phase BUILD: `for i in $(seq 1 15); do echo \"out $i\"; done; exit 3` ({}:9) exited with status 3",
            p.path().join("buildspec.yml").display()
        )),
        "{}",
        run.stderr
    );
    assert!(
        end.contains("  | out 15") && end.contains("  | out 6"),
        "{end}"
    );
    assert!(!end.contains("  | out 5\n"), "{end}");
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(last.contains("FAILED in "), "{last}");
    assert!(!run.stderr.contains('\x1b'), "no colour when piped");

    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo fine\n");
    let run = run_local(&p, Exec::Host, &["--color", "always"]);
    assert_eq!(run.code, 0);
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("Build local:") && last.contains("SUCCEEDED") && last.contains(" in "),
        "{last}"
    );
    assert!(run.stderr.contains("\x1b[32m"), "{}", run.stderr);
    assert!(
        run.stdout.contains("\x1b[1;36mEntering phase BUILD"),
        "{}",
        run.stdout
    );
    let run = run_local(&p, Exec::Host, &["--color", "never"]);
    assert!(!run.stderr.contains('\x1b') && !run.stdout.contains('\x1b'));
}

#[test]
fn agent_log_debug_shows_the_agents_diagnostics_only() {
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo fine\n");
    let summary = p.path().join(".summary.json");
    let output = common::agent()
        .env("AGENT_LOG", "debug")
        .args(["run-local", "--image", common::busybox_image(), "--summary"])
        .arg(&summary)
        .arg("--source")
        .arg(p.path())
        .output()
        .unwrap();
    let run = common::finish(output, &summary);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let debug: Vec<&str> = run.stderr.lines().filter(|l| l.contains("DEBUG")).collect();
    assert!(
        debug.iter().any(|l| l.contains(" agent::")),
        "no agent diagnostics: {}",
        run.stderr
    );
    let foreign: Vec<&&str> = debug.iter().filter(|l| !l.contains(" agent::")).collect();
    assert!(
        foreign.is_empty(),
        "dependencies' debug lines: {foreign:#?}"
    );
}

// ---- Environment habits ----

#[test]
fn env_names_pass_through_and_env_files_read_dotenv() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"passed=[$PASSED] unset=[${UNSET_HERE-none}] q=[$Q] s=[$S] e=[$E] t=[$T]\"\n      - printf '%s\\n' \"$D\"\n",
    );
    p.write(".env", "IGNORED=1\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vars.env");
    std::fs::write(
        &file,
        "# comment\n\nexport E=exported\nQ = \"two\\nlines \\\"quoted\\\"\"\nS='$NOT_EXPANDED'\nT=plain # note\nD=\"a\\nb\"\n",
    )
    .unwrap();
    let summary = p.path().join(".summary.json");
    let output = common::agent()
        .env("PASSED", "from-agent-env")
        .env_remove("UNSET_HERE")
        .args(["run-local", "--executor", "host", "--summary"])
        .arg(&summary)
        .arg("--source")
        .arg(p.path())
        .args(["-e", "PASSED", "-e", "UNSET_HERE", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    let run = common::finish(output, &summary);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "passed=[from-agent-env] unset=[none] q=[two\nlines \"quoted\"] s=[$NOT_EXPANDED] e=[exported] t=[plain]"
        ),
        "{}",
        run.stdout
    );
    assert!(run.printed("a") && run.printed("b"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("-e UNSET_HERE: UNSET_HERE is not set in this environment; skipped"),
        "{}",
        run.stdout
    );
    // An --env-file was given: the source's .env is not mentioned.
    assert!(!run.stdout.contains(".env was not read"), "{}", run.stdout);
    let run = run_local(&p, Exec::Host, &[]);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout.matches(".env was not read").count(),
        1,
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("--env-file"), "{}", run.stdout);
}

#[test]
fn env_file_mistakes_point_at_the_right_flag_and_line() {
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo never\n");
    p.write("my.env", "A=1\n");
    let output = common::agent()
        .args(["run-local", "--executor", "host", "--source"])
        .arg(p.path())
        .args(["-e", "my.env"])
        .current_dir(p.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--env-file my.env"), "{stderr}");

    let secret_line = "MIIEowIBAAKCAQEAzZ9Secret";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.env");
    std::fs::write(
        &file,
        format!(
            "KEY=-----BEGIN RSA PRIVATE KEY-----\n{secret_line}\n-----END RSA PRIVATE KEY-----\n"
        ),
    )
    .unwrap();
    let output = common::agent()
        .args(["run-local", "--executor", "host", "--source"])
        .arg(p.path())
        .arg("--secret-file")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2:", file.display())),
        "{stderr}"
    );
    assert!(
        !stderr.contains(secret_line) && !stdout.contains(secret_line),
        "{stderr}"
    );
    assert!(!stderr.contains("BEGIN RSA"), "{stderr}");
}

#[test]
fn secret_values_leave_the_process_list_and_still_reach_the_build() {
    let value = "Sup3r-s3cret-argv-value";
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"token=$TOKEN from_env=$FROM_ENV\"\n      - test \"$TOKEN\" = Sup3r-s3cret-argv-value && echo secret-ok\n      - sleep 2\n",
    );
    let summary = p.path().join(".summary.json");
    let child = common::agent()
        .env("FROM_ENV", "Env-s3cret-value")
        .args(["run-local", "--executor", "host", "--summary"])
        .arg(&summary)
        .arg("--source")
        .arg(p.path())
        .arg("--secret")
        .arg(format!("TOKEN={value}"))
        .arg(format!("--secret=OTHER={value}-2"))
        .args(["--secret", "FROM_ENV"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cmdline = format!("/proc/{}/cmdline", child.id());
    // Past the first milliseconds (the re-exec), the command line has no value.
    let seen = common::wait_for(
        std::time::Duration::from_secs(20),
        || {
            std::fs::read(&cmdline)
                .ok()
                .filter(|c| String::from_utf8_lossy(c).contains("--secret-values-fd"))
        },
        || "the agent never re-executed itself".to_string(),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(std::fs::read(&cmdline).unwrap(), seen, "argv changed again");
    let seen = String::from_utf8_lossy(&seen);
    assert!(!seen.contains(value), "the value is in argv: {seen:?}");
    assert!(seen.contains("--secret\0TOKEN\0"), "{seen:?}");
    assert!(seen.contains("--secret\0OTHER\0"), "{seen:?}");
    let run = common::finish(child.wait_with_output().unwrap(), &summary);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("secret-ok"), "{}", run.stdout);
    assert!(run.printed("token=*** from_env=***"), "{}", run.stdout);
    assert!(!run.stdout.contains(value) && !run.stderr.contains(value));
}
