//! What the end-to-end tests share: the real binary, temporary projects, the test image.

#![allow(dead_code)] // each test file uses its own part of this

pub mod codepipeline_fake;
pub mod daemon;
pub mod fault_proxy;
pub mod git_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The agent, with its state (`$XDG_STATE_HOME/agent/…`: logs, artifacts, cache) in this
/// test process's own directory rather than in the home directory.
pub fn agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agent"));
    command.env("XDG_STATE_HOME", state_home());
    command
}

/// The `XDG_STATE_HOME` of the agents this test process starts.
pub fn state_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("agent-test-state-")
            .tempdir()
            .unwrap()
            .keep()
    })
}

/// Runs git in `dir` as a test author; its trimmed output. Fails the test when git does.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `found` until it gives a value; fails the test with `why()` once `timeout` has
/// passed without one.
pub fn wait_for<T>(
    timeout: Duration,
    mut found: impl FnMut() -> Option<T>,
    why: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `done` until it holds; fails the test with `why()` once `timeout` has passed.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    wait_for(timeout, || done().then_some(()), why)
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tiny busybox image the tests run builds in, built from Debian's busybox-static the
/// first time it is needed.
pub fn busybox_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let present = Command::new("docker")
            .args(["image", "inspect", "agent-busybox:latest"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            let status = Command::new("bash")
                .arg(repo_root().join("images/busybox/build.sh"))
                .status()
                .expect("run images/busybox/build.sh");
            assert!(status.success(), "images/busybox/build.sh failed");
        }
    });
    "agent-busybox:latest"
}

/// The standard image of `images/standard`, built the first time it is needed.
pub fn standard_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let present = Command::new("docker")
            .args(["image", "inspect", "agent-standard:latest"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            let status = Command::new("bash")
                .arg(repo_root().join("images/standard/build.sh"))
                .status()
                .expect("run images/standard/build.sh");
            assert!(status.success(), "images/standard/build.sh failed");
        }
    });
    "agent-standard:latest"
}

/// A project directory with a buildspec, removed when dropped.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(buildspec: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("buildspec.yml"), buildspec).unwrap();
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The agent's state directory for this project, `<XDG_STATE_HOME>/agent/<name>-<hash>`.
    pub fn state_dir(&self) -> PathBuf {
        let name = self
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let base = state_home().join("agent");
        std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .strip_prefix(&name)
                    .is_some_and(|rest| rest.len() == 9 && rest.starts_with('-'))
            })
            .unwrap_or_else(|| base.join(format!("{name}-unknown")))
    }

    /// The log of one of this project's builds.
    pub fn log_file(&self, build_id: &str) -> PathBuf {
        self.state_dir()
            .join("logs")
            .join(format!("{build_id}.log"))
    }

    pub fn write(&self, name: &str, text: &str) {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// One run of `agent run-local`, with what it printed and its summary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub summary: serde_json::Value,
}

impl Run {
    pub fn phase(&self, name: &str) -> Option<&serde_json::Value> {
        self.summary["phases"]
            .as_array()?
            .iter()
            .find(|p| p["phase"] == name)
    }

    pub fn phase_status(&self, name: &str) -> Option<String> {
        self.phase(name)
            .map(|p| p["status"].as_str().unwrap_or("").to_string())
    }

    pub fn phase_names(&self) -> Vec<String> {
        self.summary["phases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p["phase"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn status(&self) -> &str {
        self.summary["status"].as_str().unwrap_or("")
    }

    /// The lines commands printed, without the agent's `[Container]` lines.
    pub fn output_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.starts_with("[Container] "))
            .collect()
    }

    /// The build's log file, as the end of the build names it (`Log: …`).
    pub fn log_path(&self) -> Option<PathBuf> {
        self.stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("Log: "))
            .map(PathBuf::from)
    }

    pub fn printed(&self, line: &str) -> bool {
        self.output_lines().contains(&line)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    Host,
    Docker,
}

pub fn run_local(project: &Project, exec: Exec, extra: &[&str]) -> Run {
    let summary_path = project.path().join(".summary.json");
    let mut command = agent();
    command
        .arg("run-local")
        .arg("--source")
        .arg(project.path())
        .arg("--summary")
        .arg(&summary_path);
    match exec {
        Exec::Host => {
            command.args(["--executor", "host"]);
        }
        Exec::Docker => {
            command.args(["--image", busybox_image()]);
        }
    }
    command.args(extra);
    finish(command.output().unwrap(), &summary_path)
}

pub fn finish(output: Output, summary_path: &Path) -> Run {
    let summary = std::fs::read(summary_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        summary,
    }
}

/// Containers this agent left behind for a build id; none should remain after a run.
pub fn containers_of(build_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=agent.job-id={build_id}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Starts `agent run-local` in the background and returns once the build's log shows
/// `marker` (and a little more, so the command has started). The summary goes to the
/// returned path.
pub fn start_run_local(
    project: &Project,
    exec: Exec,
    marker: &str,
) -> (std::process::Child, PathBuf) {
    start_run_local_with(project, exec, marker, &[])
}

/// [`start_run_local`] with more flags.
pub fn start_run_local_with(
    project: &Project,
    exec: Exec,
    marker: &str,
    extra: &[&str],
) -> (std::process::Child, PathBuf) {
    let summary = project.path().join(".summary.json");
    let mut command = agent();
    command
        .args(["run-local", "--summary"])
        .arg(&summary)
        .arg("--source")
        .arg(project.path());
    match exec {
        Exec::Host => command.args(["--executor", "host"]),
        Exec::Docker => command.args(["--image", busybox_image()]),
    };
    command.args(extra);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let log_dir = project.state_dir().join("logs");
        let seen = std::fs::read_dir(&log_dir)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .is_some_and(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .contains(marker)
            });
        if seen {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    (child, summary)
}

/// Sends SIGINT, as Ctrl-C in a terminal does.
pub fn ctrl_c(child: &std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
}

/// A `moto_server` on a free loopback port for this test process, standing in for AWS; it
/// goes away with the process. Returns its endpoint URL.
pub fn moto() -> &'static str {
    static MOTO: OnceLock<(String, std::sync::Mutex<std::process::Child>)> = OnceLock::new();
    let (url, _) = MOTO.get_or_init(|| {
        require_moto();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The server lives while this process holds the wrapper's stdin open.
        let child = Command::new("sh")
            .args([
                "-c",
                &format!("moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; cat >/dev/null; kill $pid; wait $pid"),
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("start moto_server (pip install 'moto[server]')");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // The child keeps its stdin: closing it (when this process ends) stops the server.
        (url, std::sync::Mutex::new(child))
    });
    url
}

/// The moto version tests/requirements.txt pins.
pub fn moto_pin() -> &'static str {
    include_str!("../requirements.txt")
        .lines()
        .find_map(|line| line.strip_prefix("moto[server]=="))
        .expect("tests/requirements.txt pins moto")
        .trim()
}

/// Stops the test with what to do when the moto on the PATH is missing or not the pinned
/// version: another answers some calls differently, and the test would fail for that.
fn require_moto() {
    let pin = moto_pin();
    let found = Command::new("python3")
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
    let fix = format!(
        "run the tests with tests/run.sh, which sets up moto {pin} in a virtual environment, or `pip install 'moto[server]=={pin}'`"
    );
    match found {
        Some(version) if version == pin => {}
        Some(version) => panic!("moto {version} is on the PATH; the tests need {pin}: {fix}"),
        None => panic!("moto is not installed (python3 cannot import it): {fix}"),
    }
}

/// Stops the test with the package to install when `tool` is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args([
            "-c",
            &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs `{tool}`, from the Debian package `{package}`: run the tests with tests/run.sh, which installs it, or `apt-get install {package}`"
    );
}

/// The environment that points the agent (and boto3) at the local moto server.
pub fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto().to_string()),
        ("AWS_ACCESS_KEY_ID", "AKIAAGENTTESTBASE001".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "base-secret-key".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
    ]
}

/// Runs Python with boto3 against moto, to seed or inspect it.
pub fn boto3(script: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", &format!("import boto3, json\nkw = dict(endpoint_url='{}', region_name='us-east-1')\n{script}", moto())])
        .envs(aws_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
