//! Where log lines go: the terminal, the build's log file, JSON lines for machines.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use time::OffsetDateTime;

use super::Origin;

pub trait Sink: Send {
    fn name(&self) -> &str;
    /// One line, without its newline. Bytes need not be UTF-8.
    fn line(&mut self, at: OffsetDateTime, origin: Origin, line: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The log is finished: nothing more will come.
    fn close(&mut self) {}
}

/// Standard output, as a person reads it. `quiet` keeps only the agent's own lines. With a
/// prefix (a batch member's identifier) every line is written whole under the stdout lock,
/// so the members' lines never mix within a line.
pub struct TerminalSink {
    out: BufWriter<io::Stdout>,
    quiet: bool,
    prefix: Option<String>,
}

impl TerminalSink {
    pub fn new(quiet: bool) -> Self {
        TerminalSink {
            out: BufWriter::with_capacity(64 * 1024, io::stdout()),
            quiet,
            prefix: None,
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

    fn line(&mut self, _: OffsetDateTime, origin: Origin, line: &[u8]) -> io::Result<()> {
        if self.quiet && origin == Origin::Output {
            return Ok(());
        }
        if let Some(prefix) = &self.prefix {
            let mut whole = Vec::with_capacity(prefix.len() + line.len() + 1);
            whole.extend_from_slice(prefix.as_bytes());
            whole.extend_from_slice(line);
            whole.push(b'\n');
            let mut out = io::stdout().lock();
            return out.write_all(&whole).and_then(|()| out.flush());
        }
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        // Agent lines mark progress: show them now; output is flushed as the buffer fills.
        if origin == Origin::Agent {
            self.out.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The whole log as the terminal would show it, in a file.
pub struct FileSink {
    out: BufWriter<File>,
}

impl FileSink {
    pub fn create(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(FileSink {
            out: BufWriter::with_capacity(256 * 1024, File::create(path)?),
        })
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        "log file"
    }

    fn line(&mut self, _: OffsetDateTime, _: Origin, line: &[u8]) -> io::Result<()> {
        self.out.write_all(line)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One JSON object a line on standard output: `{"time", "origin", "line"}`, and `"build"`
/// for a batch member.
pub struct JsonSink {
    build: Option<String>,
}

impl JsonSink {
    pub fn new(build: Option<&str>) -> Self {
        JsonSink {
            build: build.map(str::to_string),
        }
    }
}

impl Sink for JsonSink {
    fn name(&self) -> &str {
        "json log"
    }

    fn line(&mut self, at: OffsetDateTime, origin: Origin, line: &[u8]) -> io::Result<()> {
        let mut record = serde_json::json!({
            "time": at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "origin": match origin { Origin::Agent => "agent", Origin::Output => "output" },
            "line": String::from_utf8_lossy(line),
        });
        if let Some(build) = &self.build {
            record["build"] = serde_json::Value::String(build.clone());
        }
        let mut whole = serde_json::to_vec(&record)?;
        whole.push(b'\n');
        // One write per record under the lock: records from several builds never mix.
        let mut out = io::stdout().lock();
        out.write_all(&whole)?;
        if origin == Origin::Agent {
            out.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}
