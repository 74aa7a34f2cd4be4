//! `agent validate`: checks buildspec and appspec files and reports every problem.

use std::io::Write;
use std::path::{Path, PathBuf};

use buildspec::{Diagnostic, Kind, Source};
use clap::ValueEnum;
use serde::Serialize;

use crate::exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Auto,
    Buildspec,
    Appspec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// The outcome for one file.
#[derive(Debug, Serialize)]
pub struct FileReport {
    pub path: String,
    /// `None` when the file could not be read.
    pub kind: Option<Kind>,
    pub valid: bool,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics: Vec<Diagnostic>,
    /// Why the file could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report<'r> {
    valid: bool,
    files: &'r [FileReport],
}

/// Checks `files` and prints the report; returns the exit status.
pub fn run(files: &[PathBuf], kind: KindArg, format: Format, color: bool) -> u8 {
    let kind = match kind {
        KindArg::Auto => None,
        KindArg::Buildspec => Some(Kind::Buildspec),
        KindArg::Appspec => Some(Kind::Appspec),
    };
    let mut reports = Vec::with_capacity(files.len());
    let mut human = String::new();
    for path in files {
        let (report, text) = check_file(path, kind, color);
        human.push_str(&text);
        reports.push(report);
    }
    let valid = reports.iter().all(|r| r.valid);
    let out = match format {
        Format::Human => human,
        Format::Json => {
            let report = Report {
                valid,
                files: &reports,
            };
            // Serializing plain data with string keys cannot fail.
            serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
        }
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`agent validate … | head`) is not worth a panic.
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    if valid {
        exit::SUCCESS
    } else {
        exit::BAD_INPUT
    }
}

/// Checks one file: its report, and the same as text for people.
pub fn check_file(path: &Path, kind: Option<Kind>, color: bool) -> (FileReport, String) {
    let name = path.display().to_string();
    let text = match read(path) {
        Ok(text) => text,
        Err(why) => {
            let line = format!("error: cannot read {name}: {why}\n");
            let report = FileReport {
                path: name,
                kind: None,
                valid: false,
                errors: 1,
                warnings: 0,
                diagnostics: Vec::new(),
                read_error: Some(why),
            };
            return (report, line);
        }
    };
    let source = Source::new(name.clone(), text);
    let (kind, parsed) = buildspec::parse(&source, kind);
    let errors = parsed.errors().count();
    let warnings = parsed.warnings().count();
    let mut out = buildspec::render_all(&source, &parsed.diagnostics, color);
    let verdict = if errors == 0 { "valid" } else { "invalid" };
    out.push_str(&format!(
        "{name}: {verdict} {} ({})\n",
        kind.as_str(),
        counts(errors, warnings)
    ));
    let report = FileReport {
        path: name,
        kind: Some(kind),
        valid: errors == 0,
        errors,
        warnings,
        diagnostics: parsed.diagnostics,
        read_error: None,
    };
    (report, out)
}

fn counts(errors: usize, warnings: usize) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    )
}

fn read(path: &Path) -> Result<String, String> {
    let bytes = agent_config::files::read_bounded(
        path,
        agent_config::files::MAX_FILE_BYTES,
        "a buildspec or appspec",
    )
    .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "it is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
            e.utf8_error().valid_up_to()
        )
    })
}
