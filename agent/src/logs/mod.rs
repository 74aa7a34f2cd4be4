//! One log pipeline for a build: every byte of command output and every agent line is
//! masked, split into lines, timestamped and written to every sink, in bounded memory.

mod mask;
pub mod s3;
mod sink;

pub use mask::{MASK, Masker};
pub use sink::{FileSink, JsonSink, Sink, TerminalSink};

use std::sync::{Arc, Mutex, MutexGuard};

use time::OffsetDateTime;
use time::macros::format_description;

/// A line longer than this is written in pieces, so output with no newline at all cannot
/// grow memory.
const MAX_LINE: usize = 64 * 1024;

/// Who wrote a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The agent's own `[Container] …` lines.
    Agent,
    /// What the build's commands printed.
    Output,
}

/// The logs of the builds running now, so a value learned during a build (fresh role
/// credentials) is masked in all of them before anyone can print it.
#[derive(Clone, Default)]
pub struct Maskers(Arc<Mutex<Vec<Log>>>);

impl Maskers {
    pub fn register(&self, log: &Log) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(log.clone());
    }

    pub fn add(&self, secrets: &[String]) {
        let logs = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for log in logs {
            log.add_secrets(secrets);
        }
    }

    /// `text` masked with every value any of the logs masks.
    pub fn mask(&self, text: &str) -> String {
        let logs = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        logs.iter()
            .fold(text.to_string(), |text, log| log.mask(&text))
    }
}

/// A shared handle to a build's log.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    masker: Masker,
    secrets: Vec<String>,
    partial: Vec<u8>,
    scratch: Vec<u8>,
    sinks: Vec<Box<dyn Sink>>,
    errors: Vec<String>,
    /// The latest output, kept while a phase runs so `on-failure: RETRY-<regex>` can
    /// match what the failing commands printed.
    capture: Option<Vec<u8>>,
}

/// How much recent output a capture keeps.
const CAPTURE: usize = 64 * 1024;

impl Log {
    pub fn new(secrets: &[String], sinks: Vec<Box<dyn Sink>>) -> Self {
        Log {
            inner: Arc::new(Mutex::new(Inner {
                masker: Masker::new(secrets),
                secrets: secrets.to_vec(),
                partial: Vec::new(),
                scratch: Vec::new(),
                sinks,
                errors: Vec::new(),
                capture: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A sink that panicked leaves the data consistent enough to keep logging.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Command output, in whatever pieces it arrives.
    pub fn output(&self, bytes: &[u8]) {
        let mut inner = self.lock();
        let mut masked = std::mem::take(&mut inner.scratch);
        masked.clear();
        inner.masker.push(bytes, &mut masked);
        inner.append(&masked);
        inner.scratch = masked;
    }

    /// An agent line in CodeBuild's shape: `[Container] 2026/11/22 10:00:00.123456 text`.
    /// Pending command output is ended first so the line starts on its own.
    pub fn agent(&self, text: &str) {
        let mut inner = self.lock();
        inner.end_output();
        let now = OffsetDateTime::now_utc();
        let line = format!(
            "[Container] {} {}",
            timestamp(now),
            inner.masker.mask_str(text)
        );
        inner.write(now, Origin::Agent, line.as_bytes());
    }

    /// Ends any partial output line and flushes every sink.
    pub fn flush(&self) {
        let mut inner = self.lock();
        inner.end_output();
        for sink in &mut inner.sinks {
            let _ = sink.flush();
        }
    }

    /// Adds values to mask from now on (credentials served during the build).
    pub fn add_secrets(&self, more: &[String]) {
        let mut inner = self.lock();
        let fresh: Vec<String> = more
            .iter()
            .filter(|s| !inner.secrets.contains(s))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return;
        }
        inner.secrets.extend(fresh);
        let all = inner.secrets.clone();
        inner.masker = inner.masker.extended(&all);
    }

    /// Ends the log: flushes every sink and tells it nothing more will come.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.end_output();
        for sink in &mut inner.sinks {
            let _ = sink.flush();
            sink.close();
        }
    }

    /// Masks `text` with the build's secrets, for messages that leave through other paths.
    pub fn mask(&self, text: &str) -> String {
        self.lock().masker.mask_str(text)
    }

    /// Starts keeping the latest output (masked), replacing any earlier capture.
    pub fn start_capture(&self) {
        self.lock().capture = Some(Vec::new());
    }

    /// The output kept since [`Log::start_capture`], at most the last 64 KiB.
    pub fn take_capture(&self) -> String {
        let mut inner = self.lock();
        inner.end_output();
        let bytes = inner.capture.take().unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Sink failures so far (a full disk, a closed terminal), for the build's result.
    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }
}

impl Inner {
    fn append(&mut self, mut bytes: &[u8]) {
        while let Some(newline) = memchr(b'\n', bytes) {
            let (line, rest) = bytes.split_at(newline);
            if self.partial.is_empty() {
                self.write(OffsetDateTime::now_utc(), Origin::Output, line);
            } else {
                self.partial.extend_from_slice(line);
                let full = std::mem::take(&mut self.partial);
                self.write(OffsetDateTime::now_utc(), Origin::Output, &full);
                self.partial = full;
                self.partial.clear();
            }
            bytes = &rest[1..];
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= MAX_LINE {
            let piece: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            self.write(OffsetDateTime::now_utc(), Origin::Output, &piece);
        }
    }

    /// Releases what the masker holds and writes the partial line, if any.
    fn end_output(&mut self) {
        let mut rest = Vec::new();
        self.masker.flush(&mut rest);
        if !rest.is_empty() {
            self.append(&rest);
        }
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.write(OffsetDateTime::now_utc(), Origin::Output, &line);
        }
    }

    fn write(&mut self, at: OffsetDateTime, origin: Origin, line: &[u8]) {
        if let (Some(capture), Origin::Output) = (&mut self.capture, origin) {
            capture.extend_from_slice(line);
            capture.push(b'\n');
            if capture.len() > 2 * CAPTURE {
                let cut = capture.len() - CAPTURE;
                capture.drain(..cut);
            }
        }
        for sink in &mut self.sinks {
            if let Err(e) = sink.line(at, origin, line) {
                // Remember one failure per sink kind, and keep logging to the others.
                let message = format!("{}: {e}", sink.name());
                if !self.errors.contains(&message) {
                    self.errors.push(message);
                }
            }
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// `2026/11/22 10:00:00.123456`, the timestamp of CodeBuild's agent lines.
pub fn timestamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]/[month]/[day] [hour]:[minute]:[second].[subsecond digits:6]"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Lines = Vec<(Origin, Vec<u8>)>;

    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Lines>>);

    impl Sink for Memory {
        fn name(&self) -> &str {
            "memory"
        }
        fn line(&mut self, _: OffsetDateTime, origin: Origin, line: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().push((origin, line.to_vec()));
            Ok(())
        }
    }

    fn lines(memory: &Memory) -> Vec<(Origin, String)> {
        memory
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(o, l)| (*o, String::from_utf8_lossy(l).into_owned()))
            .collect()
    }

    #[test]
    fn output_is_split_masked_and_ended_before_agent_lines() {
        let memory = Memory::default();
        let log = Log::new(&["s3cr3tvalue".to_string()], vec![Box::new(memory.clone())]);
        log.output(b"one\ntw");
        log.output(b"o s3cr3t");
        log.output(b"value\nno newline");
        log.agent("Running command echo s3cr3tvalue");
        log.flush();
        let got = lines(&memory);
        assert_eq!(got[0], (Origin::Output, "one".to_string()));
        assert_eq!(got[1], (Origin::Output, "two ***".to_string()));
        assert_eq!(got[2], (Origin::Output, "no newline".to_string()));
        assert_eq!(got[3].0, Origin::Agent);
        assert!(got[3].1.starts_with("[Container] "), "{}", got[3].1);
        assert!(
            got[3].1.ends_with(" Running command echo ***"),
            "{}",
            got[3].1
        );
    }

    #[test]
    fn endless_lines_are_cut_into_pieces() {
        let memory = Memory::default();
        let log = Log::new(&[], vec![Box::new(memory.clone())]);
        let chunk = vec![b'x'; 10_000];
        for _ in 0..20 {
            log.output(&chunk);
        }
        log.flush();
        let got = lines(&memory);
        assert_eq!(got.iter().map(|(_, l)| l.len()).sum::<usize>(), 200_000);
        assert!(got.iter().all(|(_, l)| l.len() <= MAX_LINE));
    }
}
