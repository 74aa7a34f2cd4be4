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
}

/// Standard output, as a person reads it. `quiet` keeps only the agent's own lines.
pub struct TerminalSink {
    out: BufWriter<io::Stdout>,
    quiet: bool,
}

impl TerminalSink {
    pub fn new(quiet: bool) -> Self {
        TerminalSink {
            out: BufWriter::with_capacity(64 * 1024, io::stdout()),
            quiet,
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

/// One JSON object a line on standard output: `{"time", "origin", "line"}`.
pub struct JsonSink {
    out: BufWriter<io::Stdout>,
}

impl JsonSink {
    pub fn new() -> Self {
        JsonSink {
            out: BufWriter::with_capacity(64 * 1024, io::stdout()),
        }
    }
}

impl Default for JsonSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for JsonSink {
    fn name(&self) -> &str {
        "json log"
    }

    fn line(&mut self, at: OffsetDateTime, origin: Origin, line: &[u8]) -> io::Result<()> {
        let record = serde_json::json!({
            "time": at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "origin": match origin { Origin::Agent => "agent", Origin::Output => "output" },
            "line": String::from_utf8_lossy(line),
        });
        serde_json::to_writer(&mut self.out, &record)?;
        self.out.write_all(b"\n")?;
        if origin == Origin::Agent {
            self.out.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
