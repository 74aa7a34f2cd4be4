//! The conversation with a build shell.
//!
//! Commands reach the shell on its standard input, which no command can read: each runs as
//! `eval '<command>' </dev/null 2>&1`, so its stdin is /dev/null and the shell's own input
//! is out of its reach. After each command the shell prints a status line that starts
//! with a per-build random token, on the same stream as the output, so output and status
//! arrive in order. A command that ends the shell (`exit 3`) ends with that status; the
//! next command gets a new shell.

use tokio::io::AsyncWriteExt;

use crate::exec::{Chunk, ExecError, Executor, ShellHandle, ShellSpec};
use crate::logs::Log;

/// Starts the status lines; a byte commands do not print by accident.
const MARK: u8 = 0x1e;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub exit_code: i64,
    /// The working directory after the command; `None` when the shell ended.
    pub cwd: Option<String>,
}

pub struct Shell {
    handle: ShellHandle,
    token: String,
    parser: Parser,
    /// Set once the shell has ended.
    ended: Option<i64>,
}

enum Event {
    Status { code: i64, cwd: String },
    Value { key: String, value: Option<Vec<u8>> },
    Ended(i64),
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
            parser: Parser::new(token),
            ended: None,
        })
    }

    pub fn is_alive(&self) -> bool {
        self.ended.is_none()
    }

    /// Runs one command; its output goes to `log`.
    pub async fn run(&mut self, command: &str, log: &Log) -> Finished {
        let script = format!(
            "eval {} </dev/null 2>&1\n__agent_rc=$?\nexport CODEBUILD_LAST_EXIT=$__agent_rc\nprintf '\\036{}:rc:%d:%s\\n' \"$__agent_rc\" \"$PWD\"\n",
            quote(command),
            self.token
        );
        if !self.send(&script).await {
            return self.finish_dead(log).await;
        }
        loop {
            match self.next(log).await {
                Event::Status { code, cwd } => {
                    return Finished {
                        exit_code: code,
                        cwd: Some(cwd),
                    };
                }
                Event::Value { .. } => {}
                Event::Ended(code) => {
                    return Finished {
                        exit_code: code,
                        cwd: None,
                    };
                }
            }
        }
    }

    /// Evaluates shell text in the build shell and returns its value: `$VAR`, `$(cmd)`,
    /// `${VAR:-x}`… as CodeBuild expands `artifacts.name` and `cache.key`. `None` when the
    /// shell ended.
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
        let token = &self.token;
        let script = format!(
            "{prepare}\nif [ \"${{{name}+set}}\" = set ]; then printf '\\036{token}:val:{name}:'; printf '%s' \"${name}\" | od -An -v -tx1 | tr -d ' \\n'; printf '\\n'; else printf '\\036{token}:val:{name}:-\\n'; fi\n"
        );
        if !self.send(&script).await {
            self.finish_dead(log).await;
            return None;
        }
        loop {
            match self.next(log).await {
                Event::Value { key, value } if key == name => return Some(value),
                Event::Value { .. } | Event::Status { .. } => {}
                Event::Ended(_) => return None,
            }
        }
    }

    /// Runs shell text that is not a build command (setting a variable); its output, if
    /// any, still goes to the log.
    pub async fn control(&mut self, script: &str, log: &Log) -> bool {
        let full = format!(
            "{script}\nprintf '\\036{}:rc:%d:%s\\n' \"$?\" \"$PWD\"\n",
            self.token
        );
        if !self.send(&full).await {
            self.finish_dead(log).await;
            return false;
        }
        loop {
            match self.next(log).await {
                Event::Status { .. } => return true,
                Event::Value { .. } => {}
                Event::Ended(_) => return false,
            }
        }
    }

    /// Ends the shell and waits, briefly, for it to go.
    pub async fn close(mut self, log: &Log) {
        if self.send("exit 0\n").await {
            let _ = self.handle.stdin.get_mut().shutdown().await;
            let wait = self.finish_dead(log);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait).await;
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

    async fn finish_dead(&mut self, log: &Log) -> Finished {
        loop {
            if let Event::Ended(code) = self.next(log).await {
                return Finished {
                    exit_code: code,
                    cwd: None,
                };
            }
        }
    }

    async fn next(&mut self, log: &Log) -> Event {
        loop {
            if let Some(event) = self.parser.pending.pop_front() {
                return event;
            }
            if let Some(code) = self.ended {
                return Event::Ended(code);
            }
            match self.handle.output.recv().await {
                Some(Chunk::Stdout(bytes)) => self.parser.feed(&bytes, log),
                Some(Chunk::Stderr(bytes)) => log.output(&bytes),
                Some(Chunk::Exited(code)) => {
                    self.parser.finish(log);
                    self.ended = Some(code);
                }
                None => {
                    self.parser.finish(log);
                    self.ended = Some(-1);
                }
            }
        }
    }
}

/// `text` as one single-quoted shell word.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Splits the stdout stream into output and status lines.
struct Parser {
    prefix: Vec<u8>,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<Event>,
}

impl Parser {
    fn new(token: &str) -> Self {
        let mut prefix = vec![MARK];
        prefix.extend_from_slice(token.as_bytes());
        prefix.push(b':');
        Parser {
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
                log.output(&self.buf[start..]);
                self.buf.clear();
                return;
            };
            let mark = start + offset;
            log.output(&self.buf[start..mark]);
            let rest = &self.buf[mark..];
            let known = rest.len().min(self.prefix.len());
            if rest[..known] != self.prefix[..known] {
                // A stray mark byte from the build: it is output like any other.
                log.output(&rest[..1]);
                start = mark + 1;
                continue;
            }
            let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
                // A status line not complete yet: keep it for the next chunk.
                self.buf.drain(..mark);
                return;
            };
            if known < self.prefix.len() {
                log.output(&rest[..1]);
                start = mark + 1;
                continue;
            }
            let line = String::from_utf8_lossy(&rest[self.prefix.len()..newline]).into_owned();
            if let Some(event) = parse_status(&line) {
                self.pending.push_back(event);
            }
            start = mark + newline + 1;
        }
    }

    fn finish(&mut self, log: &Log) {
        let rest = std::mem::take(&mut self.buf);
        log.output(&rest);
    }
}

fn parse_status(line: &str) -> Option<Event> {
    let (kind, rest) = line.split_once(':')?;
    match kind {
        "rc" => {
            let (code, cwd) = rest.split_once(':')?;
            Some(Event::Status {
                code: code.parse().ok()?,
                cwd: cwd.to_string(),
            })
        }
        "val" => {
            let (key, hex) = rest.split_once(':')?;
            let value = if hex == "-" {
                None
            } else {
                Some(decode_hex(hex)?)
            };
            Some(Event::Value {
                key: key.to_string(),
                value,
            })
        }
        _ => None,
    }
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

    #[test]
    fn parser_separates_output_from_status_across_chunks() {
        let log = Log::new(&[], vec![]);
        let mut parser = Parser::new("tok");
        parser.feed(b"hello\x1e", &log);
        assert!(parser.pending.is_empty());
        parser.feed(b"to", &log);
        parser.feed(b"k:rc:3:/src\nmore\x1eother\n", &log);
        match parser.pending.pop_front() {
            Some(Event::Status { code, cwd }) => assert_eq!((code, cwd.as_str()), (3, "/src")),
            _ => panic!("expected a status"),
        }
        assert!(parser.pending.is_empty());
    }
}
