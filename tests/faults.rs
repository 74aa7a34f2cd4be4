//! Faults from outside the agent, each followed by the invariants: the job has exactly one
//! result that says what happened, nothing is left behind (containers, processes), and the
//! agent goes on serving jobs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, build_job, serial};
use common::fault_proxy::{self, Faults};
use common::{Project, containers_of, wait_for, wait_until};

/// Runs a long build with a fixed build id and, once its container is up, does `act` to
/// that container from outside.
fn disturb_a_build(act: &[&str]) -> common::Run {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo started\n      - sleep 60\n      - echo never\n    finally:\n      - echo finally-never\n  post_build:\n    commands:\n      - echo post-never\n",
    );
    let build_id = format!("fault-{}", common::daemon::uuid_like());
    let summary = p.path().join(".summary.json");
    let child = common::agent()
        .args([
            "run-local",
            "--image",
            common::busybox_image(),
            "--build-id",
            &build_id,
        ])
        .arg("--source")
        .arg(p.path())
        .arg("--summary")
        .arg(&summary)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let container = wait_for(
        Duration::from_secs(30),
        || containers_of(&build_id).into_iter().next(),
        || "the build never started".into(),
    );
    // Let the first command run.
    std::thread::sleep(Duration::from_millis(1000));
    let started = Instant::now();
    let out = Command::new("docker")
        .args(act)
        .arg(&container)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = common::finish(child.wait_with_output().unwrap(), &summary);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the agent took {:?} to notice",
        started.elapsed()
    );
    assert!(containers_of(&build_id).is_empty(), "a container was left");
    run
}

#[test]
fn a_container_removed_mid_build_is_a_fault() {
    let run = disturb_a_build(&["rm", "-f"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.status(), "FAULT");
    let message = run.phase("BUILD").unwrap()["message"].as_str().unwrap();
    assert!(
        message.contains("removed from outside the agent"),
        "{message}"
    );
    assert!(run.printed("started"));
    for never in ["never", "finally-never", "post-never"] {
        assert!(!run.printed(never), "{never}: {}", run.stdout);
    }
    assert!(run.phase("POST_BUILD").is_none(), "{}", run.summary);
}

#[test]
fn a_container_killed_mid_build_is_a_fault() {
    let run = disturb_a_build(&["kill"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.status(), "FAULT");
    let message = run.phase("BUILD").unwrap()["message"].as_str().unwrap();
    assert!(
        message.contains("stopped from outside the agent"),
        "{message}"
    );
}

#[test]
fn the_daemon_reports_an_unreachable_docker_and_recovers_by_itself() {
    let _serial = serial();
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("docker.sock");
    std::os::unix::fs::symlink("/var/run/docker.sock", &link).unwrap();
    let mut daemon = Daemon::new("");
    daemon
        .env
        .push(("DOCKER_HOST".into(), format!("unix://{}", link.display())));
    daemon.launch();

    // The engine goes away…
    fs::remove_file(&link).unwrap();
    daemon.submit("job-dead", &build_job("job-dead", &["echo hello"]));
    let dead = daemon.result("job-dead", Duration::from_secs(60));
    assert_eq!(dead["status"], "FAULT", "{dead:#}");
    let message = dead["message"].as_str().unwrap();
    assert!(message.to_lowercase().contains("docker"), "{message}");

    // …and comes back: the next job runs, with no restart of the agent.
    std::os::unix::fs::symlink("/var/run/docker.sock", &link).unwrap();
    daemon.submit(
        "job-back",
        &build_job("job-back", &["export GREETING=back"]),
    );
    let back = daemon.result("job-back", Duration::from_secs(60));
    assert_eq!(back["status"], "SUCCEEDED", "{back:#}");
    assert_eq!(back["exported_variables"]["GREETING"], "back");
    assert!(daemon.containers().is_empty());
}

/// A tmpfs mounted for the test, unmounted however the test ends.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: std::path::PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount needs root");
        Tmpfs(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_workspace_disk_fails_the_job_and_keeps_the_state() {
    let _serial = serial();
    let mut daemon = Daemon::new("");
    let _disk = Tmpfs::mount(daemon.path("work"), "16m");
    daemon.launch();
    daemon.submit(
        "job-fill",
        &build_job(
            "job-fill",
            &[
                "dd if=/dev/zero of=fill bs=1M count=64",
                "export GREETING=never",
            ],
        ),
    );
    let fill = daemon.result("job-fill", Duration::from_secs(60));
    assert_eq!(fill["status"], "FAILED", "{fill:#}");
    let message = fill["message"].as_str().unwrap();
    assert!(message.contains("dd if=/dev/zero"), "{message}");
    assert!(daemon.path("state/results/job-fill.json").is_file());
    // The workspace is gone, the disk has room again, and the agent goes on.
    daemon.submit(
        "job-after",
        &build_job("job-after", &["export GREETING=room"]),
    );
    let after = daemon.result("job-after", Duration::from_secs(60));
    assert_eq!(after["status"], "SUCCEEDED", "{after:#}");
    daemon.wait_workspaces_removed(Duration::from_secs(30));
    assert!(daemon.containers().is_empty());
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(30));
}

/// `kill -9` of the daemon (and of its job's process, as an OOM kill of the whole service
/// would) at 20 moments of a job's life, from just after it is claimed to after it has
/// finished; each time a restart reconciles and the job ends with exactly one result.
#[test]
fn kill_9_at_twenty_points_of_a_job_leaves_one_result_each_time() {
    let _serial = serial();
    let mut daemon = Daemon::start("");
    for point in 0..20u64 {
        let name = format!("job-k{point:02}");
        daemon.submit(
            &name,
            &build_job(&name, &["sleep 1", "export GREETING=done"]),
        );
        let inbox = daemon.path(&format!("spool/inbox/{name}.json"));
        // Polled closely: the kill points below count from the claim.
        let deadline = Instant::now() + Duration::from_secs(30);
        while inbox.exists() {
            assert!(Instant::now() < deadline, "{name} never claimed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // 0 ms to 2.85 s after the claim: before the container, during the build, around
        // the result being stored.
        std::thread::sleep(Duration::from_millis(point * 150));
        daemon.signal("KILL");
        daemon.wait_exit(Duration::from_secs(10));
        daemon.kill_job_processes();
        daemon.launch();
        let result = daemon.result(&name, Duration::from_secs(90));
        assert_eq!(result["status"], "SUCCEEDED", "{name}: {result:#}");
        assert_eq!(result["exported_variables"]["GREETING"], "done", "{name}");
        let results = fs::read_dir(daemon.path("spool/done"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
            .count();
        assert_eq!(results, 1, "{name}: one result");
        assert!(
            !inbox.exists(),
            "{name} was delivered again after its result"
        );
        // Reconciliation removed what the killed run left.
        wait_until(
            Duration::from_secs(10),
            || daemon.containers().is_empty(),
            || format!("{name}: {:?} left", daemon.containers()),
        );
    }
    assert!(daemon.job_processes().is_empty());
}

/// run-local on the host with every AWS call sent through `proxy`.
fn run_local_through(p: &Project, endpoint: &str, args: &[&str]) -> common::Run {
    let summary = p.path().join(".summary.json");
    let output = common::agent()
        .args(["run-local", "--executor", "host", "--summary"])
        .arg(&summary)
        .arg("--source")
        .arg(p.path())
        // The tests compare what the build wrote into the source with what reached S3.
        .arg("--bind")
        .args(args)
        .envs(common::aws_env())
        .env("AWS_ENDPOINT_URL", endpoint)
        .output()
        .unwrap();
    common::finish(output, &summary)
}

#[test]
fn role_and_parameter_calls_ride_out_resets_and_server_errors() {
    let proxy = fault_proxy::start(common::moto(), Faults::ResetThen500);
    let unique = common::daemon::uuid_like();
    common::boto3(&format!(
        "ssm = boto3.client('ssm', **kw)\nssm.put_parameter(Name='/{unique}/token', Value='Tok-{unique}', Type='SecureString')"
    ));
    let p = Project::new(&format!(
        "version: 0.2\nenv:\n  parameter-store:\n    TOKEN: /{unique}/token\nphases:\n  build:\n    commands:\n      - echo \"token=$TOKEN\"\n      - test -n \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\" && echo credentials-served\n"
    ));
    let run = run_local_through(
        &p,
        &proxy.url,
        &["--role-arn", "arn:aws:iam::123456789012:role/faulty"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("token=***"), "{}", run.stdout);
    assert!(run.printed("credentials-served"), "{}", run.stdout);
    // AssumeRole and GetParameters each met a reset and a 500.
    assert!(
        proxy.injected() >= 4,
        "{} faults injected",
        proxy.injected()
    );
}

#[test]
fn s3_slow_down_answers_are_waited_out() {
    let bucket = format!("slowdown-{}", common::daemon::uuid_like());
    common::boto3(&format!(
        "boto3.client('s3', **kw).create_bucket(Bucket='{bucket}')"
    ));
    let proxy = fault_proxy::start(common::moto(), Faults::SlowDown);
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p out && for i in 1 2 3 4 5; do echo file $i > out/f$i.txt; done\nartifacts:\n  files:\n    - 'out/**/*'\n",
    );
    let url = format!("s3://{bucket}/slow");
    let run = run_local_through(&p, &proxy.url, &["--artifacts", &url]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let keys = common::boto3(&format!(
        "s3 = boto3.client('s3', **kw)\nfor o in s3.list_objects_v2(Bucket='{bucket}')['Contents']: print(o['Key'], s3.get_object(Bucket='{bucket}', Key=o['Key'])['Body'].read().decode().strip())"
    ));
    let want: Vec<String> = (1..=5)
        .map(|i| format!("slow/primary/out/f{i}.txt file {i}"))
        .collect();
    assert_eq!(keys.lines().collect::<Vec<_>>(), want);
    assert!(
        proxy.injected() >= 5,
        "{} faults injected",
        proxy.injected()
    );
}

#[test]
fn sqs_jobs_ride_out_a_faulty_network_to_one_result_each() {
    let _serial = serial();
    let queue = format!("faulty-{}", &common::daemon::uuid_like()[..10]);
    let queue_url = common::boto3(&format!(
        "print(boto3.client('sqs', **kw).create_queue(QueueName='{queue}')['QueueUrl'])"
    ));
    let proxy = fault_proxy::start(common::moto(), Faults::ResetThen500);
    let extra = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[[sources]]\ntype = \"sqs\"\nqueue_url = \"{queue_url}\"\nwait_time = \"1s\"\nvisibility_timeout = \"30s\"\n",
        proxy.url
    );
    let daemon = Daemon::start(&extra);
    let names: Vec<String> = (1..=3).map(|i| format!("faulty-sqs-{i}")).collect();
    for name in &names {
        let body = daemon.path(&format!("{name}.json"));
        fs::write(
            &body,
            serde_json::to_vec(&build_job(name, &["export GREETING=through"])).unwrap(),
        )
        .unwrap();
        common::boto3(&format!(
            "boto3.client('sqs', **kw).send_message(QueueUrl='{queue_url}', MessageBody=open('{}').read())",
            body.display()
        ));
    }
    for name in &names {
        let result = daemon.stored_result(name, Duration::from_secs(90));
        assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
        assert_eq!(result["exported_variables"]["GREETING"], "through");
    }
    // Every message was deleted once its result was stored, through the faults.
    daemon.wait_queues(&[(&queue_url, 0)], Duration::from_secs(30));
    assert!(
        proxy.injected() >= 6,
        "{} faults injected",
        proxy.injected()
    );
    assert!(daemon.containers().is_empty());
}

#[test]
fn a_stalled_s3_request_is_abandoned_and_retried() {
    let bucket = format!("stall-{}", common::daemon::uuid_like());
    common::boto3(&format!(
        "boto3.client('s3', **kw).create_bucket(Bucket='{bucket}')"
    ));
    let proxy = fault_proxy::start(common::moto(), Faults::StallFirst);
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p out && echo one > out/one.txt\nartifacts:\n  files:\n    - 'out/**/*'\n",
    );
    let url = format!("s3://{bucket}/stalled");
    let summary = p.path().join(".summary.json");
    let started = Instant::now();
    let output = common::agent()
        .args(["run-local", "--executor", "host", "--summary"])
        .arg(&summary)
        .arg("--source")
        .arg(p.path())
        .args(["--artifacts", &url])
        .envs(common::aws_env())
        .env("AWS_ENDPOINT_URL", &proxy.url)
        .env("AGENT_AWS_READ_TIMEOUT", "3")
        .output()
        .unwrap();
    let run = common::finish(output, &summary);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(proxy.injected() >= 1);
    let body = common::boto3(&format!(
        "print(boto3.client('s3', **kw).get_object(Bucket='{bucket}', Key='stalled/primary/out/one.txt')['Body'].read().decode().strip())"
    ));
    assert_eq!(body, "one");
}

#[test]
fn an_https_source_behind_resets_and_server_errors_is_fetched() {
    let _serial = serial();
    let files_url = common::daemon::serve_tarball(&[
        (
            "buildspec.yml",
            "version: 0.2\nenv:\n  exported-variables: [GREETING]\nphases:\n  build:\n    commands:\n      - export GREETING=$(cat origin.txt)\n",
        ),
        ("origin.txt", "fetched"),
    ]);
    let proxy = fault_proxy::start(&files_url, Faults::ResetThen500);
    let daemon = Daemon::start("");
    let job = serde_json::json!({
        "version": 1,
        "id": "https-faulty",
        "kind": "build",
        "source": {"type": "https", "url": format!("{}/app.tgz", proxy.url)},
    });
    daemon.submit("https-faulty", &job);
    let result = daemon.result("https-faulty", Duration::from_secs(90));
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    assert_eq!(result["exported_variables"]["GREETING"], "fetched");
    assert_eq!(proxy.injected(), 2, "a reset and a 500 before the download");
    assert!(
        daemon.log().contains("source fetch failed; trying again"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_slow_link_still_delivers_whole_artifacts() {
    let bucket = format!("slow-link-{}", common::daemon::uuid_like());
    common::boto3(&format!(
        "boto3.client('s3', **kw).create_bucket(Bucket='{bucket}')"
    ));
    // 512 KiB/s each way: the 3 MiB file takes about 6 s to cross.
    let proxy = fault_proxy::start(common::moto(), Faults::Slow(512 * 1024));
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p out && head -c 3145728 /dev/urandom > out/big.bin\nartifacts:\n  files:\n    - 'out/**/*'\n",
    );
    let url = format!("s3://{bucket}/slow");
    let started = Instant::now();
    let run = run_local_through(&p, &proxy.url, &["--artifacts", &url]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the link was not slow: {:?}",
        started.elapsed()
    );
    let local = fs::read(p.path().join("out/big.bin")).unwrap();
    let remote = common::boto3(&format!(
        "import hashlib\nprint(hashlib.sha256(boto3.client('s3', **kw).get_object(Bucket='{bucket}', Key='slow/primary/out/big.bin')['Body'].read()).hexdigest())"
    ));
    use sha2::Digest;
    let want: String = sha2::Sha256::digest(&local)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(remote, want);
}

#[test]
fn a_git_source_behind_resets_and_server_errors_is_fetched() {
    let _serial = serial();
    let server = common::git_server::GitServer::start();
    let proxy = fault_proxy::start(&server.origin, Faults::ResetThen500);
    let url = format!("{}/repo.git", proxy.url);
    let daemon = Daemon::start("");
    let job = serde_json::json!({
        "version": 1,
        "id": "git-faulty",
        "kind": "build",
        "source": {"type": "git", "url": url, "ref": "main", "depth": 1},
    });
    daemon.submit("git-faulty", &job);
    let result = daemon.result("git-faulty", Duration::from_secs(90));
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    assert_eq!(
        result["exported_variables"]["COMMIT"],
        server.commit.as_str()
    );
    assert!(
        proxy.injected() >= 2,
        "{} faults injected",
        proxy.injected()
    );
}

/// A message the queue handed out in a long poll whose answer was still on its way when
/// SIGTERM came: the poll is let finish and the message handed back at once, not left in
/// flight for its visibility timeout.
#[test]
fn a_message_received_while_stopping_is_handed_back() {
    let _serial = serial();
    let queue = format!("stopping-{}", &common::daemon::uuid_like()[..10]);
    let queue_url = common::boto3(&format!(
        "print(boto3.client('sqs', **kw).create_queue(QueueName='{queue}')['QueueUrl'])"
    ));
    // Each answer reaches the daemon 3 s after moto gave it.
    let proxy = fault_proxy::start(common::moto(), Faults::Delay(3000));
    let extra = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[[sources]]\ntype = \"sqs\"\nqueue_url = \"{queue_url}\"\nwait_time = \"1s\"\nvisibility_timeout = \"600s\"\n",
        proxy.url
    );
    let body = serde_json::to_string(&build_job("stopping-1", &["echo never"])).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), body).unwrap();
    common::boto3(&format!(
        "boto3.client('sqs', **kw).send_message(QueueUrl='{queue_url}', MessageBody=open('{}').read())",
        file.path().display()
    ));
    let mut daemon = Daemon::start(&extra);
    // The receive is on its way back, with the message, when the daemon is told to stop.
    wait_until(
        Duration::from_secs(60),
        || {
            proxy
                .targets()
                .iter()
                .any(|t| t.ends_with("ReceiveMessage"))
        },
        || format!("no receive: {:?}\n{}", proxy.targets(), daemon.log()),
    );
    std::thread::sleep(Duration::from_millis(1000));
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", daemon.log());
    assert!(
        proxy
            .targets()
            .iter()
            .any(|t| t.ends_with("ChangeMessageVisibility")),
        "not handed back: {:?}\n{}",
        proxy.targets(),
        daemon.log()
    );
    // Visible again at once: another agent can take it now, not in ten minutes.
    let visible = common::boto3(&format!(
        "a = boto3.client('sqs', **kw).get_queue_attributes(QueueUrl='{queue_url}', AttributeNames=['All'])['Attributes']\nprint(a['ApproximateNumberOfMessages'])"
    ));
    assert_eq!(visible.trim(), "1", "{}", daemon.log());
    assert!(!daemon.log().contains("never"), "{}", daemon.log());
}
