//! `agent daemon` end to end: jobs dropped in a spool directory (and sent over SQS) run in
//! containers to exactly one result each; refused and malformed jobs; a killed daemon
//! restarted; drains; reloads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{
    Daemon, build_job, http_get, http_server, serial, serve_tarball, uuid_like, wait_running,
};
use common::git_server::GitServer;
use common::{agent, wait_until};
use serde_json::{Value, json};

#[test]
fn spool_jobs_run_to_one_result_each() {
    let _serial = serial();
    let daemon = Daemon::start("");
    daemon.submit(
        "job-a",
        &build_job("job-a", &["echo hello $NAME", "export GREETING=hi-$NAME"]),
    );
    daemon.submit("job-b", &build_job("job-b", &["echo failing", "exit 3"]));
    let a = daemon.result("job-a", Duration::from_secs(60));
    let b = daemon.result("job-b", Duration::from_secs(60));
    assert_eq!(a["status"], "SUCCEEDED", "{a:#}");
    assert_eq!(a["exported_variables"]["GREETING"], "hi-world");
    assert_eq!(a["agent"], daemon.name.as_str());
    let log = fs::read_to_string(a["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("hello world"), "{log}");
    assert_eq!(b["status"], "FAILED");
    assert!(
        b["message"].as_str().unwrap().contains("BUILD FAILED"),
        "{b:#}"
    );
    // Artifacts with no S3 destination are kept in the state directory, where the result
    // points.
    daemon.submit(
        "job-c",
        &json!({
            "version": 1, "id": "job-c", "kind": "build",
            "source": {"type": "inline", "files": {"buildspec.yml":
                "version: 0.2\nphases:\n  build:\n    commands:\n      - echo kept > out.txt\nartifacts:\n  files: [out.txt]\n"}}
        }),
    );
    let c = daemon.result("job-c", Duration::from_secs(60));
    assert_eq!(c["status"], "SUCCEEDED", "{c:#}");
    let location = Path::new(c["artifacts"][0].as_str().unwrap());
    assert!(location.starts_with(daemon.path("state")), "{c:#}");
    assert_eq!(
        fs::read_to_string(location.join("out.txt")).unwrap(),
        "kept\n"
    );
    // Results are also kept by job id in the state directory; workspaces are gone.
    assert!(daemon.path("state/results/job-a.json").is_file());
    daemon.wait_workspaces_removed(Duration::from_secs(30));
    assert!(daemon.containers().is_empty());
    let status = daemon.status().unwrap();
    assert_eq!(status["counts"]["SUCCEEDED"], 2);
    assert_eq!(status["counts"]["FAILED"], 1);
    let metrics = http_get(daemon.port, "/metrics");
    assert!(
        metrics.contains("agent_jobs_total{kind=\"build\",status=\"SUCCEEDED\"} 2"),
        "{metrics}"
    );

    // The same job delivered again is acknowledged with its result, not run again: the
    // new answer in done/ is the first run's, and no second run is counted.
    fs::remove_file(daemon.path("spool/done/job-a.json")).unwrap();
    daemon.submit(
        "job-a",
        &build_job("job-a", &["echo hello $NAME", "export GREETING=again"]),
    );
    let again = daemon.result("job-a", Duration::from_secs(30));
    assert_eq!(again["exported_variables"]["GREETING"], "hi-world");
    assert_eq!(again["received_at"], a["received_at"]);
    assert!(!daemon.path("spool/inbox/job-a.json").exists());
    assert_eq!(
        jobs_total(&daemon, "build", "SUCCEEDED"),
        2,
        "not run again"
    );
}

#[test]
fn malformed_and_refused_jobs_never_run() {
    let _serial = serial();
    let daemon = Daemon::start("");
    daemon.submit_raw(
        "garbage",
        "{\"version\": 1, \"id\": \"x\", \"source\": {\"type\": \"inline\", \"files\": {}},\n  \"kind\": \"bild\"}",
    );
    let garbage = daemon.result("garbage", Duration::from_secs(20));
    assert_eq!(garbage["status"], "REJECTED");
    let message = garbage["message"].as_str().unwrap();
    assert!(
        message.contains("garbage.json:2:11") && message.contains("bild"),
        "{message}"
    );
    assert!(daemon.path("spool/rejected/garbage.json").exists());

    let mut role = build_job("job-role", &["echo never"]);
    role["role"] = json!({"arn": "arn:aws:iam::123456789012:role/admin"});
    daemon.submit("job-role", &role);
    let mut image = build_job("job-image", &["echo never"]);
    image["image"] = json!("evil.example.com/miner:latest");
    daemon.submit("job-image", &image);
    let mut privileged = build_job("job-priv", &["echo never"]);
    privileged["privileged"] = json!(true);
    daemon.submit("job-priv", &privileged);
    for (name, field) in [
        ("job-role", "role"),
        ("job-image", "image"),
        ("job-priv", "privileged"),
    ] {
        let result = daemon.result(name, Duration::from_secs(20));
        assert_eq!(result["status"], "REJECTED", "{name}: {result:#}");
        let message = result["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("refused `{field}")),
            "{name}: {message}"
        );
        assert!(result["log"].is_null(), "{name} ran");
    }
    assert!(daemon.containers().is_empty());
}

#[test]
fn a_killed_daemon_cleans_up_and_the_job_runs_again_to_one_result() {
    let _serial = serial();
    let mut daemon = Daemon::start("");
    daemon.submit(
        "job-slow",
        &build_job("job-slow", &["sleep 4", "export GREETING=done"]),
    );
    daemon.wait(Duration::from_secs(30), || !daemon.containers().is_empty());
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(5));
    // Its job process is killed hard too (as by an OOM kill of the whole service).
    daemon.kill_job_processes();
    assert!(
        !daemon.containers().is_empty(),
        "the container outlives the daemon"
    );
    daemon.launch();
    let result = daemon.result("job-slow", Duration::from_secs(60));
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    assert_eq!(result["exported_variables"]["GREETING"], "done");
    let done: Vec<_> = fs::read_dir(daemon.path("spool/done")).unwrap().collect();
    assert_eq!(done.len(), 1, "exactly one result");
    assert!(daemon.containers().is_empty(), "{:?}", daemon.containers());
    assert!(
        daemon.log().contains("cleaned up after the previous run"),
        "{}",
        daemon.log()
    );

    // The daemon alone killed: the job's process, in its own group, lives on until the
    // restarted daemon's janitor ends it.
    daemon.submit(
        "job-orphan",
        &build_job("job-orphan", &["sleep 30", "export GREETING=orphan"]),
    );
    wait_running(&daemon, 1);
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(5));
    assert!(
        !daemon.job_processes().is_empty(),
        "the job outlives the daemon"
    );
    let orphans = daemon.job_processes();
    daemon.launch();
    let result = daemon.result("job-orphan", Duration::from_secs(90));
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    for pid in orphans {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || !daemon.job_processes().contains(&pid),
            "the old run's process {pid} was ended"
        );
    }
    // Nothing of either run is left: containers, processes, workspaces, journal, scratch.
    daemon.wait(Duration::from_secs(10), || {
        daemon.job_processes().is_empty() && daemon.containers().is_empty()
    });
    for dir in ["work", "state/journal", "state/running"] {
        let left: Vec<_> = fs::read_dir(daemon.path(dir)).unwrap().flatten().collect();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
}

#[test]
fn sigterm_drains_and_a_stopped_job_goes_back_to_the_inbox() {
    let _serial = serial();
    let mut daemon = Daemon::start("");
    daemon.submit(
        "job-quick",
        &build_job("job-quick", &["sleep 2", "export GREETING=drained"]),
    );
    wait_running(&daemon, 1);
    daemon.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // Draining: no new job is taken.
    daemon.submit("job-late", &build_job("job-late", &["echo late"]));
    let status = daemon.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "{status}");
    let result = daemon.result("job-quick", Duration::from_secs(1));
    assert_eq!(result["status"], "SUCCEEDED");
    assert!(
        daemon.path("spool/inbox/job-late.json").exists(),
        "the late job waits"
    );

    // With a drain shorter than the job: it is stopped, `finally` runs, and it goes back;
    // the receiver of its `job.started` hears that it was released.
    let (hook_url, seen) = http_server(b"ok".to_vec());
    daemon.write_config(&format!("[notifications]\nwebhook = \"{hook_url}/hook\"\n"));
    daemon.edit_config("drain_timeout = \"20s\"", "drain_timeout = \"1s\"");
    fs::remove_file(daemon.path("spool/inbox/job-late.json")).unwrap();
    daemon.launch();
    daemon.submit("job-long", &build_job("job-long", &["sleep 60"]));
    wait_running(&daemon, 1);
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    assert!(
        daemon.path("spool/inbox/job-long.json").exists(),
        "given back:\n{}",
        daemon.log()
    );
    assert!(!daemon.path("spool/done/job-long.json").exists());
    assert!(
        daemon.log().contains("stopped by the agent's drain"),
        "{}",
        daemon.log()
    );
    let events: Vec<String> = seen.lock().unwrap().clone();
    let released = events
        .iter()
        .find(|r| r.contains("\"event\":\"job.released\""))
        .unwrap_or_else(|| panic!("no job.released among {events:?}"));
    assert!(
        released.contains("\"job_id\":\"job-long\"")
            && released.contains("\"status\":\"STOPPED\"")
            && released.contains("given back for another run"),
        "{released}"
    );
    assert!(
        !events.iter().any(|r| r.contains("job.finished")),
        "{events:?}"
    );
    assert!(daemon.containers().is_empty());
    assert!(daemon.job_processes().is_empty());
}

#[test]
fn a_second_sigterm_or_a_sigquit_stops_running_jobs_at_once() {
    let _serial = serial();
    for signal in ["TERM", "QUIT"] {
        let mut daemon = Daemon::start("");
        daemon.submit("job-long", &build_job("job-long", &["sleep 60"]));
        wait_running(&daemon, 1);
        let asked = Instant::now();
        daemon.signal(if signal == "TERM" { "TERM" } else { "QUIT" });
        if signal == "TERM" {
            // The first starts a drain of 20 s; the second cuts it short.
            std::thread::sleep(Duration::from_millis(500));
            assert!(daemon.child.as_mut().unwrap().try_wait().unwrap().is_none());
            daemon.signal("TERM");
        }
        let status = daemon.wait_exit(Duration::from_secs(60));
        let took = asked.elapsed();
        assert!(status.success(), "{signal}: {status}");
        assert!(
            took < Duration::from_secs(15),
            "{signal}: took {took:?}, not cut short:\n{}",
            daemon.log()
        );
        // Stopped gracefully: `finally` ran, and the job went back for another run.
        assert!(
            daemon.log().contains("stopped by the agent's drain"),
            "{signal}: {}",
            daemon.log()
        );
        assert!(
            daemon.path("spool/inbox/job-long.json").exists(),
            "{signal}"
        );
        assert!(daemon.containers().is_empty(), "{signal}");
        assert!(daemon.job_processes().is_empty(), "{signal}");
    }
}

#[test]
fn a_job_delivered_again_while_it_runs_runs_once() {
    let _serial = serial();
    let daemon = Daemon::start("");
    daemon.submit(
        "dup-1",
        &build_job("dup-job", &["sleep 3", "export GREETING=first"]),
    );
    wait_running(&daemon, 1);
    // The same job under another name, and the same file dropped again, while it runs.
    daemon.submit("dup-2", &build_job("dup-job", &["export GREETING=second"]));
    daemon.submit("dup-1", &build_job("dup-job", &["export GREETING=third"]));
    let first = daemon.result("dup-1", Duration::from_secs(60));
    let second = daemon.result("dup-2", Duration::from_secs(60));
    assert_eq!(first["status"], "SUCCEEDED", "{first:#}");
    assert_eq!(first["exported_variables"]["GREETING"], "first");
    assert_eq!(
        second["exported_variables"]["GREETING"], "first",
        "{second:#}"
    );
    // The file dropped again waited in the inbox for the first run, then was answered.
    daemon.wait(Duration::from_secs(30), || {
        !daemon.path("spool/inbox/dup-1.json").exists()
            && fs::read_dir(daemon.path(&format!("spool/claimed/{}", daemon.name)))
                .map(|d| d.count())
                .unwrap_or(0)
                == 0
    });
    let again = daemon.result("dup-1", Duration::from_secs(5));
    assert_eq!(again["exported_variables"]["GREETING"], "first");
    assert_eq!(jobs_total(&daemon, "build", "SUCCEEDED"), 1, "it ran once");
    assert!(daemon.containers().is_empty());
}

#[test]
fn a_buildspec_linking_out_of_the_source_is_refused() {
    let _serial = serial();
    let repos = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::new("");
    daemon.edit_config(
        "[jobs]\n",
        &format!(
            "[jobs]\nallowed_git_paths = [\"{}\"]\n",
            repos.path().display()
        ),
    );
    daemon.launch();
    // A file of the agent's host that a job's author would like to see.
    let outside = daemon.path("outside.yml");
    fs::write(
        &outside,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo host-file-secret\n",
    )
    .unwrap();
    let repo = repos.path().join("app");
    fs::create_dir(&repo).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join("buildspec.yml")).unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &["commit", "-qm", "a link out"],
    ] {
        common::git(&repo, args);
    }
    daemon.submit(
        "link-out",
        &json!({
            "version": 1, "id": "link-out", "kind": "build",
            "source": {"type": "git", "url": format!("file://{}", repo.display())}
        }),
    );
    let result = daemon.result("link-out", Duration::from_secs(60));
    assert_eq!(result["status"], "FAILED", "{result:#}");
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("the buildspec `buildspec.yml` is a link that leads out of the source"),
        "{message}"
    );
    assert!(
        !result.to_string().contains("host-file-secret"),
        "{result:#}"
    );
    assert!(daemon.containers().is_empty());
}

#[test]
fn the_watchdog_is_fed_only_while_the_sources_answer() {
    use std::os::unix::net::UnixDatagram;
    let _serial = serial();
    let mut daemon = Daemon::new("");
    let socket_path = daemon.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // systemd's variables, WATCHDOG_PID naming the daemon itself (the shell execs it).
    let child = std::process::Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" daemon --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_agent"))
        .arg(daemon.path("agent.toml"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(daemon.path("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    daemon.child = Some(child);
    // What the daemon says within `window`.
    let said = |window: Duration| -> String {
        let mut text = String::new();
        let until = Instant::now() + window;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = socket.recv(&mut buf) {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                text.push('\n');
            }
        }
        text
    };
    let started = said(Duration::from_secs(4));
    assert!(started.contains("READY=1"), "{started}\n{}", daemon.log());
    assert!(started.contains("WATCHDOG=1"), "{started}");
    assert!(
        started.contains("STATUS=0 of 2 jobs running; sources answer"),
        "{started}"
    );

    // The spool's directory gone: its polls fail, and the pings stop.
    let spool = daemon.path("spool");
    let aside = daemon.path("spool-aside");
    fs::rename(&spool, &aside).unwrap();
    let failing = said(Duration::from_secs(2));
    let broken = said(Duration::from_secs(3));
    assert!(!broken.contains("WATCHDOG=1"), "{broken}\n{}", daemon.log());
    assert!(
        format!("{failing}{broken}").contains("STATUS=0 of 2 jobs running; failing: spool:"),
        "{failing}{broken}"
    );
    assert!(http_get(daemon.port, "/readyz").starts_with("HTTP/1.1 503"));
    // Back: the failing source is polled again within its backoff, and the pings resume.
    fs::rename(&aside, &spool).unwrap();
    let back = said(Duration::from_secs(10));
    assert!(back.contains("WATCHDOG=1"), "{back}\n{}", daemon.log());
}

#[test]
fn an_sqs_long_poll_does_not_keep_a_spool_job_waiting() {
    let _serial = serial();
    let queue = format!("idle-{}", &uuid_like()[..10]);
    let queue_url = common::boto3(&format!(
        "print(boto3.client('sqs', **kw).create_queue(QueueName='{queue}')['QueueUrl'])"
    ));
    let extra = aws_extra(&format!(
        "[[sources]]\ntype = \"sqs\"\nqueue_url = \"{queue_url}\"\nwait_time = \"20s\"\n"
    ));
    let mut daemon = Daemon::new(&extra);
    daemon.edit_config("concurrency = 2", "concurrency = 1");
    daemon.launch();
    // The empty queue's long poll is under way now, for 20 s.
    std::thread::sleep(Duration::from_secs(2));
    let dropped = Instant::now();
    daemon.submit("spool-1", &build_job("spool-1", &["echo quick"]));
    let result = daemon.result("spool-1", Duration::from_secs(60));
    let took = dropped.elapsed();
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    assert!(
        took < Duration::from_secs(12),
        "the spool job waited {took:?} behind the long poll"
    );
}

#[test]
fn a_workspace_the_agent_cannot_empty_is_emptied_in_a_container() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = serial();
    let image = common::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("job-1");
    // What a build leaves: nested directories, dot files, a directory with no permissions.
    fs::create_dir_all(ws.join("src/node_modules/.bin")).unwrap();
    fs::write(ws.join("src/.env"), "x").unwrap();
    fs::write(ws.join("src/node_modules/.bin/tool"), "x").unwrap();
    fs::write(ws.join("..hidden"), "x").unwrap();
    fs::create_dir(ws.join("src/locked")).unwrap();
    fs::write(ws.join("src/locked/f"), "x").unwrap();
    fs::set_permissions(ws.join("src/locked"), fs::Permissions::from_mode(0o000)).unwrap();
    let instance = format!("test-{}", &uuid_like()[..12]);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(agent::daemon::workspace::empty_in_container(
            &ws, image, &instance,
        ))
        .unwrap();
    assert!(fs::read_dir(&ws).unwrap().next().is_none(), "emptied");
    let left = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=agent.instance={instance}"),
        ])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "its container is gone");
}

#[test]
fn a_cancel_file_stops_a_running_spool_job() {
    let _serial = serial();
    let daemon = Daemon::start("");
    daemon.submit(
        "job-called-off",
        &build_job("job-called-off", &["sleep 60"]),
    );
    wait_running(&daemon, 1);
    let asked = Instant::now();
    fs::write(
        daemon.path("spool/cancel/job-called-off.json"),
        "superseded by a newer commit\nsecond line ignored\n",
    )
    .unwrap();
    let result = daemon.result("job-called-off", Duration::from_secs(40));
    let took = asked.elapsed();
    assert_eq!(result["status"], "STOPPED", "{result:#}");
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("cancel/job-called-off.json: superseded by a newer commit"),
        "{message}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // `finally` ran, the job is settled (not given back), the request is used up.
    let log = fs::read_to_string(result["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("finally"), "{log}");
    assert!(!daemon.path("spool/inbox/job-called-off.json").exists());
    assert!(!daemon.path("spool/cancel/job-called-off.json").exists());
    assert!(daemon.containers().is_empty());
    assert!(daemon.job_processes().is_empty());

    // The next job runs as usual.
    daemon.submit("job-after", &build_job("job-after", &["echo after"]));
    let after = daemon.result("job-after", Duration::from_secs(60));
    assert_eq!(after["status"], "SUCCEEDED", "{after:#}");
}

#[test]
fn sighup_reloads_what_can_change_live() {
    let _serial = serial();
    let daemon = Daemon::start("");
    assert_eq!(daemon.status().unwrap()["concurrency"], 2);
    daemon.edit_config("concurrency = 2", "concurrency = 5");
    daemon.signal("HUP");
    daemon.wait(Duration::from_secs(10), || {
        daemon.status().unwrap()["concurrency"] == 5
    });
    // Editing the file is enough: the daemon watches it.
    let config = fs::read_to_string(daemon.path("agent.toml"))
        .unwrap()
        .replace("concurrency = 5", "concurrency = 3");
    let tmp = daemon.path("agent.toml.new");
    fs::write(&tmp, config).unwrap();
    fs::rename(&tmp, daemon.path("agent.toml")).unwrap();
    daemon.wait(Duration::from_secs(10), || {
        daemon.status().unwrap()["concurrency"] == 3
    });
    // A broken config is not taken; the daemon keeps running on the old one.
    fs::write(
        daemon.path("agent.toml"),
        "version = 1\n[agent]\nconcurrency = 0\n",
    )
    .unwrap();
    daemon.signal("HUP");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(daemon.status().unwrap()["concurrency"], 3);
    assert!(
        daemon.log().contains("the config was not reloaded"),
        "{}",
        daemon.log()
    );
    let readyz = http_get(daemon.port, "/readyz");
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    let healthz = http_get(daemon.port, "/healthz");
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
}

#[test]
fn a_reload_restarts_changed_sources_and_moves_the_listener() {
    let _serial = serial();
    let daemon = Daemon::start("");
    daemon.submit(
        "job-before",
        &build_job("job-before", &["sleep 4", "export GREETING=kept"]),
    );
    wait_running(&daemon, 1);
    let new_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let old_spool = daemon.path("spool").display().to_string();
    let new_spool = daemon.path("spool-2").display().to_string();
    let config = fs::read_to_string(daemon.path("agent.toml"))
        .unwrap()
        .replace(&format!("\"{old_spool}\""), &format!("\"{new_spool}\""))
        .replace(&format!(":{}\"", daemon.port), &format!(":{new_port}\""));
    fs::write(daemon.path("agent.toml"), config).unwrap();
    daemon.signal("HUP");
    daemon.wait_log("job sources restarted", Duration::from_secs(20));
    // The listener moved.
    daemon.wait(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", new_port)).is_ok()
    });
    assert!(http_get(new_port, "/healthz").contains("200"));
    assert!(std::net::TcpStream::connect(("127.0.0.1", daemon.port)).is_err());
    // The job the old source delivered finishes and is settled there.
    let before = daemon.result("job-before", Duration::from_secs(60));
    assert_eq!(before["status"], "SUCCEEDED", "{before:#}");
    assert_eq!(before["exported_variables"]["GREETING"], "kept");
    // The new spool is served; the old one is not.
    let inbox = daemon.path("spool-2/inbox");
    fs::write(
        inbox.join(".job-after.tmp"),
        serde_json::to_vec(&build_job("job-after", &["echo after"])).unwrap(),
    )
    .unwrap();
    fs::rename(inbox.join(".job-after.tmp"), inbox.join("job-after.json")).unwrap();
    daemon.submit("job-orphan", &build_job("job-orphan", &["echo orphan"]));
    let path = daemon.path("spool-2/done/job-after.json");
    daemon.wait(Duration::from_secs(60), || path.exists());
    let after: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(after["status"], "SUCCEEDED", "{after:#}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(daemon.path("spool/inbox/job-orphan.json").exists());

    // A change read only at start is reported, and changes nothing else.
    daemon.edit_config(
        "drain_timeout = \"20s\"",
        "drain_timeout = \"20s\"\nlog_format = \"json\"",
    );
    daemon.signal("HUP");
    daemon.wait_log(
        "take effect when the agent next starts",
        Duration::from_secs(10),
    );
    assert_eq!(daemon.log().matches("job sources restarted").count(), 1);
}

#[test]
fn a_deploy_job_runs_the_appspec_lifecycle() {
    let _serial = serial();
    let daemon = Daemon::start("");
    let apps = daemon.path("apps");
    fs::create_dir_all(&apps).unwrap();
    let mut files = serde_json::Map::new();
    files.insert(
        "appspec.yml".into(),
        json!(format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}/web\nhooks:\n  AfterInstall:\n    - location: hooks/after.sh\n",
            apps.display()
        )),
    );
    files.insert("app/index.html".into(), json!("<h1>v1</h1>\n"));
    files.insert(
        "hooks/after.sh".into(),
        json!(format!(
            "#!/bin/sh\necho \"$LIFECYCLE_EVENT $DEPLOYMENT_ID $APPLICATION_NAME $APP_ENV\" > {}/hook.out\n",
            apps.display()
        )),
    );
    let job = json!({
        "version": 1,
        "id": "deploy-web-1",
        "kind": "deploy",
        "source": {"type": "inline", "files": files.clone()},
        "env": {"APP_ENV": "production", "LIFECYCLE_EVENT": "not-this"},
        "deploy": {"application_name": "web", "deployment_group": "prod"}
    });
    daemon.submit("deploy-web-1", &job);
    let result = daemon.result("deploy-web-1", Duration::from_secs(30));
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    assert_eq!(result["kind"], "deploy");
    assert_eq!(
        fs::read_to_string(apps.join("web/index.html")).unwrap(),
        "<h1>v1</h1>\n"
    );
    assert_eq!(
        fs::read_to_string(apps.join("hook.out")).unwrap(),
        "AfterInstall deploy-web-1 web production\n"
    );
    assert_eq!(result["summary"]["deployment_group_name"], "prod");

    // The job's time limit covers the whole deployment.
    files.insert("hooks/after.sh".into(), json!("#!/bin/sh\nsleep 60\n"));
    daemon.submit(
        "deploy-web-2",
        &json!({
            "version": 1, "id": "deploy-web-2", "kind": "deploy",
            "source": {"type": "inline", "files": files},
            "timeout": "3s",
            "deploy": {"application_name": "web", "deployment_group": "prod"}
        }),
    );
    let started = Instant::now();
    let timed_out = daemon.result("deploy-web-2", Duration::from_secs(60));
    assert_eq!(timed_out["status"], "TIMED_OUT", "{timed_out:#}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(daemon.job_processes().is_empty());
}

#[test]
fn config_check_reports_every_problem_with_its_position() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    fs::write(
        &path,
        "version = 1\n[agent]\nconcurrency = 0\n[jobs]\ndefault_timout = \"1h\"\n",
    )
    .unwrap();
    let out = agent()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agent.toml:5:1"), "{stderr}");
    assert!(stderr.contains("default_timeout"), "did-you-mean: {stderr}");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/agent.toml");
    let out = agent()
        .args(["config", "check"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sqs_jobs_run_and_poison_messages_go_to_the_dead_letter_queue() {
    let _serial = serial();
    let queue = format!("jobs-{}", &uuid_like()[..10]);
    let (queue_url, dlq_url) = queue_with_dead_letters(&queue);
    let extra = aws_extra(&format!(
        "[[sources]]\ntype = \"sqs\"\nqueue_url = \"{queue_url}\"\nwait_time = \"1s\"\nvisibility_timeout = \"30s\"\ndead_letter_queue_url = \"{dlq_url}\"\n"
    ));
    // The [aws] table must come before the sources.
    let daemon = Daemon::start(&extra);
    let job = build_job("sqs-job-1", &["export GREETING=from-sqs"]);
    let body = daemon.path("job.json");
    fs::write(&body, serde_json::to_vec(&job).unwrap()).unwrap();
    common::boto3(&format!(
        "sqs = boto3.client('sqs', **kw)\nsqs.send_message(QueueUrl='{queue_url}', MessageBody=open('{}').read())\nsqs.send_message(QueueUrl='{queue_url}', MessageBody='not a job')",
        body.display()
    ));
    let result = daemon.stored_result("sqs-job-1", Duration::from_secs(60));
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    assert_eq!(result["exported_variables"]["GREETING"], "from-sqs");
    assert!(
        result["source"].as_str().unwrap().starts_with("sqs:"),
        "{result:#}"
    );
    // The queue is empty; the malformed message is in the dead-letter queue with its reason.
    daemon.wait_queues(&[(&queue_url, 0), (&dlq_url, 1)], Duration::from_secs(20));
    let reason = common::boto3(&format!(
        "sqs = boto3.client('sqs', **kw)\nm = sqs.receive_message(QueueUrl='{dlq_url}', MessageAttributeNames=['All'])['Messages'][0]\nprint(m['Body'])\nprint(m['MessageAttributes']['agent-reject-reason']['StringValue'])"
    ));
    assert!(reason.starts_with("not a job\n"), "{reason}");
    assert!(reason.contains("not a valid JobSpec"), "{reason}");
}

#[test]
fn a_message_delivered_too_often_is_not_run_and_goes_to_the_dead_letter_queue() {
    let _serial = serial();
    let queue = format!("poison-{}", &uuid_like()[..10]);
    let (queue_url, dlq_url) = queue_with_dead_letters(&queue);
    // Received once already by an agent that died with it: the daemon's receive is the
    // second, past a limit of one.
    let body = serde_json::to_string(&build_job("poison-1", &["echo never-runs"])).unwrap();
    let body_file = tempfile::NamedTempFile::new().unwrap();
    fs::write(body_file.path(), &body).unwrap();
    common::boto3(&format!(
        "sqs = boto3.client('sqs', **kw)\nsqs.send_message(QueueUrl='{queue_url}', MessageBody=open('{}').read())\nm = sqs.receive_message(QueueUrl='{queue_url}', VisibilityTimeout=0, AttributeNames=['All'])['Messages']\nassert len(m) == 1",
        body_file.path().display()
    ));
    let extra = aws_extra(&format!(
        "[[sources]]\ntype = \"sqs\"\nqueue_url = \"{queue_url}\"\nwait_time = \"1s\"\nmax_receive_count = 1\ndead_letter_queue_url = \"{dlq_url}\"\n"
    ));
    let daemon = Daemon::start(&extra);
    let result = daemon.stored_result("poison-1", Duration::from_secs(60));
    assert_eq!(result["status"], "FAILED", "{result:#}");
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("delivered 2 times without a result (the limit is 1)"),
        "{message}"
    );
    daemon.wait_queues(&[(&queue_url, 0), (&dlq_url, 1)], Duration::from_secs(20));
    assert_eq!(jobs_total(&daemon, "build", "SUCCEEDED"), 0);
    assert!(daemon.containers().is_empty());
    assert!(result["log"].is_null(), "nothing ran: {result:#}");
}

#[test]
fn three_daemons_share_one_queue_and_each_job_has_one_result() {
    let _serial = serial();
    const JOBS: usize = 60;
    let queue = format!("fleet-{}", &uuid_like()[..10]);
    let queue_url = common::boto3(&format!(
        "print(boto3.client('sqs', **kw).create_queue(QueueName='{queue}')['QueueUrl'])"
    ));
    let extra = aws_extra(&format!(
        "[[sources]]\ntype = \"sqs\"\nqueue_url = \"{queue_url}\"\nwait_time = \"1s\"\nvisibility_timeout = \"60s\"\n"
    ));
    let fleet: Vec<Daemon> = (0..3).map(|_| Daemon::start(&extra)).collect();
    let jobs = fleet[0].path("fleet-jobs");
    fs::create_dir_all(&jobs).unwrap();
    for i in 0..JOBS {
        let job = build_job(
            &format!("fleet-{i}"),
            &[&format!("export GREETING=job-{i}")],
        );
        fs::write(
            jobs.join(format!("{i}.json")),
            serde_json::to_vec(&job).unwrap(),
        )
        .unwrap();
    }
    common::boto3(&format!(
        "import os\nsqs = boto3.client('sqs', **kw)\nnames = sorted(os.listdir('{d}'))\nfor i in range(0, len(names), 10):\n    sqs.send_message_batch(QueueUrl='{queue_url}', Entries=[{{'Id': str(j), 'MessageBody': open(os.path.join('{d}', n)).read()}} for j, n in enumerate(names[i:i + 10])])",
        d = jobs.display()
    ));
    let results = || -> Vec<(usize, Value)> {
        fleet
            .iter()
            .enumerate()
            .flat_map(|(n, d)| {
                fs::read_dir(d.path("state/results"))
                    .map(|entries| {
                        entries
                            .flatten()
                            // Results are written aside and renamed in: only whole ones count.
                            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                            .filter_map(|e| {
                                let bytes = fs::read(e.path()).ok()?;
                                Some((n, serde_json::from_slice(&bytes).unwrap()))
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect()
    };
    wait_until(
        Duration::from_secs(240),
        || results().len() >= JOBS,
        || format!("{} of {JOBS} results", results().len()),
    );
    std::thread::sleep(Duration::from_secs(2));
    let all = results();
    assert_eq!(all.len(), JOBS, "no job ran twice to completion");
    let mut ids: Vec<String> = all
        .iter()
        .map(|(_, r)| r["job_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), JOBS, "every job has exactly one result");
    for (_, result) in &all {
        assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
        let id = result["job_id"]
            .as_str()
            .unwrap()
            .trim_start_matches("fleet-");
        assert_eq!(
            result["exported_variables"]["GREETING"],
            format!("job-{id}")
        );
    }
    let per_daemon: Vec<usize> = (0..3)
        .map(|n| all.iter().filter(|(d, _)| *d == n).count())
        .collect();
    assert!(
        per_daemon.iter().filter(|n| **n > 0).count() >= 2,
        "the work was shared: {per_daemon:?}"
    );
    let left = common::boto3(&format!(
        "a = boto3.client('sqs', **kw).get_queue_attributes(QueueUrl='{queue_url}', AttributeNames=['All'])['Attributes']\nprint(int(a['ApproximateNumberOfMessages']) + int(a['ApproximateNumberOfMessagesNotVisible']))"
    ));
    assert_eq!(left, "0", "every message deleted");
    // Each daemon counts the jobs it ran to the end; a job run twice (on one daemon, whose
    // second result replaces its first, or on two) would count twice.
    let completed: u64 = fleet
        .iter()
        .map(|d| jobs_total(d, "build", "SUCCEEDED"))
        .sum();
    assert_eq!(
        completed, JOBS as u64,
        "no job ran twice to completion: {per_daemon:?}"
    );
    for daemon in &fleet {
        assert!(daemon.containers().is_empty());
        daemon.wait_workspaces_removed(Duration::from_secs(30));
    }
}

/// A new SQS queue and its dead-letter queue in moto: their URLs.
fn queue_with_dead_letters(queue: &str) -> (String, String) {
    let urls = common::boto3(&format!(
        "sqs = boto3.client('sqs', **kw)\nq = sqs.create_queue(QueueName='{queue}')['QueueUrl']\nd = sqs.create_queue(QueueName='{queue}-dlq')['QueueUrl']\nprint(q)\nprint(d)"
    ));
    let mut lines = urls.lines();
    (
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
    )
}

/// A daemon config's `[aws]` table pointing at moto, then `rest` (sources come after it).
fn aws_extra(rest: &str) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n{rest}",
        common::moto()
    )
}

/// `agent_jobs_total{kind,status}` of a daemon's `/metrics`; 0 when absent.
fn jobs_total(daemon: &Daemon, kind: &str, status: &str) -> u64 {
    let metrics = http_get(daemon.port, "/metrics");
    let prefix = format!("agent_jobs_total{{kind=\"{kind}\",status=\"{status}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[test]
fn a_fleet_shares_results_through_s3_so_a_job_runs_once() {
    let _serial = serial();
    let bucket = format!("results-{}", &uuid_like()[..10]);
    common::boto3(&format!(
        "boto3.client('s3', **kw).create_bucket(Bucket='{bucket}')"
    ));
    let extra = aws_extra(&format!(
        "[storage]\nresults = \"s3://{bucket}/fleet\"\n# sqs-less: credentials for S3 come from the environment\n"
    ));
    let first = Daemon::start(&extra);
    let second = Daemon::start(&extra);
    first.submit(
        "shared-1",
        &build_job("shared-1", &["export GREETING=once"]),
    );
    let done = first.result("shared-1", Duration::from_secs(60));
    assert_eq!(done["status"], "SUCCEEDED");
    let stored = common::boto3(&format!(
        "print(boto3.client('s3', **kw).get_object(Bucket='{bucket}', Key='fleet/shared-1.json')['Body'].read().decode())"
    ));
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["agent"], first.name.as_str());
    // The same job reaching another agent of the fleet is acknowledged with that result.
    second.submit(
        "shared-1",
        &build_job("shared-1", &["export GREETING=twice"]),
    );
    let again = second.result("shared-1", Duration::from_secs(30));
    assert_eq!(again["agent"], first.name.as_str(), "{again:#}");
    assert_eq!(again["exported_variables"]["GREETING"], "once");
    assert!(
        !second.path("state/results/shared-1.json").exists(),
        "it did not run there"
    );
}

type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// The webhook notifications of one event among those `seen`.
fn events(seen: &Seen, name: &str) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains(&format!("\"event\":\"{name}\"")))
        .cloned()
        .collect()
}

/// A daemon whose job `kept-1` finished while the fleet's store (`bucket`, not created yet)
/// refused its result, drained and stopped: the result kept as pending, the job back in the
/// inbox. Returns the stopped daemon, the job's webhook notifications and the kept result.
fn drained_with_a_result_it_could_not_store(bucket: &str) -> (Daemon, Seen, Value) {
    let (hook_url, seen) = http_server(b"ok".to_vec());
    let extra = aws_extra(&format!("[storage]\nresults = \"s3://{bucket}/fleet\"\n"));
    let mut daemon = Daemon::new(&extra);
    daemon.edit_config("drain_timeout = \"20s\"", "drain_timeout = \"2s\"");
    daemon.launch();
    // The job's own webhook, which only the job names: a restart must announce to it too.
    let mut job = build_job("kept-1", &["export GREETING=once"]);
    job["notify"] = json!({ "webhook": format!("{hook_url}/hook") });
    daemon.submit("kept-1", &job);
    daemon.wait_log(
        "cannot store the result; trying again",
        Duration::from_secs(60),
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(60)).success());
    let pending: Value =
        serde_json::from_slice(&fs::read(daemon.path("state/pending/kept-1.json")).unwrap())
            .unwrap();
    let kept = pending["result"].clone();
    assert_eq!(kept["status"], "SUCCEEDED", "{pending:#}");
    assert!(daemon.path("spool/inbox/kept-1.json").exists());
    assert!(!daemon.path("spool/done/kept-1.json").exists());
    assert_eq!(events(&seen, "job.started").len(), 1);
    assert_eq!(
        events(&seen, "job.released").len(),
        1,
        "{:?}",
        seen.lock().unwrap()
    );
    assert!(events(&seen, "job.finished").is_empty());
    common::boto3(&format!(
        "boto3.client('s3', **kw).create_bucket(Bucket='{bucket}')"
    ));
    (daemon, seen, kept)
}

fn fleet_object(bucket: &str, job: &str) -> Value {
    let text = common::boto3(&format!(
        "print(boto3.client('s3', **kw).get_object(Bucket='{bucket}', Key='fleet/{job}.json')['Body'].read().decode())"
    ));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_result_the_drain_could_not_store_is_stored_and_announced_at_the_next_start() {
    let _serial = serial();
    let bucket = format!("late-{}", &uuid_like()[..10]);
    let (mut daemon, seen, kept) = drained_with_a_result_it_could_not_store(&bucket);
    // Once the store exists, the next start stores the result it kept and announces it,
    // without running the job again.
    daemon.launch();
    let done = daemon.result("kept-1", Duration::from_secs(60));
    assert_eq!(done["finished_at"], kept["finished_at"], "{done:#}");
    assert_eq!(done["exported_variables"]["GREETING"], "once");
    let pending_path = daemon.path("state/pending/kept-1.json");
    daemon.wait(Duration::from_secs(30), || {
        !events(&seen, "job.finished").is_empty() && !pending_path.exists()
    });
    // Both the start's pass over pending results and the job's redelivery find it: a second
    // announcement would come within moments.
    std::thread::sleep(Duration::from_secs(3));
    let finished = events(&seen, "job.finished");
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert!(
        finished[0].contains("\"job_id\":\"kept-1\"")
            && finished[0].contains(&format!("\"finished_at\":{}", kept["finished_at"])),
        "{}",
        finished[0]
    );
    assert_eq!(events(&seen, "job.started").len(), 1, "not started again");
    assert_eq!(
        fleet_object(&bucket, "kept-1")["finished_at"],
        kept["finished_at"]
    );
    let settled: Value =
        serde_json::from_slice(&fs::read(daemon.path("state/results/kept-1.json")).unwrap())
            .unwrap();
    assert_eq!(settled["finished_at"], kept["finished_at"], "{settled:#}");
}

#[test]
fn a_kept_result_gives_way_to_one_another_agent_stored_since() {
    let _serial = serial();
    let bucket = format!("rerun-{}", &uuid_like()[..10]);
    let (mut daemon, seen, kept) = drained_with_a_result_it_could_not_store(&bucket);
    // Meanwhile another agent of the fleet ran the job again and stored its own result.
    let mut theirs = kept.clone();
    theirs["agent"] = json!("other-agent");
    theirs["finished_at"] = json!("2030-01-01T00:00:00Z");
    let body = serde_json::to_string(&theirs).unwrap().replace('\'', "\\'");
    common::boto3(&format!(
        "boto3.client('s3', **kw).put_object(Bucket='{bucket}', Key='fleet/kept-1.json', Body=r'{body}')"
    ));
    daemon.launch();
    let done = daemon.result("kept-1", Duration::from_secs(60));
    assert_eq!(done["agent"], "other-agent", "{done:#}");
    let pending_path = daemon.path("state/pending/kept-1.json");
    daemon.wait(Duration::from_secs(30), || !pending_path.exists());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        fleet_object(&bucket, "kept-1")["agent"],
        "other-agent",
        "not overwritten"
    );
    assert!(
        events(&seen, "job.finished").is_empty(),
        "the other agent announced its own: {:?}",
        seen.lock().unwrap()
    );
    assert_eq!(events(&seen, "job.started").len(), 1, "not started again");
}

#[test]
fn job_secrets_labels_and_uploads_reach_the_build_the_result_and_the_metrics() {
    let _serial = serial();
    let unique = &uuid_like()[..10];
    let bucket = format!("artifacts-{unique}");
    common::boto3(&format!(
        "boto3.client('s3', **kw).create_bucket(Bucket='{bucket}')\n\
         boto3.client('ssm', **kw).put_parameter(Name='/{unique}/db', Value='Db-Pa55-{unique}', Type='SecureString')\n\
         boto3.client('secretsmanager', **kw).create_secret(Name='{unique}/api', SecretString='{{\"key\": \"Api-K3y-{unique}\"}}')"
    ));
    let extra = aws_extra("");
    let mut daemon = Daemon::new(&extra);
    daemon.edit_config(
        "concurrency = 2\n",
        "concurrency = 2\nlabels = { os = \"linux\", team = \"platform\" }\n",
    );
    daemon.launch();
    let buildspec = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"db=$DB_PASSWORD api=$API_KEY\"\n      - test \"$DB_PASSWORD\" = \"Db-Pa55-$UNIQUE\" && test \"$API_KEY\" = \"Api-K3y-$UNIQUE\" && echo secrets-ok\n      - head -c 300000 /dev/zero > out.bin\nartifacts:\n  files: [out.bin]\n";
    daemon.submit(
        "secrets-1",
        &json!({
            "version": 1, "id": "secrets-1", "kind": "build",
            "source": {"type": "inline", "files": {"buildspec.yml": buildspec}},
            "env": {"UNIQUE": unique},
            "secrets": {
                "parameter_store": {"DB_PASSWORD": format!("/{unique}/db")},
                "secrets_manager": {"API_KEY": format!("{unique}/api:key")}
            },
            "role": {"arn": "arn:aws:iam::123456789012:role/deploy-app"},
            "artifacts": {"s3": format!("s3://{bucket}/builds")},
            "labels": {"pipeline": "payments"}
        }),
    );
    let result = daemon.result("secrets-1", Duration::from_secs(90));
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    let log = fs::read_to_string(result["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("secrets-ok"), "{log}");
    assert!(log.contains("db=*** api=***"), "{log}");
    for secret in [format!("Db-Pa55-{unique}"), format!("Api-K3y-{unique}")] {
        assert!(!log.contains(&secret), "{log}");
        assert!(!result.to_string().contains(&secret), "{result:#}");
        assert!(!daemon.log().contains(&secret));
    }
    assert_eq!(result["labels"]["pipeline"], "payments", "{result:#}");
    assert_eq!(result["agent_labels"]["team"], "platform", "{result:#}");
    let status = daemon.status().unwrap();
    assert_eq!(status["labels"]["os"], "linux", "{status:#}");
    let metrics = http_get(daemon.port, "/metrics");
    assert!(
        metrics.contains("agent_label{key=\"team\",value=\"platform\"} 1"),
        "{metrics}"
    );
    let uploaded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("agent_uploaded_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(uploaded >= 300_000, "{metrics}");
}

#[test]
fn a_buildspec_kept_in_s3_is_read_with_the_jobs_role() {
    let _serial = serial();
    let bucket = format!("ci-config-{}", &uuid_like()[..10]);
    common::boto3(&format!(
        "s3 = boto3.client('s3', **kw)\ns3.create_bucket(Bucket='{bucket}')\ns3.put_object(Bucket='{bucket}', Key='buildspecs/shared.yml', Body=b'version: 0.2\\nenv:\\n  exported-variables: [APP]\\nphases:\\n  build:\\n    commands:\\n      - export APP=$(cat app.txt)\\n')"
    ));
    let extra = aws_extra("");
    let daemon = Daemon::start(&extra);
    let job = |id: &str, buildspec: &str| {
        json!({
            "version": 1, "id": id, "kind": "build",
            "source": {"type": "inline", "files": {"app.txt": "payments"}},
            "buildspec": {"s3": buildspec},
            "role": {"arn": "arn:aws:iam::123456789012:role/deploy-ci"}
        })
    };
    daemon.submit(
        "s3-spec-1",
        &job(
            "s3-spec-1",
            &format!("arn:aws:s3:::{bucket}/buildspecs/shared.yml"),
        ),
    );
    let result = daemon.result("s3-spec-1", Duration::from_secs(60));
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    assert_eq!(result["exported_variables"]["APP"], "payments");
    // A buildspec that is not there fails the job, naming it.
    daemon.submit(
        "s3-spec-2",
        &job(
            "s3-spec-2",
            &format!("s3://{bucket}/buildspecs/missing.yml"),
        ),
    );
    let missing = daemon.result("s3-spec-2", Duration::from_secs(60));
    assert_eq!(missing["status"], "FAILED", "{missing:#}");
    let message = missing["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "cannot read the buildspec s3://{bucket}/buildspecs/missing.yml"
        )),
        "{message}"
    );
}

#[test]
fn webhooks_announce_jobs_and_https_sources_are_fetched() {
    let _serial = serial();
    // The source: a tarball served over HTTP on loopback.
    let files_url = serve_tarball(&[
        (
            "buildspec.yml",
            "version: 0.2\nenv:\n  exported-variables: [FROM]\nphases:\n  build:\n    commands:\n      - export FROM=$(cat origin.txt)\n",
        ),
        ("origin.txt", "tarball"),
    ]);
    let (hook_url, seen) = http_server(b"ok".to_vec());
    let daemon = Daemon::start(&format!(
        "[notifications]\nwebhook = \"{hook_url}/hooks/agent?token=s3cr3t\"\n"
    ));
    let job = json!({
        "version": 1,
        "id": "https-1",
        "kind": "build",
        "source": {"type": "https", "url": format!("{files_url}/app.tgz")}
    });
    daemon.submit("https-1", &job);
    let result = daemon.result("https-1", Duration::from_secs(60));
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    assert_eq!(result["exported_variables"]["FROM"], "tarball");
    wait_until(
        Duration::from_secs(20),
        || seen.lock().unwrap().len() >= 2,
        || format!("webhooks: {:?}\n{}", seen.lock().unwrap(), daemon.log()),
    );
    let requests = seen.lock().unwrap().clone();
    assert!(
        requests[0].starts_with("POST /hooks/agent?token=s3cr3t"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0].contains("\"event\":\"job.started\""),
        "{}",
        requests[0]
    );
    assert!(
        requests[1].contains("\"event\":\"job.finished\""),
        "{}",
        requests[1]
    );
    assert!(
        requests[1].contains("\"status\":\"SUCCEEDED\"")
            && requests[1].contains("\"job_id\":\"https-1\""),
        "{}",
        requests[1]
    );
    // A job whose source cannot be fetched was started too, and is announced as such.
    let (missing_url, _) = common::daemon::http_server_answering("404 Not Found", "", Vec::new());
    daemon.submit(
        "https-2",
        &json!({
            "version": 1, "id": "https-2", "kind": "build",
            "source": {"type": "https", "url": format!("{missing_url}/gone.tgz")}
        }),
    );
    let failed = daemon.result("https-2", Duration::from_secs(60));
    assert_eq!(failed["status"], "FAILED", "{failed:#}");
    let announced = |event: &str| {
        seen.lock().unwrap().iter().any(|r| {
            r.contains(&format!("\"event\":\"{event}\"")) && r.contains("\"job_id\":\"https-2\"")
        })
    };
    wait_until(
        Duration::from_secs(20),
        || announced("job.started") && announced("job.finished"),
        || format!("webhooks: {:?}", seen.lock().unwrap()),
    );
    assert!(
        !daemon.log().contains("s3cr3t"),
        "the webhook's token is never logged"
    );
}

#[test]
fn a_git_source_is_checked_out_at_its_commit() {
    let _serial = serial();
    let server = GitServer::start();
    let (url, commit) = (server.url.clone(), server.commit.clone());
    let daemon = Daemon::start("");
    let job = json!({
        "version": 1,
        "id": "git-1",
        "kind": "build",
        "source": {"type": "git", "url": url, "ref": "main", "depth": 1}
    });
    daemon.submit("git-1", &job);
    let result = daemon.result("git-1", Duration::from_secs(60));
    drop(server);
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    assert_eq!(result["exported_variables"]["COMMIT"], commit.as_str());
    assert_eq!(result["exported_variables"]["REPO"], url.as_str());
    assert_eq!(result["exported_variables"]["BRANCH_FILE"], "main");
    // The mirror is kept for the next job of this repository.
    assert!(
        fs::read_dir(daemon.path("state/git/mirrors"))
            .unwrap()
            .next()
            .is_some()
    );
}

#[test]
fn a_local_git_repository_is_cloned_only_from_an_allowed_directory() {
    let _serial = serial();
    let daemon = Daemon::start("");
    let repos = tempfile::tempdir().unwrap();
    let repo = repos.path().join("app");
    fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| common::git(&repo, args);
    git(&["init", "-q", "-b", "main"]);
    fs::write(
        repo.join("buildspec.yml"),
        "version: 0.2\nenv:\n  exported-variables: [COMMIT]\nphases:\n  build:\n    commands:\n      - export COMMIT=$CODEBUILD_RESOLVED_SOURCE_VERSION\n",
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "first"]);
    let commit = git(&["rev-parse", "HEAD"]);
    let job = |id: &str| {
        json!({
            "version": 1,
            "id": id,
            "kind": "build",
            "source": {"type": "git", "url": format!("file://{}", repo.display())}
        })
    };
    daemon.submit("local-1", &job("local-1"));
    let refused = daemon.result("local-1", Duration::from_secs(60));
    assert_eq!(refused["status"], "REJECTED", "{refused:#}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("jobs.allowed_git_paths")
    );

    // Allowed by a live reload.
    daemon.edit_config(
        "[jobs]\n",
        &format!(
            "[jobs]\nallowed_git_paths = [\"{}\"]\n",
            repos.path().display()
        ),
    );
    daemon.signal("HUP");
    daemon.wait_log("config reloaded", Duration::from_secs(10));
    daemon.submit("local-2", &job("local-2"));
    let built = daemon.result("local-2", Duration::from_secs(60));
    assert_eq!(built["status"], "SUCCEEDED", "{built:#}");
    assert_eq!(built["exported_variables"]["COMMIT"], commit.as_str());
}

#[test]
fn a_private_git_source_uses_the_configs_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = serial();
    let token = "tok-5b1e9f0c3a";
    let server = GitServer::start_with_auth("ci-bot", token);
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("git-token");
    fs::write(&token_file, format!("{token}\n")).unwrap();
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!(
        "[[git_credentials]]\nurl_prefix = \"{}/\"\nusername = \"ci-bot\"\ntoken_file = \"{}\"\n",
        server.origin,
        token_file.display()
    );
    let daemon = Daemon::start(&extra);
    let job = |id: &str| {
        json!({
            "version": 1,
            "id": id,
            "kind": "build",
            "source": {"type": "git", "url": server.url, "ref": "main"}
        })
    };
    daemon.submit("private-1", &job("private-1"));
    let result = daemon.result("private-1", Duration::from_secs(60));
    assert_eq!(
        result["status"],
        "SUCCEEDED",
        "{result:#}\n{}",
        daemon.log()
    );
    assert_eq!(
        result["exported_variables"]["COMMIT"],
        server.commit.as_str()
    );

    // The file is read for each job: a rotated (here: wrong) token applies at once.
    fs::write(&token_file, "revoked-token\n").unwrap();
    daemon.submit("private-2", &job("private-2"));
    let refused = daemon.result("private-2", Duration::from_secs(60));
    // Refused credentials will not pass on a retry: the job fails, the agent is fine.
    assert_eq!(refused["status"], "FAILED", "{refused:#}");
    // A secret file everyone may read is refused, with the fix.
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o644)).unwrap();
    daemon.submit("private-3", &job("private-3"));
    let open = daemon.result("private-3", Duration::from_secs(60));
    assert_eq!(open["status"], "FAULT", "{open:#}");
    assert!(
        open["message"].as_str().unwrap().contains("chmod o-r"),
        "{open:#}"
    );
    for text in [
        daemon.log(),
        fs::read_to_string(daemon.path("spool/done/private-1.json")).unwrap(),
    ] {
        assert!(
            !text.contains(token) && !text.contains("revoked-token"),
            "{text}"
        );
    }
    drop(server);
}

#[test]
fn a_codepipeline_job_runs_and_reports_its_outputs() {
    use common::codepipeline_fake::{ActionType, ArtifactAt, NewJob};
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (fake, bucket, extra) = pipeline_with_source(
        &runtime,
        "version: 0.2\nenv:\n  exported-variables: [IMAGE_TAG]\nphases:\n  build:\n    commands:\n      - export IMAGE_TAG=v-$CODEPIPELINE_SOURCE_REVISION\n      - mkdir -p out && echo built > out/app.txt\nartifacts:\n  base-directory: out\n  files: ['**/*']\n",
        "query_param = { Fleet = \"linux\" }\n",
    );
    // The action type routes jobs by fleet; this agent serves the `linux` one.
    let action = ActionType::new("Build", "AgentBuild", "1").queryable("Fleet");
    fake.register(&action);
    let theirs = fake.add_job(NewJob::new(action.clone()).config("Fleet", "arm64"));
    let mut source = ArtifactAt::new("SourceOutput", &bucket, "web/SourceArti/abc123.zip");
    source.revision = Some("abc123".to_string());
    let job_id = fake.add_job(
        NewJob::new(action)
            .config("Fleet", "linux")
            .input(source)
            .output(ArtifactAt::new(
                "BuildOutput",
                &bucket,
                "web/BuildOutp/out.zip",
            )),
    );
    let daemon = Daemon::start(&extra);
    daemon.wait(Duration::from_secs(90), || !fake.results().is_empty());
    assert_eq!(fake.status(&theirs), "Queued", "another fleet's job");
    let reported = &fake.results()[0];
    assert!(
        reported.succeeded(),
        "{}\n{}",
        reported.message(),
        daemon.log()
    );
    assert_eq!(
        reported
            .output_variables()
            .get("IMAGE_TAG")
            .map(String::as_str),
        Some("v-abc123")
    );
    let listing = common::boto3(&format!(
        "import zipfile, io\ns3 = boto3.client('s3', **kw)\nz = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket='{bucket}', Key='web/BuildOutp/out.zip')['Body'].read()))\nprint(sorted(z.namelist()), z.read('app.txt').decode().strip())"
    ));
    assert_eq!(listing, "['app.txt'] built");
    let stored = daemon.path(&format!("state/results/cp-{job_id}.json"));
    assert!(stored.exists(), "the result is stored under the job id");
    drop(daemon);
    drop(runtime);
}

/// A pipeline bucket with a zipped `buildspec.yml` as the source artifact, and the
/// CodePipeline fake in front of moto; the daemon config's `[aws]` and source tables.
fn pipeline_with_source(
    runtime: &tokio::runtime::Runtime,
    buildspec: &str,
    source_extra: &str,
) -> (common::codepipeline_fake::Fake, String, String) {
    use common::codepipeline_fake::Fake;
    let fake = runtime.block_on(Fake::start(Some(common::moto())));
    let bucket = format!("pipeline-{}", &uuid_like()[..10]);
    let zip_path = std::env::temp_dir().join(format!("{bucket}.zip"));
    let mut zip = zip::ZipWriter::new(fs::File::create(&zip_path).unwrap());
    zip.start_file("buildspec.yml", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut zip, buildspec.as_bytes()).unwrap();
    zip.finish().unwrap();
    common::boto3(&format!(
        "s3 = boto3.client('s3', **kw)\ns3.create_bucket(Bucket='{bucket}')\ns3.upload_file('{}', '{bucket}', 'web/SourceArti/abc123.zip')",
        zip_path.display()
    ));
    let _ = fs::remove_file(&zip_path);
    let extra = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[[sources]]\ntype = \"codepipeline\"\ncategory = \"Build\"\nprovider = \"AgentBuild\"\nversion = \"1\"\npoll_interval = \"1s\"\n{source_extra}",
        fake.url()
    );
    (fake, bucket, extra)
}

#[test]
fn a_build_longer_than_the_job_timeout_goes_on_under_continuation_jobs() {
    use common::codepipeline_fake::{ActionType, ArtifactAt, NewJob};
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (fake, bucket, extra) = pipeline_with_source(
        &runtime,
        "version: 0.2\nenv:\n  exported-variables: [DONE]\nphases:\n  build:\n    commands:\n      - sleep 18\n      - export DONE=yes\n      - mkdir -p out && echo built > out/app.txt\nartifacts:\n  base-directory: out\n  files: ['**/*']\n",
        "job_timeout = \"8s\"\n",
    );
    // The service times out any job in progress 8 s without a result: the build hands its
    // job back every 4 s, and its end has at least 4 s to be reported.
    fake.set_job_timeout(Duration::from_secs(8));
    let action = ActionType::new("Build", "AgentBuild", "1");
    let job_id = fake.add_job(
        NewJob::new(action)
            .input(ArtifactAt::new(
                "SourceOutput",
                &bucket,
                "web/SourceArti/abc123.zip",
            ))
            .output(ArtifactAt::new(
                "BuildOutput",
                &bucket,
                "web/BuildOutp/out.zip",
            )),
    );
    let daemon = Daemon::start(&extra);
    daemon.wait(Duration::from_secs(120), || {
        fake.results()
            .iter()
            .any(|r| r.request.get("continuationToken").is_none())
    });
    let execution = fake.execution(&job_id);
    assert!(
        execution.len() >= 3,
        "an 18 s build under an 8 s job timeout needs continuations: {execution:?}"
    );
    assert!(
        execution.iter().all(|(_, status)| status == "Succeeded"),
        "no job timed out or failed: {execution:?}\n{}",
        daemon.log()
    );
    let results = fake.results();
    let (last, handed_back) = results.split_last().unwrap();
    assert_eq!(handed_back.len(), execution.len() - 1, "{results:#?}");
    for (report, (id, _)) in handed_back.iter().zip(&execution) {
        assert!(report.succeeded());
        assert_eq!(&report.job_id, id, "each job is handed back in turn");
        assert!(
            report.request["continuationToken"]
                .as_str()
                .unwrap()
                .contains(&daemon.name)
        );
        assert_eq!(report.external_execution_id(), format!("cp-{job_id}"));
        assert!(report.request.get("outputVariables").is_none());
    }
    assert!(last.succeeded(), "{}\n{}", last.message(), daemon.log());
    assert_eq!(
        last.job_id,
        execution.last().unwrap().0,
        "the end goes to the latest job"
    );
    assert_eq!(
        last.output_variables().get("DONE").map(String::as_str),
        Some("yes")
    );
    let listing = common::boto3(&format!(
        "import zipfile, io\ns3 = boto3.client('s3', **kw)\nz = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket='{bucket}', Key='web/BuildOutp/out.zip')['Body'].read()))\nprint(sorted(z.namelist()))"
    ));
    assert_eq!(listing, "['app.txt']");
    let stored: Value = serde_json::from_str(
        &fs::read_to_string(daemon.path(&format!("state/results/cp-{job_id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["status"], "SUCCEEDED", "{stored:#}");
    drop(daemon);
    drop(runtime);
}

#[test]
fn a_stopped_pipeline_execution_calls_its_build_off() {
    use common::codepipeline_fake::{ActionType, ArtifactAt, NewJob};
    let _serial = serial();
    // With a job timeout (the build hands its job back in turn) and without one.
    for source_extra in ["job_timeout = \"4s\"\n", ""] {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (fake, bucket, extra) = pipeline_with_source(
            &runtime,
            "version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 120\n",
            source_extra,
        );
        let action = ActionType::new("Build", "AgentBuild", "1");
        let job_id = fake.add_job(NewJob::new(action).input(ArtifactAt::new(
            "SourceOutput",
            &bucket,
            "web/SourceArti/abc123.zip",
        )));
        let daemon = Daemon::start(&extra);
        wait_running(&daemon, 1);
        fake.stop_execution(&job_id);
        let stopped = Instant::now();
        let result = loop {
            let path = daemon.path(&format!("state/results/cp-{job_id}.json"));
            if let Ok(text) = fs::read_to_string(&path) {
                break serde_json::from_str::<Value>(&text).unwrap();
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(40),
                "the build went on ({source_extra:?}):\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(result["status"], "STOPPED", "{result:#}");
        assert!(
            result["message"]
                .as_str()
                .unwrap()
                .contains("pipeline execution was stopped"),
            "{result:#}"
        );
        // Nothing was reported for a job CodePipeline had already ended.
        assert!(fake.results().is_empty(), "{:#?}", fake.results());
        wait_until(
            Duration::from_secs(20),
            || daemon.containers().is_empty(),
            || "the container was left behind".into(),
        );
        drop(daemon);
        drop(runtime);
    }
}

/// The containers of hand-started runs that are owned by process `pid`.
fn run_local_containers_of(pid: u32) -> Vec<String> {
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=agent.instance=run-local@{host}"),
            "--format",
            "{{.ID}} {{.Label \"agent.owner\"}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // The owner label is `<boot>/<pid namespace>/<pid>/<start time>`.
        .filter(|l| l.split('/').nth(2) == Some(&pid.to_string()))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn a_restarting_daemon_named_for_its_host_keeps_a_live_run_local_and_reaps_a_dead_one() {
    let _serial = serial();
    let sleeper =
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo started\n      - sleep 120\n";
    let dead = common::Project::new(sleeper);
    let (mut killed, _) = common::start_run_local(&dead, common::Exec::Docker, "started");
    let killed_pid = killed.id();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let left = run_local_containers_of(killed_pid);
    assert_eq!(left.len(), 1, "kill -9 leaves the container: {left:?}");
    let live = common::Project::new(sleeper);
    let (mut running, _) = common::start_run_local(&live, common::Exec::Docker, "started");
    let running_pid = running.id();
    assert_eq!(run_local_containers_of(running_pid).len(), 1);

    // The daemon's default name is the host name; its janitor must tell its own
    // containers from a developer's.
    let mut daemon = Daemon::new("");
    daemon.name = nix::unistd::gethostname().unwrap().into_string().unwrap();
    daemon.write_config("");
    daemon.launch();
    wait_until(
        Duration::from_secs(20),
        || run_local_containers_of(killed_pid).is_empty(),
        || "the dead run's container stays".into(),
    );
    assert_eq!(
        run_local_containers_of(running_pid).len(),
        1,
        "the live run's container was removed:\n{}",
        daemon.log()
    );
    assert!(
        running.try_wait().unwrap().is_none(),
        "the live run goes on"
    );
    drop(daemon);

    // The next hand-started run also removes what a killed one left.
    let (mut again, _) = common::start_run_local(&dead, common::Exec::Docker, "started");
    let again_pid = again.id();
    again.kill().unwrap();
    again.wait().unwrap();
    common::ctrl_c(&running);
    let _ = running.wait();
    let next =
        common::Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 2\n");
    let run = common::run_local(&next, common::Exec::Docker, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run_local_containers_of(again_pid).is_empty(),
        "a later run-local removes a killed one's container"
    );
    assert!(run_local_containers_of(running_pid).is_empty());
}

#[test]
fn a_spool_job_that_keeps_taking_the_agent_down_is_failed_after_its_delivery_limit() {
    let _serial = serial();
    let mut daemon = Daemon::new("");
    daemon.edit_config("path = \"", "max_receive_count = 2\npath = \"");
    daemon.launch();
    daemon.submit("job-crashy", &build_job("job-crashy", &["sleep 60"]));
    // Each delivery takes the agent (and the job's process) down while it runs.
    for delivery in 1..=2 {
        wait_running(&daemon, 1);
        let counted =
            fs::read_to_string(daemon.path("spool/deliveries/job-crashy.json")).unwrap_or_default();
        assert_eq!(counted.trim(), delivery.to_string());
        daemon.signal("KILL");
        daemon.wait_exit(Duration::from_secs(5));
        daemon.kill_job_processes();
        daemon.launch();
    }
    let result = daemon.result("job-crashy", Duration::from_secs(60));
    assert_eq!(result["status"], "FAILED", "{result:#}");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("delivered 3 times without a result (the limit is 2)"),
        "{result:#}"
    );
    assert!(daemon.path("spool/rejected/job-crashy.json").is_file());
    assert!(!daemon.path("spool/deliveries/job-crashy.json").exists());
    assert!(
        fs::read_dir(daemon.path("spool/inbox"))
            .unwrap()
            .next()
            .is_none()
    );
    wait_until(
        Duration::from_secs(10),
        || daemon.containers().is_empty(),
        || format!("{:?}", daemon.containers()),
    );
}

/// Files in the spool's inbox that are not messages: a FIFO (which blocked the daemon for
/// good), a socket, a device file, symlinks (to a root-only file, to a FIFO), and a 1 GiB
/// file (which the daemon read whole). Each is moved to `rejected/` with a reason that
/// quotes none of it; the daemon keeps answering, runs a good job dropped after them, and
/// stops promptly at SIGTERM.
#[test]
fn spool_files_that_are_not_messages_are_refused_unread() {
    let _serial = serial();
    let mut daemon = Daemon::start("");
    let inbox = daemon.path("spool/inbox");
    fs::create_dir_all(&inbox).unwrap();
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
    nix::unistd::mkfifo(&inbox.join("fifo.json"), mode).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(inbox.join("socket.json")).unwrap();
    let mut refused = vec![
        ("fifo", "a FIFO"),
        ("socket", "a socket"),
        ("link-shadow", "a symlink"),
        ("link-fifo", "a symlink"),
        ("big", "1073741824 bytes"),
    ];
    let device = nix::sys::stat::mknod(
        &inbox.join("device.json"),
        nix::sys::stat::SFlag::S_IFCHR,
        mode,
        nix::sys::stat::makedev(1, 3),
    );
    if device.is_ok() {
        refused.push(("device", "a device file"));
    }
    std::os::unix::fs::symlink("/etc/shadow", inbox.join("link-shadow.json")).unwrap();
    let aside = daemon.path("aside.fifo");
    nix::unistd::mkfifo(&aside, mode).unwrap();
    std::os::unix::fs::symlink(&aside, inbox.join("link-fifo.json")).unwrap();
    let big = fs::File::create(inbox.join("big.json")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    daemon.submit("good", &build_job("good", &["echo fine"]));

    for (name, why) in &refused {
        let result = daemon.result(name, Duration::from_secs(30));
        assert_eq!(result["status"], "REJECTED", "{name}: {result:#}");
        let message = result["message"].as_str().unwrap();
        assert!(message.contains(why), "{name}: {message}");
        assert!(
            !message.contains("root:"),
            "{name} quoted its content: {message}"
        );
        assert!(
            daemon
                .path(&format!("spool/rejected/{name}.json"))
                .symlink_metadata()
                .is_ok(),
            "{name} not in rejected/"
        );
    }
    let good = daemon.result("good", Duration::from_secs(60));
    assert_eq!(good["status"], "SUCCEEDED", "{good:#}");
    assert!(http_get(daemon.port, "/healthz").starts_with("HTTP/1.1 200"));
    let pid = daemon.child.as_ref().unwrap().id();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 200 << 10, "the daemon peaked at {peak_kib} KiB");
    let started = Instant::now();
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(15));
    eprintln!(
        "refused {} files; the daemon peaked at {} MiB and stopped {:?} after SIGTERM",
        refused.len(),
        peak_kib >> 10,
        started.elapsed()
    );
}
