//! One log pipeline for a build: every byte of command output and every agent line is
//! masked, split into lines, timestamped and written to every sink, in bounded memory.
//!
//! Output is live: the sinks are flushed after each chunk of output ([`Log::output`]), so a
//! line reaches the terminal and the log file as the command prints it; when output pauses,
//! [`Log::idle`] shows the line in progress on the sinks that can show part of a line
//! (terminal, log file), as far as the masker allows. The S3 log gets each whole line at
//! once and saves a checkpoint every [`s3::CHECKPOINT_EVERY`].

mod mask;
pub mod s3;
mod sink;

pub use mask::{MASK, Masker};
pub use sink::{FileSink, JsonSink, Record, Sink, TerminalSink};

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

/// Which of a command's streams output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
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
    /// One masker a stream, so that output of one stream never splits a value the other
    /// is printing.
    maskers: [Masker; 2],
    secrets: Vec<String>,
    /// The output line not ended yet, masked.
    partial: Vec<u8>,
    /// How much of `partial` was shown to the sinks that show partial lines.
    partial_shown: usize,
    /// The stream the output in `partial` came from.
    stream: Stream,
    phase: Option<String>,
    command: Option<usize>,
    /// Something was written since the sinks were last flushed.
    dirty: bool,
    /// Idle calls since the last output.
    quiet: u32,
    scratch: Vec<u8>,
    sinks: Vec<Box<dyn Sink>>,
    errors: Vec<String>,
    /// The latest output, kept while a phase runs so `on-failure: RETRY-<regex>` can
    /// match what the failing commands printed.
    capture: Option<Vec<u8>>,
}

/// How much recent output a capture keeps.
const CAPTURE: usize = 64 * 1024;

/// After this many idle calls in a row (100 ms apart from the shell reader: a second),
/// what the masker holds back is released.
const RELEASE_AFTER: u32 = 10;

impl Log {
    pub fn new(secrets: &[String], sinks: Vec<Box<dyn Sink>>) -> Self {
        Log {
            inner: Arc::new(Mutex::new(Inner {
                maskers: {
                    let masker = Masker::new(secrets);
                    [masker.fresh(), masker]
                },
                secrets: secrets.to_vec(),
                partial: Vec::new(),
                partial_shown: 0,
                stream: Stream::Stdout,
                phase: None,
                command: None,
                dirty: false,
                quiet: 0,
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

    /// Command output (standard output), in whatever pieces it arrives. Complete lines
    /// reach every sink, flushed, before this returns.
    pub fn output(&self, bytes: &[u8]) {
        self.output_stream(Stream::Stdout, bytes);
    }

    /// Command output from `stream`. Output from the other stream first ends the line
    /// in progress, so that the two never mix within a line.
    pub fn output_stream(&self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if stream != inner.stream {
            // The line in progress ends; what its masker holds back stays there.
            inner.end_partial();
            inner.stream = stream;
        }
        inner.quiet = 0;
        let mut masked = std::mem::take(&mut inner.scratch);
        masked.clear();
        let at = inner.stream as usize;
        inner.maskers[at].push(bytes, &mut masked);
        inner.append(&masked);
        inner.scratch = masked;
        inner.flush_if_dirty();
    }

    /// No output arrived for a while (the shell's reader calls this after 100 ms of
    /// silence): the line in progress, as far as it can be shown without revealing the
    /// start of a secret, goes to the sinks that show partial lines (terminal, log file).
    /// Line-based sinks (JSON, S3) keep waiting for the whole line.
    pub fn idle(&self) {
        let mut inner = self.lock();
        let mut masked = std::mem::take(&mut inner.scratch);
        masked.clear();
        let at = inner.stream as usize;
        inner.quiet = inner.quiet.saturating_add(1);
        if inner.quiet == RELEASE_AFTER {
            // Quiet this long, the stream is taken as ended: what could still have been
            // the start of a secret (the end of a line, when a wrapped encoding might go
            // on in the next one) is shown. A build that prints a wrapped value slowly,
            // a second between its lines, is the price; a line held back for good is not.
            inner.maskers[at].flush(&mut masked);
        } else {
            inner.maskers[at].release_idle(&mut masked);
        }
        inner.append(&masked);
        inner.scratch = masked;
        if inner.partial.len() > inner.partial_shown {
            let Inner {
                sinks,
                partial,
                errors,
                ..
            } = &mut *inner;
            for sink in sinks.iter_mut() {
                if let Err(e) = sink.partial(Origin::Output, partial) {
                    note_error(errors, sink.name(), &e);
                }
            }
            inner.partial_shown = inner.partial.len();
            inner.dirty = true;
        }
        inner.flush_if_dirty();
    }

    /// What the build is running now, for the sinks that record it (`--json-logs`):
    /// the phase (CodeBuild's name) and the command's index in it, counting the phase's
    /// `commands` and then its `finally` commands. Output not ended yet is ended first.
    pub fn set_context(&self, phase: Option<&str>, command: Option<usize>) {
        let mut inner = self.lock();
        if inner.phase.as_deref() != phase || inner.command != command {
            inner.end_output();
            inner.phase = phase.map(str::to_string);
            inner.command = command;
        }
    }

    /// Sets the command index, keeping the phase; see [`Log::set_context`].
    pub fn set_command(&self, command: Option<usize>) {
        let phase = self.lock().phase.clone();
        self.set_context(phase.as_deref(), command);
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
            inner.maskers[0].mask_str(text)
        );
        inner.write(now, Origin::Agent, line.as_bytes());
        inner.flush_if_dirty();
    }

    /// Ends any partial output line and flushes every sink.
    pub fn flush(&self) {
        let mut inner = self.lock();
        inner.end_output();
        for sink in &mut inner.sinks {
            let _ = sink.flush();
        }
        inner.dirty = false;
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
        let template = Masker::new(&all);
        for masker in &mut inner.maskers {
            *masker = masker.continued_with(&template);
        }
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
        self.lock().maskers[0].mask_str(text)
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

    /// Releases what the maskers hold and writes the partial lines, if any: the current
    /// stream's first.
    fn end_output(&mut self) {
        let current = self.stream;
        let other = match current {
            Stream::Stdout => Stream::Stderr,
            Stream::Stderr => Stream::Stdout,
        };
        for stream in [current, other] {
            self.stream = stream;
            let mut rest = Vec::new();
            self.maskers[stream as usize].flush(&mut rest);
            if !rest.is_empty() {
                self.append(&rest);
            }
            self.end_partial();
        }
        self.stream = current;
    }

    /// Writes the line in progress, if any, as a whole line.
    fn end_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.write(OffsetDateTime::now_utc(), Origin::Output, &line);
            self.partial = line;
            self.partial.clear();
        }
    }

    fn flush_if_dirty(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        for sink in &mut self.sinks {
            if let Err(e) = sink.flush() {
                note_error(&mut self.errors, sink.name(), &e);
            }
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
        if origin == Origin::Output {
            self.partial_shown = 0;
        }
        self.dirty = true;
        let record = Record {
            at,
            origin,
            line,
            phase: self.phase.as_deref(),
            command: self.command,
            stream: (origin == Origin::Output).then_some(self.stream),
        };
        for sink in &mut self.sinks {
            if let Err(e) = sink.line(&record) {
                note_error(&mut self.errors, sink.name(), &e);
            }
        }
    }
}

/// Remembers one failure per sink kind; the other sinks keep logging.
fn note_error(errors: &mut Vec<String>, sink: &str, e: &std::io::Error) {
    let message = format!("{sink}: {e}");
    if !errors.contains(&message) {
        errors.push(message);
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

    /// Keeps lines, and the JSON records a `JsonSink` would print for them.
    #[derive(Clone, Default)]
    struct Memory(
        Arc<Mutex<Lines>>,
        Arc<Mutex<Vec<serde_json::Value>>>,
        Arc<Mutex<usize>>,
    );

    impl Sink for Memory {
        fn name(&self) -> &str {
            "memory"
        }
        fn line(&mut self, record: &Record<'_>) -> std::io::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push((record.origin, record.line.to_vec()));
            let json = JsonSink::new(None).render(record)?;
            self.1
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&json).unwrap());
            Ok(())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            *self.2.lock().unwrap() += 1;
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

    /// A line whose end could begin a wrapped secret waits for what follows, but not for
    /// good: after a second of quiet it goes out whole, and a secret that then continues
    /// in one piece is still masked.
    #[test]
    fn a_line_held_for_a_possible_secret_goes_out_after_a_second_of_quiet() {
        let memory = Memory::default();
        let log = Log::new(
            &["hunter2secret".to_string()],
            vec![Box::new(memory.clone())],
        );
        log.output(b"pw=hun\n");
        for _ in 1..RELEASE_AFTER {
            log.idle();
        }
        assert!(lines(&memory).is_empty(), "{:?}", lines(&memory));
        log.idle();
        assert_eq!(lines(&memory), vec![(Origin::Output, "pw=hun".to_string())]);
        log.output(b"then hunter2secret\n");
        log.flush();
        assert_eq!(lines(&memory)[1], (Origin::Output, "then ***".to_string()));
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

    #[test]
    fn every_output_chunk_is_flushed_to_the_sinks() {
        let memory = Memory::default();
        let log = Log::new(&[], vec![Box::new(memory.clone())]);
        log.output(b"one\ntwo\nthr");
        assert_eq!(lines(&memory).len(), 2);
        assert_eq!(*memory.2.lock().unwrap(), 1, "one flush for the chunk");
        log.output(b"ee");
        assert_eq!(*memory.2.lock().unwrap(), 1, "nothing new, no flush");
        log.output(b"\n");
        assert_eq!(*memory.2.lock().unwrap(), 2);
        assert_eq!(lines(&memory)[2].1, "three");
    }

    fn file_log(secrets: &[&str]) -> (Log, tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build.log");
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        let log = Log::new(&secrets, vec![Box::new(FileSink::create(&path).unwrap())]);
        (log, dir, path)
    }

    #[test]
    fn idle_shows_the_partial_line_once_in_the_log_file() {
        let (log, _dir, path) = file_log(&["hunter2secret"]);
        let read = || std::fs::read_to_string(&path).unwrap();
        log.output(b"line one\nprogress: 10%");
        assert_eq!(read(), "line one\n", "whole lines are in the file at once");
        log.idle();
        assert_eq!(read(), "line one\nprogress: 10%");
        log.idle();
        assert_eq!(read(), "line one\nprogress: 10%");
        log.output(b" 20%");
        log.idle();
        assert_eq!(read(), "line one\nprogress: 10% 20%");
        log.output(b" done\nnext");
        assert_eq!(read(), "line one\nprogress: 10% 20% done\n");
        log.idle();
        log.agent("Running command x");
        let text = read();
        assert!(
            text.starts_with("line one\nprogress: 10% 20% done\nnext\n[Container] "),
            "{text}"
        );
    }

    #[test]
    fn idle_never_shows_the_start_of_a_secret() {
        let (log, _dir, path) = file_log(&["hunter2secret"]);
        let read = || std::fs::read_to_string(&path).unwrap();
        log.output(b"password: hunter2");
        log.idle();
        assert_eq!(read(), "password: ");
        log.output(b"sec");
        log.idle();
        assert_eq!(read(), "password: ");
        log.output(b"ret and more");
        log.idle();
        assert_eq!(read(), "password: *** and more");
        log.output(b"\n");
        log.close();
        assert_eq!(read(), "password: *** and more\n");
        // A wrapped base64 form held back across the line break.
        let secret = "a-much-longer-secret-value-for-base64";
        let (log, _dir, path) = file_log(&[secret]);
        let encoded = base64_wrapped(secret.as_bytes(), 20);
        let (first, rest) = encoded.split_at(25);
        log.output(first);
        log.idle();
        let shown = std::fs::read_to_string(&path).unwrap();
        log.output(rest);
        log.close();
        let all = std::fs::read_to_string(&path).unwrap();
        assert!(all.starts_with(&shown), "{shown:?} then {all:?}");
        // Every line masked but the last characters, which the padding changes.
        assert!(
            all.lines()
                .all(|l| l.starts_with("***") && l.len() <= 3 + 4),
            "{all}"
        );
    }

    fn base64_wrapped(bytes: &[u8], width: usize) -> Vec<u8> {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut encoded = Vec::new();
        for chunk in bytes.chunks(3) {
            let mut n = 0u32;
            for (i, &b) in chunk.iter().enumerate() {
                n |= u32::from(b) << (16 - 8 * i);
            }
            for i in 0..4 {
                encoded.push(if i <= chunk.len() {
                    ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]
                } else {
                    b'='
                });
            }
        }
        let mut out = Vec::new();
        for line in encoded.chunks(width) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn line_based_sinks_wait_for_the_whole_line() {
        let memory = Memory::default();
        let log = Log::new(&[], vec![Box::new(memory.clone())]);
        log.output(b"partial");
        log.idle();
        assert!(lines(&memory).is_empty());
        log.output(b" line\n");
        assert_eq!(
            lines(&memory),
            [(Origin::Output, "partial line".to_string())]
        );
    }

    #[test]
    fn json_records_carry_phase_command_and_stream() {
        let memory = Memory::default();
        let log = Log::new(&["s3cr3tvalue".to_string()], vec![Box::new(memory.clone())]);
        log.agent("Running build b");
        log.set_context(Some("BUILD"), None);
        log.agent("Entering phase BUILD");
        log.set_command(Some(0));
        log.output(b"out s3cr3tvalue\npart");
        log.output_stream(Stream::Stderr, b"err\n");
        log.set_context(Some("BUILD"), Some(1));
        log.output(b"second\n");
        log.set_context(None, None);
        log.agent("Phase complete");
        let records = memory.1.lock().unwrap().clone();
        let shape: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                let time = r.as_object_mut().unwrap().remove("time").unwrap();
                assert!(time.as_str().unwrap().contains('T'), "{time}");
                if r["origin"] == "agent" {
                    r["line"] =
                        serde_json::Value::String(r["line"].as_str().unwrap()[39..].to_string());
                }
                r
            })
            .collect();
        let record = |origin: &str,
                      line: &str,
                      phase: Option<&str>,
                      command: Option<usize>,
                      stream: Option<&str>| {
            serde_json::json!({"origin": origin, "line": line, "phase": phase, "command": command, "stream": stream})
        };
        assert_eq!(
            shape,
            [
                record("agent", "Running build b", None, None, None),
                record("agent", "Entering phase BUILD", Some("BUILD"), None, None),
                record("output", "out ***", Some("BUILD"), Some(0), Some("stdout")),
                // The other stream ends the line in progress.
                record("output", "part", Some("BUILD"), Some(0), Some("stdout")),
                record("output", "err", Some("BUILD"), Some(0), Some("stderr")),
                record("output", "second", Some("BUILD"), Some(1), Some("stdout")),
                record("agent", "Phase complete", None, None, None),
            ]
        );
    }

    /// `Log::output` throughput with one 40-byte secret on 33-byte lines, written 33 bytes
    /// and 64 KiB at a time, to a sink that only counts; prints MB/s. Run with
    /// `cargo test -p agent --release --lib logs::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn throughput() {
        struct Count(usize);
        impl Sink for Count {
            fn name(&self) -> &str {
                "count"
            }
            fn line(&mut self, record: &Record<'_>) -> std::io::Result<()> {
                self.0 += record.line.len() + 1;
                Ok(())
            }
        }
        let mut chunk = Vec::new();
        while chunk.len() < 64 * 1024 {
            chunk.extend_from_slice(b"step 0042: compiling module foo!\n");
        }
        let secret = "Zq8\"kP/2+mX=v&Lw\\9yT4 a%b?c#d<e>f;g@h:".to_string();
        let total: usize = std::env::var("LOG_BENCH_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
            * 1024
            * 1024;
        for (label, piece) in [("33-byte writes", 33), ("64 KiB writes", chunk.len())] {
            let log = Log::new(std::slice::from_ref(&secret), vec![Box::new(Count(0))]);
            let started = std::time::Instant::now();
            let mut done = 0;
            while done < total {
                for p in chunk.chunks(piece) {
                    log.output(p);
                }
                done += chunk.len();
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "Log::output, 1 secret, 33-byte lines, {label}: {:.0} MB/s",
                done as f64 / secs / 1e6
            );
        }
    }

    #[test]
    fn the_other_stream_does_not_split_a_value_being_printed() {
        let memory = Memory::default();
        let log = Log::new(
            &["hunter2secret".to_string()],
            vec![Box::new(memory.clone())],
        );
        log.output(b"pw: hunter");
        log.output_stream(Stream::Stderr, b"warn");
        log.output(b"2secret\n");
        log.output_stream(Stream::Stderr, b"ing: hunter2");
        log.output(b"out\n");
        log.output_stream(Stream::Stderr, b"secret\n");
        log.flush();
        let got: Vec<(String, String)> = memory
            .1
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["stream"].as_str().unwrap().to_string(),
                    r["line"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want = [
            ("stdout", "pw: "),
            ("stderr", "warn"),
            ("stdout", "***"),
            ("stderr", "ing: "),
            ("stdout", "out"),
            ("stderr", "***"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(s, l)| (s.to_string(), l.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}
