//! What run-local prints: colours on a terminal, the phase table and the result at the
//! end, and, for a failed build, which command failed where and its last lines.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::build::{BuildStatus, Summary};
use crate::logs::{Origin, Record, Sink};

/// How many lines of a failed command's output the ending repeats.
pub const TAIL_LINES: usize = 10;

/// Whether standard error gets colours, by `--color`.
pub fn color_stderr(color: crate::cli::Color) -> bool {
    color.enabled_on(std::io::stderr().is_terminal())
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BOLD_CYAN: &str = "\x1b[1;36m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

fn paint(text: &str, color: &str, on: bool) -> String {
    if on {
        format!("{color}{text}{RESET}")
    } else {
        text.to_string()
    }
}

fn status_color(status: &str) -> &'static str {
    match status {
        "SUCCEEDED" => GREEN,
        "FAILED" | "FAULT" | "TIMED_OUT" => RED,
        _ => YELLOW,
    }
}

/// The message of an agent line, without `[Container] <date> <time> `.
fn agent_message(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = text.strip_prefix("[Container] ")?;
    let (_, rest) = rest.split_once(' ')?;
    let (_, message) = rest.split_once(' ')?;
    Some(message)
}

/// The terminal sink, with phase headers and states in colour.
pub struct Colored<S: Sink> {
    inner: S,
}

impl<S: Sink> Colored<S> {
    pub fn new(inner: S) -> Self {
        Colored { inner }
    }
}

impl<S: Sink> Sink for Colored<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn line(&mut self, record: &Record<'_>) -> std::io::Result<()> {
        let line = record.line;
        let painted = (record.origin == Origin::Agent)
            .then(|| agent_message(line))
            .flatten()
            .and_then(|message| {
                let head = std::str::from_utf8(&line[..line.len() - message.len()]).ok()?;
                let colored = if message.starts_with("Entering phase ") {
                    paint(message, BOLD_CYAN, true)
                } else if message.starts_with("Command did not exit successfully")
                    || message.starts_with("Command was killed")
                {
                    paint(message, RED, true)
                } else if let Some((before, state)) = message.rsplit_once(" State: ") {
                    format!(
                        "{before} State: {}",
                        paint(state, status_color(state), true)
                    )
                } else {
                    return None;
                };
                Some(format!("{head}{colored}"))
            });
        match painted {
            Some(text) => self.inner.line(&Record {
                line: text.as_bytes(),
                ..*record
            }),
            None => self.inner.line(record),
        }
    }

    fn partial(&mut self, origin: Origin, so_far: &[u8]) -> std::io::Result<()> {
        self.inner.partial(origin, so_far)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    fn close(&mut self) {
        self.inner.close();
    }
}

/// A command that failed: where, what, how, and what it printed last.
#[derive(Debug, Clone)]
pub struct Failure {
    pub phase: String,
    pub command: String,
    pub status: String,
    pub tail: Vec<String>,
}

#[derive(Default)]
struct Track {
    phase: String,
    command: Option<String>,
    started: u64,
    running: bool,
    tail: VecDeque<String>,
    failure: Option<Failure>,
}

/// Follows a build's log (as masked as every sink sees it): the command running now and
/// the first command that failed, with its last lines.
#[derive(Clone, Default)]
pub struct Tracker(Arc<Mutex<Track>>);

impl Tracker {
    pub fn sink(&self) -> Box<dyn Sink> {
        Box::new(TrackSink(self.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Track> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The number of the command running now (counting from the build's start), if one is.
    pub fn running(&self) -> Option<u64> {
        let track = self.lock();
        track.running.then_some(track.started)
    }

    /// The first command that failed.
    pub fn failure(&self) -> Option<Failure> {
        self.lock().failure.clone()
    }
}

struct TrackSink(Tracker);

impl Sink for TrackSink {
    fn name(&self) -> &str {
        "tracker"
    }

    fn line(&mut self, record: &Record<'_>) -> std::io::Result<()> {
        let (origin, line) = (record.origin, record.line);
        let mut track = self.0.lock();
        if origin == Origin::Output {
            if track.tail.len() == TAIL_LINES {
                track.tail.pop_front();
            }
            track
                .tail
                .push_back(String::from_utf8_lossy(line).into_owned());
            return Ok(());
        }
        let Some(message) = agent_message(line) else {
            return Ok(());
        };
        if let Some(command) = message.strip_prefix("Running command ") {
            track.command = Some(command.to_string());
            track.started += 1;
            track.running = true;
            track.tail.clear();
        } else if let Some(rest) = message.strip_prefix("Command did not exit successfully ") {
            track.running = false;
            if track.failure.is_none()
                && let Some((command, status)) = rest.rsplit_once(" exit status ")
            {
                let failure = Failure {
                    phase: track.phase.clone(),
                    command: command.to_string(),
                    status: status.to_string(),
                    tail: track.tail.iter().cloned().collect(),
                };
                track.failure = Some(failure);
            }
        } else if let Some(phase) = message.strip_prefix("Entering phase ") {
            track.phase = phase.to_string();
            track.running = false;
        } else if message.starts_with("Phase complete: ") {
            track.running = false;
        }
        Ok(())
    }
}

/// What the end of a build says besides its summary.
pub struct Ending<'a> {
    pub log_path: &'a Path,
    pub artifacts_dir: Option<&'a Path>,
    /// The failed command, and where it is in the buildspec (`file:line`).
    pub failure: Option<(Failure, Option<String>)>,
    pub elapsed: Duration,
    pub color: bool,
}

pub fn print_summary(summary: &Summary, ending: &Ending<'_>) {
    let color = ending.color;
    let mut out = String::new();
    out.push('\n');
    if summary.builds.is_empty() {
        out.push_str(&format!(
            "{:<18} {:<10} {:>10}\n",
            "PHASE", "STATUS", "DURATION"
        ));
        for phase in &summary.phases {
            let status = phase.status.as_str();
            out.push_str(&format!(
                "{:<18} {} {:>10}\n",
                phase.phase,
                paint(&format!("{status:<10}"), status_color(status), color),
                format_ms(phase.duration_ms)
            ));
        }
    } else {
        out.push_str(&format!(
            "{:<24} {:<10} {:>10}  NOTE\n",
            "BUILD", "STATUS", "DURATION"
        ));
        for member in &summary.builds {
            let ms: u64 = member
                .build
                .as_ref()
                .map_or(0, |b| b.phases.iter().map(|p| p.duration_ms).sum());
            let status = member.status.as_str();
            out.push_str(&format!(
                "{:<24} {} {:>10}  {}\n",
                member.identifier,
                paint(&format!("{status:<10}"), status_color(status), color),
                format_ms(ms),
                member.message.as_deref().unwrap_or("")
            ));
        }
    }
    for report in &summary.reports {
        out.push_str(&format!(
            "tests {}: {} total, {} passed, {} failed, {} skipped\n",
            report.group, report.total, report.passed, report.failed, report.skipped
        ));
    }
    for artifact in &summary.artifacts {
        out.push_str(&format!(
            "artifacts {}: {} files in {}\n",
            artifact.identifier,
            artifact.files.len(),
            artifact.location
        ));
    }
    for (name, value) in &summary.exported_variables {
        out.push_str(&format!("exported {name}={value}\n"));
    }
    out.push('\n');
    out.push_str(&format!("Log: {}\n", ending.log_path.display()));
    if let Some(dir) = ending.artifacts_dir {
        out.push_str(&format!("Artifacts: {}\n", dir.display()));
    }
    if summary.status != BuildStatus::Succeeded
        && let Some((failure, place)) = &ending.failure
    {
        let place = place
            .as_ref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "\n{} in phase {}: `{}`{place} exited with status {}\n",
            paint("Failed", RED, color),
            failure.phase,
            failure.command,
            failure.status
        ));
        if failure.tail.is_empty() {
            out.push_str("It printed nothing.\n");
        } else {
            out.push_str(&format!("Its last {} lines:\n", failure.tail.len()));
            for line in &failure.tail {
                out.push_str(&format!("  | {line}\n"));
            }
        }
    }
    let status = summary.status.as_str();
    out.push_str(&format!(
        "\nBuild {} {} in {}\n",
        summary.build_id,
        paint(status, &format!("{BOLD}{}", status_color(status)), color),
        format_ms(u64::try_from(ending.elapsed.as_millis()).unwrap_or(u64::MAX))
    ));
    eprint!("{out}");
}

fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Vec<u8> {
        format!("[Container] 2026/11/22 10:00:00.123456 {text}").into_bytes()
    }

    fn record(origin: Origin, line: &[u8]) -> Record<'_> {
        Record {
            at: time::OffsetDateTime::now_utc(),
            origin,
            line,
            phase: None,
            command: None,
            stream: None,
        }
    }

    #[test]
    fn the_tracker_keeps_the_first_failure_and_its_last_lines() {
        let tracker = Tracker::default();
        let mut sink = tracker.sink();
        sink.line(&record(Origin::Agent, &line("Entering phase BUILD")))
            .unwrap();
        sink.line(&record(Origin::Agent, &line("Running command make test")))
            .unwrap();
        assert_eq!(tracker.running(), Some(1));
        for n in 0..15 {
            sink.line(&record(Origin::Output, format!("out {n}").as_bytes()))
                .unwrap();
        }
        sink.line(&record(
            Origin::Agent,
            &line("Command did not exit successfully make test exit status 2"),
        ))
        .unwrap();
        assert_eq!(tracker.running(), None);
        let failure = tracker.failure().unwrap();
        assert_eq!(failure.phase, "BUILD");
        assert_eq!(failure.command, "make test");
        assert_eq!(failure.status, "2");
        assert_eq!(failure.tail.len(), TAIL_LINES);
        assert_eq!(failure.tail[0], "out 5");
    }
}
