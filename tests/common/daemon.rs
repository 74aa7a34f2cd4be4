//! A daemon under test: its own directory, config, spool and metrics port; killed and
//! cleaned up (processes, containers) when dropped.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{agent, busybox_image, wait_for, wait_until};

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub port: u16,
    pub child: Option<Child>,
    pub extra: String,
    /// More environment for the daemon process.
    pub env: Vec<(String, String)>,
}

/// The daemon tests run one at a time: each starts daemons that run containers, and a
/// fleet of them sharing two cores with another test's would measure the machine, not the
/// agent.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Daemon {
    pub fn start(extra: &str) -> Daemon {
        let mut daemon = Daemon::new(extra);
        daemon.launch();
        daemon
    }

    /// A daemon with its directory and config, not started yet.
    pub fn new(extra: &str) -> Daemon {
        busybox_image();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let daemon = Daemon {
            dir: tempfile::tempdir().unwrap(),
            name: format!("test-{}", &uuid_like()[..12]),
            port,
            child: None,
            extra: extra.to_string(),
            env: Vec::new(),
        };
        daemon.write_config(extra);
        daemon
    }

    pub fn write_config(&self, extra: &str) {
        let d = self.dir.path().display();
        // A fleet on one small machine: one job per agent, or they only fight for the cores.
        let concurrency = if extra.contains("fleet-") { 1 } else { 2 };
        let config = format!(
            "version = 1\n[agent]\nname = \"{name}\"\nwork_dir = \"{d}/work\"\nstate_dir = \"{d}/state\"\nconcurrency = {concurrency}\ndrain_timeout = \"20s\"\nmetrics_address = \"127.0.0.1:{port}\"\n\
             [jobs]\ndefault_image = \"agent-busybox:latest\"\nallowed_images = [\"agent-busybox:*\"]\n\
             [roles]\nallowed = [\"arn:aws:iam::123456789012:role/deploy-*\"]\n\
             [deploy]\nroot = \"{d}/deploy-root\"\nallowed_destinations = [\"{d}/apps\"]\n\
             [[sources]]\ntype = \"spool\"\npath = \"{d}/spool\"\n{extra}\n",
            name = self.name,
            port = self.port,
        );
        fs::write(self.dir.path().join("agent.toml"), config).unwrap();
    }

    /// Replaces `from` (which must be there) with `to` in the config file.
    pub fn edit_config(&self, from: &str, to: &str) {
        let path = self.path("agent.toml");
        let config = fs::read_to_string(&path).unwrap();
        assert!(config.contains(from), "`{from}` is not in\n{config}");
        fs::write(path, config.replace(from, to)).unwrap();
    }

    pub fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let aws = if self.extra.contains("[aws]") {
            super::aws_env()
        } else {
            Vec::new()
        };
        let child = agent()
            .args(["daemon", "--config"])
            .arg(self.dir.path().join("agent.toml"))
            .envs(aws)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Ready when its status answers.
        self.wait(Duration::from_secs(20), || self.status().is_some());
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    pub fn status(&self) -> Option<Value> {
        let out = agent()
            .args([
                "status",
                "--json",
                "--address",
                &format!("127.0.0.1:{}", self.port),
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Drops a job as a dispatcher would: written aside, renamed into the inbox.
    pub fn submit(&self, name: &str, job: &Value) {
        let inbox = self.path("spool/inbox");
        fs::create_dir_all(&inbox).unwrap();
        let tmp = inbox.join(format!(".{name}.tmp"));
        fs::write(&tmp, serde_json::to_vec(job).unwrap()).unwrap();
        fs::rename(tmp, inbox.join(format!("{name}.json"))).unwrap();
    }

    pub fn submit_raw(&self, name: &str, body: &str) {
        let inbox = self.path("spool/inbox");
        let tmp = inbox.join(format!(".{name}.tmp"));
        fs::write(&tmp, body).unwrap();
        fs::rename(tmp, inbox.join(format!("{name}.json"))).unwrap();
    }

    /// Polls `done` until it holds; fails the test with the daemon's log after `timeout`.
    pub fn wait(&self, timeout: Duration, done: impl FnMut() -> bool) {
        wait_until(timeout, done, || self.log())
    }

    /// Waits until the daemon's log contains `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        self.wait(timeout, || self.log().contains(text));
    }

    pub fn result(&self, name: &str, timeout: Duration) -> Value {
        let path = self.path(&format!("spool/done/{name}.json"));
        wait_for(
            timeout,
            || fs::read_to_string(&path).ok(),
            || format!("no result for {name}:\n{}", self.log()),
        )
        .parse()
        .unwrap()
    }

    /// The job's result as the daemon stored it in its state directory (whatever the
    /// source), waiting for it.
    pub fn stored_result(&self, name: &str, timeout: Duration) -> Value {
        let path = self.path(&format!("state/results/{name}.json"));
        wait_for(
            timeout,
            || {
                fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| serde_json::from_str(&text).ok())
            },
            || format!("no result for {name}:\n{}", self.log()),
        )
    }

    /// Waits until the work directory is empty: a job's workspace is removed after its
    /// result is settled at the source, so a result can be seen moments before.
    pub fn wait_workspaces_removed(&self, timeout: Duration) {
        let work = self.path("work");
        let left = || -> Vec<_> {
            fs::read_dir(&work)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect()
        };
        wait_until(
            timeout,
            || left().is_empty(),
            || format!("workspaces left: {:?}\n{}", left(), self.log()),
        );
    }

    /// Waits until the SQS queues hold `want` messages each (visible and in flight).
    pub fn wait_queues(&self, queues: &[(&str, u64)], timeout: Duration) {
        let depths = || -> Vec<u64> { queues.iter().map(|(url, _)| queue_depth(url)).collect() };
        wait_until(
            timeout,
            || depths().iter().zip(queues).all(|(d, (_, want))| d == want),
            || {
                format!(
                    "queues hold {:?}, not {queues:?}:\n{}",
                    depths(),
                    self.log()
                )
            },
        );
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let log = self.path("daemon.log");
        let child = self.child.as_mut().unwrap();
        let status = wait_for(
            timeout,
            || child.try_wait().unwrap(),
            || {
                format!(
                    "the daemon did not exit:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                )
            },
        );
        self.child = None;
        status
    }

    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=agent.instance={}", self.name),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn job_processes(&self) -> Vec<u32> {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| self.is_job_process(pid))
            .collect()
    }

    fn is_job_process(&self, pid: u32) -> bool {
        let marker = self.dir.path().display().to_string();
        fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(&marker) && (c.contains("run-local") || c.contains("deploy-local"))
            })
            .unwrap_or(false)
    }

    /// Kills this daemon's job processes, as an OOM kill of the whole service would. Each
    /// is killed by its own pid right after checking it is still one of them: pids are
    /// reused quickly on a busy machine, and a group kill of a reused pid could hit any
    /// process.
    pub fn kill_job_processes(&self) {
        for pid in self.job_processes() {
            if self.is_job_process(pid)
                && let Ok(raw) = i32::try_from(pid)
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_job_processes();
        for id in self.containers() {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}

pub fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

pub fn build_job(id: &str, commands: &[&str]) -> Value {
    let buildspec = format!(
        "version: 0.2\nenv:\n  exported-variables: [GREETING]\nphases:\n  build:\n    commands:\n{}\n    finally:\n      - echo finally ran > /codebuild/output/finally-$CODEBUILD_BUILD_ID\n",
        commands
            .iter()
            .map(|c| format!("      - {c}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    json!({
        "version": 1,
        "id": id,
        "kind": "build",
        "source": {"type": "inline", "files": {"buildspec.yml": buildspec}},
        "env": {"NAME": "world"}
    })
}

pub fn wait_running(daemon: &Daemon, n: usize) {
    wait_until(
        Duration::from_secs(30),
        || {
            let running = daemon
                .status()
                .map(|s| s["running"].as_array().map_or(0, Vec::len))
                .unwrap_or(0);
            running >= n && !daemon.containers().is_empty()
        },
        || format!("no job running:\n{}", daemon.log()),
    );
}

pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

/// Messages in an SQS queue, visible and in flight.
pub fn queue_depth(queue_url: &str) -> u64 {
    super::boto3(&format!(
        "a = boto3.client('sqs', **kw).get_queue_attributes(QueueUrl='{queue_url}', AttributeNames=['All'])['Attributes']\nprint(int(a['ApproximateNumberOfMessages']) + int(a['ApproximateNumberOfMessagesNotVisible']))"
    ))
    .parse()
    .unwrap()
}

/// A plain HTTP server on loopback that answers every request with `body`; returns its URL
/// and what it was sent (head and body of each request).
pub fn http_server(body: Vec<u8>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    http_server_answering("200 OK", "", body)
}

/// As [`http_server`], answering with `status` (`403 Forbidden`) and the `headers` lines
/// (each ending in CRLF).
pub fn http_server_answering(
    status: &str,
    headers: &str,
    body: Vec<u8>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let (status, headers) = (status.to_string(), headers.to_string());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut request = vec![0u8; length];
            let _ = reader.read_exact(&mut request);
            keep.lock()
                .unwrap()
                .push(format!("{head}\n{}", String::from_utf8_lossy(&request)));
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    (url, seen)
}

/// A gzipped tarball of `files` (name, content) served over HTTP on loopback; returns the
/// server's URL (the archive is at `/app.tgz`, or any path).
pub fn serve_tarball(files: &[(&str, &str)]) -> String {
    let src = tempfile::tempdir().unwrap();
    for (name, content) in files {
        fs::write(src.path().join(name), content).unwrap();
    }
    let tarball = src.path().join("app.tgz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(src.path())
        .args(files.iter().map(|(name, _)| *name))
        .status()
        .unwrap();
    assert!(status.success());
    http_server(fs::read(&tarball).unwrap()).0
}
