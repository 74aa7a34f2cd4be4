//! Output is live: a line reaches the terminal and the log file as the command prints it,
//! not when the command ends; a line without its newline yet shows within 100 ms.
//!
//! Each command prints, sleeps 3 s, prints again: the first part must arrive at least
//! 2.5 s before the second, that is within 0.5 s of being printed, on standard output and in
//! the log file, on each executor.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Exec, Project, agent, busybox_image};

/// What a stream showed so far, and when each piece arrived.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<(Instant, String)>>>);

impl Arrivals {
    /// When the text seen so far first contained `needle`.
    fn when(&self, needle: &str) -> Option<Instant> {
        let pieces = self.0.lock().unwrap();
        let mut text = String::new();
        for (at, piece) in pieces.iter() {
            text.push_str(piece);
            if text.contains(needle) {
                return Some(*at);
            }
        }
        None
    }

    fn text(&self) -> String {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.as_str())
            .collect()
    }
}

/// Runs the buildspec, reading standard output as it comes and polling the log file
/// every 20 ms; returns both when the build has ended.
fn run_watched(spec: &str, exec: Exec) -> (Arrivals, Arrivals) {
    let p = Project::new(spec);
    let logs = tempfile::tempdir().unwrap();
    let mut command = agent();
    command
        .arg("run-local")
        .arg("--source")
        .arg(p.path())
        .arg("--log-dir")
        .arg(logs.path());
    match exec {
        Exec::Host => command.args(["--executor", "host"]),
        Exec::Docker => command.args(["--image", busybox_image()]),
    };
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = Arrivals::default();
    let mut pipe = child.stdout.take().unwrap();
    let reader = {
        let stdout = stdout.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let piece = String::from_utf8_lossy(&buf[..n]).into_owned();
                stdout.0.lock().unwrap().push((Instant::now(), piece));
            }
        })
    };
    let file = Arrivals::default();
    let logs = logs.path();
    let started = Instant::now();
    let mut seen = 0;
    loop {
        let done = child.try_wait().unwrap().is_some();
        let text = std::fs::read_dir(logs)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .unwrap_or_default();
        if text.len() > seen {
            file.0
                .lock()
                .unwrap()
                .push((Instant::now(), text[seen..].to_string()));
            seen = text.len();
        }
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the build hangs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    reader.join().unwrap();
    (stdout, file)
}

/// `first` arrived in `arrivals` at least 2.5 s before `second` (printed 3 s apart).
fn assert_live(arrivals: &Arrivals, what: &str, first: &str, second: &str) {
    let text = arrivals.text();
    let a = arrivals
        .when(first)
        .unwrap_or_else(|| panic!("{what}: no {first:?} in:\n{text}"));
    let b = arrivals
        .when(second)
        .unwrap_or_else(|| panic!("{what}: no {second:?} in:\n{text}"));
    let gap = b.saturating_duration_since(a);
    assert!(
        gap >= Duration::from_millis(2500),
        "{what}: {first:?} arrived only {gap:?} before {second:?}, so more than 0.5 s after it was printed:\n{text}"
    );
}

const LINES: &str = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo live-\"first\"-line; sleep 3; echo live-\"second\"-line\n";

fn whole_lines_arrive_as_printed(exec: Exec) {
    let (stdout, file) = run_watched(LINES, exec);
    assert_live(&stdout, "stdout", "live-first-line\n", "live-second-line\n");
    assert_live(&file, "log file", "live-first-line\n", "live-second-line\n");
}

/// (The quotes split the printed text, so it is not in the `Running command` line.)
///
/// Needs the shell reader to call `Log::idle` after 100 ms without output.
const PARTIAL: &str = "version: 0.2\nphases:\n  build:\n    commands:\n      - printf 'live-''partial-'; sleep 3; echo 'rest-''of-line'\n";

fn a_partial_line_shows_before_its_end(exec: Exec) {
    let (stdout, file) = run_watched(PARTIAL, exec);
    assert_live(&stdout, "stdout", "live-partial-", "rest-of-line");
    assert_live(&file, "log file", "live-partial-", "rest-of-line");
    // Shown once: the completed line is not written again.
    for (what, arrivals) in [("stdout", &stdout), ("log file", &file)] {
        let text = arrivals.text();
        assert_eq!(text.matches("live-partial-").count(), 1, "{what}:\n{text}");
        assert!(
            text.contains("live-partial-rest-of-line\n"),
            "{what}:\n{text}"
        );
    }
}

mod host {
    #[test]
    fn whole_lines_arrive_as_printed() {
        super::whole_lines_arrive_as_printed(super::Exec::Host);
    }
    #[test]
    fn a_partial_line_shows_before_its_end() {
        super::a_partial_line_shows_before_its_end(super::Exec::Host);
    }
}

mod docker {
    #[test]
    fn whole_lines_arrive_as_printed() {
        super::whole_lines_arrive_as_printed(super::Exec::Docker);
    }
    #[test]
    fn a_partial_line_shows_before_its_end() {
        super::a_partial_line_shows_before_its_end(super::Exec::Docker);
    }
}

/// `--json-logs` records say which phase, which command (its index in the phase) and
/// which stream a line came from.
#[test]
fn json_records_name_the_phase_command_and_stream() {
    for exec in [Exec::Host, Exec::Docker] {
        json_records_of(exec);
    }
}

fn json_records_of(exec: Exec) {
    let p = Project::new(
        "version: 0.2\nphases:\n  install:\n    commands:\n      - echo in-\"stall\"\n  build:\n    commands:\n      - echo zero\n      - echo o\"ne\"; echo to-\"err\" >&2\n    finally:\n      - echo fi\"nal\"\n",
    );
    let run = common::run_local(&p, exec, &["--json-logs"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let records: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let output = |line: &str| {
        records
            .iter()
            .find(|r| r["origin"] == "output" && r["line"] == line)
            .unwrap_or_else(|| panic!("no {line}:\n{}", run.stdout))
            .clone()
    };
    for (line, phase, command) in [
        ("in-stall", "INSTALL", 0),
        ("zero", "BUILD", 0),
        ("one", "BUILD", 1),
        ("final", "BUILD", 2),
    ] {
        let r = output(line);
        assert_eq!(r["phase"], phase, "{r}");
        assert_eq!(r["command"], command, "{r}");
        assert_eq!(r["stream"], "stdout", "{r}");
    }
    let err = output("to-err");
    assert_eq!(err["stream"], "stderr", "{err}");
    assert_eq!(err["command"], 1, "{err}");
    let entering = records
        .iter()
        .find(|r| {
            r["line"]
                .as_str()
                .unwrap()
                .ends_with("Entering phase BUILD")
        })
        .unwrap();
    assert_eq!(entering["origin"], "agent");
    assert_eq!(entering["phase"], "BUILD");
    assert_eq!(entering["command"], serde_json::Value::Null);
    assert_eq!(entering["stream"], serde_json::Value::Null);
}
