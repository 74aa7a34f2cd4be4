//! Where log lines go: the terminal, the build's log file, JSON lines for machines.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use time::OffsetDateTime;

use super::{Origin, Stream};

/// One log line and what the build was doing when it was written.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub at: OffsetDateTime,
    pub origin: Origin,
    /// The line without its newline, masked. Bytes need not be UTF-8.
    pub line: &'a [u8],
    /// The phase running, by CodeBuild's name.
    pub phase: Option<&'a str>,
    /// The command's index in its phase (its `commands`, then its `finally`).
    pub command: Option<usize>,
    /// For command output, the stream it came from.
    pub stream: Option<Stream>,
}

pub trait Sink: Send {
    fn name(&self) -> &str;
    /// One whole line. If [`Sink::partial`] showed the start of it, it is the same line,
    /// complete now.
    fn line(&mut self, record: &Record<'_>) -> io::Result<()>;
    /// The output line in progress, all of it so far (a prefix of the line that will come
    /// to [`Sink::line`]), for sinks that show partial lines; others ignore it.
    fn partial(&mut self, _origin: Origin, _so_far: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The log is finished: nothing more will come.
    fn close(&mut self) {}
}

/// Standard output, as a person reads it. `quiet` keeps only the agent's own lines. With a
/// prefix (a batch member's identifier) every line is written whole under the stdout lock,
/// so the members' lines never mix within a line (and partial lines are not shown).
pub struct TerminalSink {
    out: BufWriter<io::Stdout>,
    quiet: bool,
    prefix: Option<String>,
    /// How much of the line in progress was shown already.
    shown: usize,
}

impl TerminalSink {
    pub fn new(quiet: bool) -> Self {
        TerminalSink {
            out: BufWriter::with_capacity(64 * 1024, io::stdout()),
            quiet,
            prefix: None,
            shown: 0,
        }
    }

    pub fn prefixed(quiet: bool, prefix: &str) -> Self {
        TerminalSink {
            prefix: Some(format!("[{prefix}] ")),
            ..Self::new(quiet)
        }
    }
}

impl Sink for TerminalSink {
    fn name(&self) -> &str {
        "terminal"
    }

    fn line(&mut self, record: &Record<'_>) -> io::Result<()> {
        if self.quiet && record.origin == Origin::Output {
            return Ok(());
        }
        if let Some(prefix) = &self.prefix {
            let mut whole = Vec::with_capacity(prefix.len() + record.line.len() + 1);
            whole.extend_from_slice(prefix.as_bytes());
            whole.extend_from_slice(record.line);
            whole.push(b'\n');
            let mut out = io::stdout().lock();
            return out.write_all(&whole).and_then(|()| out.flush());
        }
        let shown = std::mem::take(&mut self.shown).min(record.line.len());
        self.out.write_all(&record.line[shown..])?;
        self.out.write_all(b"\n")
    }

    fn partial(&mut self, origin: Origin, so_far: &[u8]) -> io::Result<()> {
        if self.prefix.is_some() || (self.quiet && origin == Origin::Output) {
            return Ok(());
        }
        if let Some(new) = so_far.get(self.shown..) {
            self.out.write_all(new)?;
            self.shown = so_far.len();
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The whole log as the terminal would show it, in a file; a partial line is written as
/// far as it goes, so that `tail -f` shows what a build is doing.
pub struct FileSink {
    out: BufWriter<File>,
    shown: usize,
}

impl FileSink {
    pub fn create(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(FileSink {
            out: BufWriter::with_capacity(256 * 1024, File::create(path)?),
            shown: 0,
        })
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        "log file"
    }

    fn line(&mut self, record: &Record<'_>) -> io::Result<()> {
        let shown = std::mem::take(&mut self.shown).min(record.line.len());
        self.out.write_all(&record.line[shown..])?;
        self.out.write_all(b"\n")
    }

    fn partial(&mut self, _: Origin, so_far: &[u8]) -> io::Result<()> {
        if let Some(new) = so_far.get(self.shown..) {
            self.out.write_all(new)?;
            self.shown = so_far.len();
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One JSON object a line on standard output: `{"time", "origin", "line", "phase",
/// "command", "stream"}` (`null` where it does not apply: no phase running, an agent line),
/// and `"build"` for a batch member.
pub struct JsonSink {
    build: Option<String>,
}

impl JsonSink {
    pub fn new(build: Option<&str>) -> Self {
        JsonSink {
            build: build.map(str::to_string),
        }
    }

    /// The record's JSON object, with its newline.
    pub fn render(&self, record: &Record<'_>) -> io::Result<Vec<u8>> {
        let mut object = serde_json::json!({
            "time": record.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "origin": match record.origin { Origin::Agent => "agent", Origin::Output => "output" },
            "line": String::from_utf8_lossy(record.line),
            "phase": record.phase,
            "command": record.command,
            "stream": record.stream.map(Stream::as_str),
        });
        if let Some(build) = &self.build {
            object["build"] = serde_json::Value::String(build.clone());
        }
        let mut whole = serde_json::to_vec(&object)?;
        whole.push(b'\n');
        Ok(whole)
    }
}

impl Sink for JsonSink {
    fn name(&self) -> &str {
        "json log"
    }

    fn line(&mut self, record: &Record<'_>) -> io::Result<()> {
        let whole = self.render(record)?;
        // One write per record under the lock: records from several builds never mix.
        io::stdout().lock().write_all(&whole)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}
