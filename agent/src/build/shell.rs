//! The conversation with a build shell, and why a build cannot steer it.
//!
//! The shell reads its commands on standard input, one frame a line, sent only once it has
//! reported the previous one. Each frame carries a sequence number and three fresh random
//! values: the shell acknowledges the frame with the first (`go`) before it runs anything,
//! and reports the command's end with the second when the exit status is 0 and with the
//! third otherwise, so a status line seen in the output cannot be turned from a failure
//! into a success. The shell also counts the frames it has received and says so in every
//! acknowledgement. Reports go to descriptor 7, a copy of the shell's first standard
//! output, so a command that sends its own output elsewhere (`exec >/dev/null 2>&1`) does
//! not silence them.
//!
//! The agent accepts exactly the next report it expects. Anything else that carries the
//! build's token is tampering, and so is a frame not acknowledged in time (a process of the
//! build read it from the shell's input through `/proc`), or a frame count that does not
//! match (one was read before); tampering ends the build FAILED. What this cannot stop: the
//! commands run inside the shell itself (CodeBuild's 0.2 semantics need one shell), so a
//! command that rewrites that shell (redefines `eval` or `printf`) changes how later
//! commands run, as one that replaces a tool on the PATH would.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::exec::{Chunk, ExecError, Executor, ShellHandle, ShellSpec};
use crate::logs::{Log, Stream};

/// Starts the report lines; a byte commands do not print by accident.
const MARK: u8 = 0x1e;

/// How long output may pause before a partial line is shown.
const IDLE: Duration = Duration::from_millis(100);

/// The descriptor the shell reports on.
const REPORT_FD: u8 = 7;

/// The copy of the shell's standard error that frames end on.
const ERR_FD: u8 = 8;

/// How long the end of a frame on standard error is waited for once its status is in; a
/// build that closed descriptor 8 costs this much a command, not a hang.
const ERR_WAIT: Duration = Duration::from_secs(5);

/// How long a shell may take to acknowledge a frame. It is idle, waiting for it, when the
/// frame is sent; a missing acknowledgement means something else took the frame.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// The first frame of a shell also waits for the shell to start.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub exit_code: i64,
    /// The working directory after the command; `None` when the shell ended.
    pub cwd: Option<String>,
    /// Why the agent no longer trusts what this shell reports, when the build tampered with
    /// the agent's channel.
    pub tampered: Option<String>,
}

impl Finished {
    fn ended(exit_code: i64) -> Self {
        Finished {
            exit_code,
            cwd: None,
            tampered: None,
        }
    }
}

pub struct Shell {
    handle: ShellHandle,
    token: String,
    parser: Parser,
    /// Standard error, where each frame ends with a mark too: once it is read, everything
    /// the frame's command wrote there has been, and no error line slips past its command.
    err_parser: Parser,
    /// The last frame whose mark on standard error was read.
    err_done: u64,
    /// Set once the shell has ended.
    ended: Option<i64>,
    /// Frames sent so far.
    sent: u64,
    /// Set once tampering was seen: nothing this shell reports is believed after it.
    tampered: Option<String>,
    ack_timeout: Duration,
    first_ack_timeout: Duration,
}

/// What one frame expects back.
struct Frame {
    seq: u64,
    go: String,
    ok: String,
    failed: String,
}

impl Frame {
    fn new(seq: u64) -> Self {
        let fresh = || uuid::Uuid::new_v4().simple().to_string();
        Frame {
            seq,
            go: fresh(),
            ok: fresh(),
            failed: fresh(),
        }
    }
}

/// A report line, as parsed; checked against the frame by [`Shell::await_frame`].
#[derive(Debug, PartialEq, Eq)]
enum Report {
    Go {
        seq: u64,
        nonce: String,
        count: u64,
    },
    Status {
        seq: u64,
        code: i64,
        proof: String,
        cwd: String,
    },
    Value {
        seq: u64,
        proof: String,
        value: Option<Vec<u8>>,
    },
    /// The end of a frame, on standard error.
    End {
        seq: u64,
    },
    /// A line with the build's token that is none of the above.
    Malformed(String),
}

enum Event {
    Report(Report),
    Ended(i64),
}

/// How a frame ended, as the agent believes it.
enum Outcome {
    Status { code: i64, cwd: String },
    Value(Option<Vec<u8>>),
    Ended(i64),
    Tampered(String),
}

impl Shell {
    pub async fn start<E: Executor>(
        executor: &E,
        spec: ShellSpec,
        token: &str,
    ) -> Result<Shell, ExecError> {
        let handle = executor.start_shell(spec).await?;
        Ok(Shell {
            handle,
            token: token.to_string(),
            parser: Parser::new(token, Stream::Stdout),
            err_parser: Parser::new(token, Stream::Stderr),
            err_done: 0,
            ended: None,
            sent: 0,
            tampered: None,
            ack_timeout: ACK_TIMEOUT,
            first_ack_timeout: FIRST_ACK_TIMEOUT,
        })
    }

    pub fn is_alive(&self) -> bool {
        self.ended.is_none() && self.tampered.is_none()
    }

    /// Why nothing this shell reports is believed, once the build tampered with it.
    pub fn tampered(&self) -> Option<&str> {
        self.tampered.as_deref()
    }

    /// Runs one command; its output goes to `log`.
    pub async fn run(&mut self, command: &str, log: &Log) -> Finished {
        let body = format!(
            "__agent_c=$(printf '%b_' {}); eval \"${{__agent_c%_}}\" </dev/null; __agent_rc=$?; export CODEBUILD_LAST_EXIT=$__agent_rc",
            octal_escaped(command)
        );
        match self.frame(&body, Ending::Status, log).await {
            Outcome::Status { code, cwd } => Finished {
                exit_code: code,
                cwd: Some(cwd),
                tampered: None,
            },
            Outcome::Value(_) => self.tamper("a value was reported for a command", log),
            Outcome::Ended(code) => Finished::ended(code),
            Outcome::Tampered(why) => Finished {
                exit_code: -1,
                cwd: None,
                tampered: Some(why),
            },
        }
    }

    /// Evaluates shell text in the build shell and returns its value: `$VAR`, `$(cmd)`,
    /// `${VAR:-x}`… as CodeBuild expands `artifacts.name` and `cache.key`. `None` when the
    /// shell ended or cannot be trusted.
    pub async fn expand(&mut self, text: &str, log: &Log) -> Option<String> {
        let expr = format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
        let assign = format!(
            "eval {} </dev/null 2>/dev/null",
            quote(&format!("__agent_q={expr}"))
        );
        self.query(&assign, "__agent_q", log)
            .await
            .map(|v| String::from_utf8_lossy(&v.unwrap_or_default()).into_owned())
    }

    /// The value of an exported or shell variable; `Some(None)` when it is unset.
    pub async fn variable(&mut self, name: &str, log: &Log) -> Option<Option<Vec<u8>>> {
        self.query(":", name, log).await
    }

    /// Runs `prepare`, then reports the variable `name`, hex-encoded so any bytes survive.
    async fn query(&mut self, prepare: &str, name: &str, log: &Log) -> Option<Option<Vec<u8>>> {
        let body = format!(
            "{prepare}; __agent_rc=${{{name}+set}}; __agent_v=$(printf '%s' \"${name}\" | od -An -v -tx1 | tr -d ' \\n')"
        );
        match self.frame(&body, Ending::Value, log).await {
            Outcome::Value(value) => Some(value),
            Outcome::Tampered(_) | Outcome::Ended(_) => None,
            Outcome::Status { .. } => {
                self.tamper("a status was reported for a query", log);
                None
            }
        }
    }

    /// Runs shell text that is not a build command (setting a variable); its output, if
    /// any, still goes to the log. False when the shell ended or cannot be trusted.
    pub async fn control(&mut self, script: &str, log: &Log) -> bool {
        let body = format!("{script}; __agent_rc=$?");
        matches!(
            self.frame(&body, Ending::Status, log).await,
            Outcome::Status { .. }
        )
    }

    /// Ends the shell and waits, briefly, for it to go. A frame the shell missed, or a
    /// report nobody asked for, still shows here: `Err` says what the build did.
    pub async fn close(mut self, log: &Log) -> Result<(), String> {
        if let Some(why) = &self.tampered {
            return Err(why.clone());
        }
        if self.ended.is_some() {
            return Ok(());
        }
        // A last frame checks the shell's count: a command whose frame was taken by a
        // build process and answered in its place is found out here at the latest.
        let checked = self.control(":", log).await;
        if let Some(why) = &self.tampered {
            return Err(why.clone());
        }
        if checked && self.send("exit 0\n").await {
            let _ = self.handle.stdin.get_mut().shutdown().await;
            let drain = async {
                match self.next(log).await {
                    Event::Ended(_) => Ok(()),
                    Event::Report(report) => Err(unexpected(&report)),
                }
            };
            if let Ok(result) = tokio::time::timeout(Duration::from_secs(5), drain).await {
                return result.map_err(|why| {
                    let why = tamper_message(&why);
                    log.agent(&why);
                    why
                });
            }
        }
        Ok(())
    }

    /// Sends one frame and waits for what it reports.
    async fn frame(&mut self, body: &str, ending: Ending, log: &Log) -> Outcome {
        if let Some(why) = &self.tampered {
            return Outcome::Tampered(why.clone());
        }
        if let Some(code) = self.ended {
            return Outcome::Ended(code);
        }
        let first = self.sent == 0;
        self.sent += 1;
        let frame = Frame::new(self.sent);
        let token = &self.token;
        let fd = REPORT_FD;
        let init = if first {
            format!("exec {fd}>&1 {err}>&2; __agent_n=0; ", err = ERR_FD)
        } else {
            String::new()
        };
        let report = match ending {
            Ending::Status => format!(
                "printf '\\036{token}:rc:{seq}:%d:%s:%s\\n' \"$__agent_rc\" \"$__agent_p\" \"$PWD\" >&{fd}",
                seq = frame.seq
            ),
            Ending::Value => format!(
                "if [ \"$__agent_rc\" = set ]; then printf '\\036{token}:val:{seq}:%s:%s\\n' \"$__agent_p\" \"$__agent_v\" >&{fd}; else printf '\\036{token}:val:{seq}:%s:-\\n' \"$__agent_p\" >&{fd}; fi",
                seq = frame.seq
            ),
        };
        let proof = match ending {
            Ending::Status => format!(
                "if [ \"$__agent_rc\" = 0 ]; then __agent_p={}; else __agent_p={}; fi",
                frame.ok, frame.failed
            ),
            // A value has no success or failure: the proof is the same either way.
            Ending::Value => format!("__agent_p={}", frame.ok),
        };
        // One line: a shell that got only part of it runs none of it. A shell that missed a
        // frame (a process of the build read it) runs nothing more: its count is off.
        let script = format!(
            "{init}{{ __agent_n=$((__agent_n+1)); printf '\\036{token}:go:{seq}:{go}:%d\\n' \"$__agent_n\" >&{fd} || exit 125; [ \"$__agent_n\" = {seq} ] || exit 125; {body}; {proof}; {report} || exit 125; printf '\\036{token}:end:{seq}\\n' 2>/dev/null >&{err}; }}\n",
            seq = frame.seq,
            go = frame.go,
            err = ERR_FD,
        );
        if !self.send(&script).await {
            return Outcome::Ended(self.finish_dead(log).await);
        }
        self.await_frame(&frame, first, log).await
    }

    async fn await_frame(&mut self, frame: &Frame, first: bool, log: &Log) -> Outcome {
        let limit = if first {
            self.first_ack_timeout
        } else {
            self.ack_timeout
        };
        // The acknowledgement, in time.
        let Ok(event) = tokio::time::timeout(limit, self.next(log)).await else {
            let why = format!(
                "the build shell did not take command {} within {} s: a process of the build read the agent's command channel",
                frame.seq,
                limit.as_secs()
            );
            return self.tampered_outcome(why, log);
        };
        match event {
            Event::Ended(code) => return Outcome::Ended(code),
            Event::Report(Report::Go { seq, nonce, count })
                if seq == frame.seq && nonce == frame.go =>
            {
                if count != frame.seq {
                    let why = format!(
                        "the build shell received {count} commands where the agent sent {}: a process of the build read commands meant for the shell",
                        frame.seq
                    );
                    return self.tampered_outcome(why, log);
                }
            }
            Event::Report(other) => return self.tampered_outcome(unexpected(&other), log),
        }
        // The end of the frame, however long the command runs.
        let outcome = match self.next(log).await {
            Event::Ended(code) => Outcome::Ended(code),
            Event::Report(Report::Status {
                seq,
                code,
                proof,
                cwd,
            }) if seq == frame.seq => {
                let expected = if code == 0 { &frame.ok } else { &frame.failed };
                if &proof == expected {
                    Outcome::Status { code, cwd }
                } else {
                    let why = format!(
                        "the status of command {seq} was forged (exit status {code} with the wrong proof)"
                    );
                    self.tampered_outcome(why, log)
                }
            }
            Event::Report(Report::Value { seq, proof, value })
                if seq == frame.seq && proof == frame.ok =>
            {
                Outcome::Value(value)
            }
            Event::Report(other) => self.tampered_outcome(unexpected(&other), log),
        };
        if !matches!(outcome, Outcome::Status { .. } | Outcome::Value(_)) {
            return outcome;
        }
        // What the command wrote to standard error is all in before anything follows it.
        let deadline = tokio::time::Instant::now() + ERR_WAIT;
        while self.err_done < frame.seq && self.ended.is_none() {
            match tokio::time::timeout_at(deadline, self.next_event(log)).await {
                Err(_) | Ok(Some(Event::Ended(_))) => break,
                Ok(None) => {}
                Ok(Some(Event::Report(other))) => {
                    return self.tampered_outcome(unexpected(&other), log);
                }
            }
        }
        outcome
    }

    fn tampered_outcome(&mut self, why: String, log: &Log) -> Outcome {
        Outcome::Tampered(self.mark_tampered(&why, log))
    }

    /// Believes nothing more from this shell; the message says why.
    fn mark_tampered(&mut self, why: &str, log: &Log) -> String {
        let message = tamper_message(why);
        log.agent(&message);
        self.tampered = Some(message.clone());
        message
    }

    fn tamper(&mut self, why: &str, log: &Log) -> Finished {
        Finished {
            exit_code: -1,
            cwd: None,
            tampered: Some(self.mark_tampered(why, log)),
        }
    }

    async fn send(&mut self, script: &str) -> bool {
        if self.ended.is_some() {
            return false;
        }
        {
            let stdin = self.handle.stdin.get_mut();
            stdin.write_all(script.as_bytes()).await.is_ok() && stdin.flush().await.is_ok()
        }
    }

    async fn finish_dead(&mut self, log: &Log) -> i64 {
        loop {
            if let Event::Ended(code) = self.next(log).await {
                return code;
            }
        }
    }

    /// The next report or the shell's end; marks on standard error are taken in passing.
    async fn next(&mut self, log: &Log) -> Event {
        loop {
            if let Some(event) = self.next_event(log).await {
                return event;
            }
        }
    }

    /// Like [`Shell::next`], but `None` as soon as a frame's end is read on standard error.
    async fn next_event(&mut self, log: &Log) -> Option<Event> {
        loop {
            if let Some(report) = self.parser.pending.pop_front() {
                return Some(Event::Report(report));
            }
            match self.err_parser.pending.pop_front() {
                Some(Report::End { seq }) => {
                    self.err_done = self.err_done.max(seq);
                    return None;
                }
                Some(report) => return Some(Event::Report(report)),
                None => {}
            }
            if let Some(code) = self.ended {
                return Some(Event::Ended(code));
            }
            // Output that stops mid-line is shown once the stream has been quiet this long.
            let Ok(chunk) = tokio::time::timeout(IDLE, self.handle.output.recv()).await else {
                log.idle();
                continue;
            };
            match chunk {
                Some(Chunk::Stdout(bytes)) => self.parser.feed(&bytes, log),
                Some(Chunk::Stderr(bytes)) => self.err_parser.feed(&bytes, log),
                Some(Chunk::Exited(code)) => {
                    self.parser.finish(log);
                    self.err_parser.finish(log);
                    self.ended = Some(code);
                }
                None => {
                    self.parser.finish(log);
                    self.err_parser.finish(log);
                    self.ended = Some(-1);
                }
            }
        }
    }
}

/// What a frame ends with.
#[derive(Clone, Copy)]
enum Ending {
    Status,
    Value,
}

fn unexpected(report: &Report) -> String {
    match report {
        Report::Go { seq, .. } => {
            format!("an acknowledgement for command {seq} came when none was due")
        }
        Report::Status { seq, code, .. } => {
            format!("a status for command {seq} (exit status {code}) came when none was due")
        }
        Report::Value { seq, .. } => format!("a value for query {seq} came when none was due"),
        Report::End { seq } => format!("the end of command {seq} came on standard output"),
        Report::Malformed(_) => "a line imitating the agent's reports was printed".to_string(),
    }
}

fn tamper_message(why: &str) -> String {
    format!(
        "The build tampered with the agent's command channel: {why}; no further commands run and the build fails"
    )
}

/// `text` as one single-quoted shell word.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// `text` as a single-quoted `printf %b` argument on one line: every byte but a few plain
/// ones as a `\0NNN` octal escape, so newlines and quotes cannot end the frame.
fn octal_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2 + 2);
    out.push('\'');
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b" _./,:=+-@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\0{b:03o}"));
        }
    }
    out.push('\'');
    out
}

/// Splits a stream of the shell into output and report lines.
struct Parser {
    stream: Stream,
    prefix: Vec<u8>,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<Report>,
}

impl Parser {
    fn new(token: &str, stream: Stream) -> Self {
        let mut prefix = vec![MARK];
        prefix.extend_from_slice(token.as_bytes());
        prefix.push(b':');
        Parser {
            stream,
            prefix,
            buf: Vec::new(),
            pending: Default::default(),
        }
    }

    fn feed(&mut self, bytes: &[u8], log: &Log) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let Some(offset) = self.buf[start..].iter().position(|&b| b == MARK) else {
                log.output_stream(self.stream, &self.buf[start..]);
                self.buf.clear();
                return;
            };
            let mark = start + offset;
            log.output_stream(self.stream, &self.buf[start..mark]);
            let rest = &self.buf[mark..];
            let known = rest.len().min(self.prefix.len());
            if rest[..known] != self.prefix[..known] {
                // A stray mark byte from the build: it is output like any other.
                log.output_stream(self.stream, &rest[..1]);
                start = mark + 1;
                continue;
            }
            let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
                // A report not complete yet: keep it for the next chunk, within reason.
                if rest.len() > MAX_REPORT {
                    self.pending
                        .push_back(Report::Malformed("an endless report line".into()));
                    self.buf.clear();
                } else {
                    self.buf.drain(..mark);
                }
                return;
            };
            if known < self.prefix.len() {
                log.output_stream(self.stream, &rest[..1]);
                start = mark + 1;
                continue;
            }
            let line = String::from_utf8_lossy(&rest[self.prefix.len()..newline]).into_owned();
            self.pending.push_back(parse_report(&line));
            start = mark + newline + 1;
        }
    }

    fn finish(&mut self, log: &Log) {
        let rest = std::mem::take(&mut self.buf);
        log.output_stream(self.stream, &rest);
    }
}

/// The longest report line: a value of a few hundred KiB, hex-encoded.
const MAX_REPORT: usize = 4 * 1024 * 1024;

fn parse_report(line: &str) -> Report {
    let parsed = (|| {
        let (kind, rest) = line.split_once(':')?;
        match kind {
            "go" => {
                let mut f = rest.splitn(3, ':');
                Some(Report::Go {
                    seq: f.next()?.parse().ok()?,
                    nonce: f.next()?.to_string(),
                    count: f.next()?.parse().ok()?,
                })
            }
            "rc" => {
                let mut f = rest.splitn(4, ':');
                Some(Report::Status {
                    seq: f.next()?.parse().ok()?,
                    code: f.next()?.parse().ok()?,
                    proof: f.next()?.to_string(),
                    cwd: f.next()?.to_string(),
                })
            }
            "end" => Some(Report::End {
                seq: rest.parse().ok()?,
            }),
            "val" => {
                let mut f = rest.splitn(3, ':');
                let seq = f.next()?.parse().ok()?;
                let proof = f.next()?.to_string();
                let hex = f.next()?;
                let value = if hex == "-" {
                    None
                } else {
                    Some(decode_hex(hex)?)
                };
                Some(Report::Value { seq, proof, value })
            }
            _ => None,
        }
    })();
    parsed.unwrap_or_else(|| Report::Malformed(line.chars().take(80).collect()))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.trim();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("echo 'a' b"), "'echo '\\''a'\\'' b'");
    }

    #[test]
    fn hex_decodes() {
        assert_eq!(decode_hex("6869").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_hex(""), Some(vec![]));
        assert_eq!(decode_hex("6"), None);
    }

    /// Every byte a command can hold comes back from the shell's `printf %b` as it was,
    /// and the escaped form is one line with no quote in it.
    #[test]
    fn commands_survive_the_escaping_in_every_shell() {
        let command: String = (1u8..=127).map(char::from).collect::<String>()
            + "\n\nä ü 😀 'quoted' \"double\" \\n \\0101 %s %% $HOME `x` $(y)\n\n";
        let escaped = octal_escaped(&command);
        assert!(!escaped.contains('\n'));
        assert_eq!(escaped.matches('\'').count(), 2);
        for shell in ["sh", "bash", "dash"] {
            if std::process::Command::new(shell)
                .arg("-c")
                .arg(":")
                .status()
                .is_err()
            {
                continue;
            }
            let script = format!("x=$(printf '%b_' {escaped}); printf '%s' \"${{x%_}}\"");
            let out = std::process::Command::new(shell)
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), command, "{shell}");
        }
    }

    #[test]
    fn reports_parse_and_anything_else_is_malformed() {
        assert_eq!(
            parse_report("go:3:abc:3"),
            Report::Go {
                seq: 3,
                nonce: "abc".into(),
                count: 3
            }
        );
        assert_eq!(
            parse_report("rc:4:2:p:/src/a:b"),
            Report::Status {
                seq: 4,
                code: 2,
                proof: "p".into(),
                cwd: "/src/a:b".into()
            }
        );
        assert_eq!(
            parse_report("val:5:p:6869"),
            Report::Value {
                seq: 5,
                proof: "p".into(),
                value: Some(b"hi".to_vec())
            }
        );
        assert_eq!(
            parse_report("val:5:p:-"),
            Report::Value {
                seq: 5,
                proof: "p".into(),
                value: None
            }
        );
        for bad in ["", "rc:x:0:p:/", "go:1", "val:1:p:zz", "other:1"] {
            assert!(matches!(parse_report(bad), Report::Malformed(_)), "{bad}");
        }
    }

    #[test]
    fn parser_separates_output_from_reports_across_chunks() {
        let log = Log::new(&[], vec![]);
        let mut parser = Parser::new("tok", Stream::Stdout);
        parser.feed(b"hello\x1e", &log);
        assert!(parser.pending.is_empty());
        parser.feed(b"to", &log);
        parser.feed(b"k:rc:1:3:p:/src\nmore\x1eother\n", &log);
        assert_eq!(
            parser.pending.pop_front(),
            Some(Report::Status {
                seq: 1,
                code: 3,
                proof: "p".into(),
                cwd: "/src".into()
            })
        );
        assert!(parser.pending.is_empty());
        // A line with the token that says nothing the agent sent is reported, not output.
        parser.feed(b"\x1etok:rc:1:0:forged\n", &log);
        assert!(matches!(
            parser.pending.pop_front(),
            Some(Report::Malformed(_))
        ));
    }
}
