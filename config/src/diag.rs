//! Problems found in a config file or a job message: where, what, and how to fix it.

use std::fmt;
use std::ops::Range;

/// One problem: the field it concerns, `line:column` (1-based, columns count characters),
/// a one-line cause and, when there is one, a hint to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field as a dotted path, e.g. `jobs.max_timeout`, `sources[1].wait_time`; empty
    /// for problems of the whole document (syntax errors).
    pub field: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    /// `origin:line:col: error: message`, then `  hint: …` on its own line.
    pub fn render(&self, origin: &str) -> String {
        let mut out = format!(
            "{origin}:{}:{}: error: {}",
            self.line, self.column, self.message
        );
        if let Some(hint) = &self.hint {
            out.push_str("\n  hint: ");
            out.push_str(hint);
        }
        out
    }
}

/// Every problem, one after the other, each as [`Problem::render`] shows it.
pub(crate) fn render_all(
    f: &mut fmt::Formatter<'_>,
    origin: &str,
    problems: &[Problem],
) -> fmt::Result {
    for (i, problem) in problems.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        f.write_str(&problem.render(origin))?;
    }
    Ok(())
}

/// Turns byte offsets into `line:column`.
pub(crate) struct Lines<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> Lines<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { text, starts }
    }

    /// 1-based line and column; the column counts characters, as editors do.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self.starts[line.saturating_sub(1)];
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }

    /// The byte offset of a 1-based line and byte column, as serde_json reports them.
    pub(crate) fn offset_of(&self, line: usize, byte_column: usize) -> usize {
        let Some(start) = line.checked_sub(1).and_then(|i| self.starts.get(i)) else {
            return self.text.len();
        };
        (start + byte_column.saturating_sub(1)).min(self.text.len())
    }
}

/// Gathers problems so a document reports all of them at once, in file order.
pub(crate) struct Problems<'t> {
    lines: Lines<'t>,
    items: Vec<Problem>,
}

impl<'t> Problems<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Problems {
            lines: Lines::new(text),
            items: Vec::new(),
        }
    }

    pub(crate) fn lines(&self) -> &Lines<'t> {
        &self.lines
    }

    pub(crate) fn push(
        &mut self,
        offset: usize,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, column) = self.lines.position(offset);
        self.items.push(Problem {
            field: field.into(),
            line,
            column,
            message: message.into(),
            hint,
        });
    }

    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(span.start, field, message, Some(hint.into()));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn finish(mut self) -> Vec<Problem> {
        // A stable sort keeps problems at one place in the order they were found.
        self.items.sort_by_key(|p| (p.line, p.column));
        self.items.dedup();
        self.items
    }
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo: one
/// edit or swap away (two for longer words), or similar by Jaro-Winkler.
pub(crate) fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word = word.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    let normal = |c: &str| c.to_ascii_lowercase().replace('-', "_");
    let max_edits = if word.chars().count() > 6 { 2 } else { 1 };
    let by_edits = candidates
        .iter()
        .map(|c| (strsim::osa_distance(&word, &normal(c)), *c))
        .filter(|(d, _)| *d <= max_edits)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    by_edits.or_else(|| {
        candidates
            .iter()
            .map(|c| (strsim::jaro_winkler(&word, &normal(c)), *c))
            .filter(|(score, _)| *score >= 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, c)| c)
    })
}

/// The indefinite article for a type name as it is read aloud (`an s3`, `a git`).
pub(crate) fn article(word: &str) -> &'static str {
    match word {
        "s3" | "sqs" | "https" => "an",
        _ if word.starts_with(['a', 'e', 'i', 'o', 'u']) => "an",
        _ => "a",
    }
}

/// `did you mean `x`?` when a candidate is close, else the list of what is accepted.
pub(crate) fn suggest(word: &str, candidates: &[&str]) -> String {
    match did_you_mean(word, candidates) {
        Some(close) => format!("did you mean `{close}`?"),
        None => format!(
            "expected one of: {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The problem of bytes that are not UTF-8, at the first bad byte.
pub(crate) fn not_utf8(bytes: &[u8], e: std::str::Utf8Error, what: &str) -> Vec<Problem> {
    // The prefix up to the bad byte is valid UTF-8 by definition.
    let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("");
    let mut p = Problems::new(valid);
    p.push(
        valid.len(),
        "",
        "the text is not UTF-8",
        Some(format!("{what} are UTF-8 text; save the file as UTF-8")),
    );
    p.finish()
}

/// A serde error message made friendlier: unknown fields and variants get a did-you-mean,
/// Rust type names become words.
pub(crate) fn explain_serde(message: &str, format: Format) -> (String, Option<String>) {
    for what in ["field", "variant"] {
        let marker = format!("unknown {what} `");
        let Some(rest) = message.strip_prefix(&marker) else {
            continue;
        };
        let Some((name, tail)) = rest.split_once('`') else {
            continue;
        };
        let candidates: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let hint = if candidates.is_empty() {
            "this table takes no fields here".to_string()
        } else {
            suggest(name, &candidates)
        };
        return (format!("unknown {what} `{name}`"), Some(hint));
    }
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return (
            format!("missing field `{name}`"),
            Some(format!("add `{name}`; it has no default")),
        );
    }
    let words = [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a borrowed string", "expected a string"),
    ];
    let mut message = message.to_string();
    for (from, to) in words {
        message = message.replace(from, to);
    }
    // The reader's own type names (`struct WireSource`) mean nothing to whoever wrote the file.
    if let Some(at) = message.find("expected struct ") {
        message.replace_range(at.., &format!("expected {}", format.object()));
    }
    let hint = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once("expected "))
        .map(|(_, expected)| type_hint(expected, format));
    (message, hint)
}

/// The text format a message came in, for wording hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Toml,
}

impl Format {
    fn object(self) -> &'static str {
        match self {
            Format::Json => "an object `{ … }`",
            Format::Toml => "a table",
        }
    }
}

/// How to write a value of the expected type.
fn type_hint(expected: &str, format: Format) -> String {
    let (json, toml) = match expected {
        e if e.starts_with("a string") => (
            "put the value in double quotes: `\"…\"`",
            "put the value in double quotes: `key = \"…\"`",
        ),
        e if e.contains("integer") || e.starts_with("a number") => (
            "write a number without quotes, e.g. `30`",
            "write a number without quotes, e.g. `key = 30`",
        ),
        e if e.starts_with("a boolean") => (
            "write `true` or `false`, without quotes",
            "write `key = true` or `key = false`, without quotes",
        ),
        e if e.starts_with("a sequence") => (
            "write a list: `[\"a\", \"b\"]`",
            "write a list: `key = [\"a\", \"b\"]`",
        ),
        e if e.starts_with("a map") || e.starts_with("an object") || e.starts_with("a table") => (
            "write an object of fields: `{\"name\": …}`",
            "write a table: a `[name]` header with `key = value` lines under it",
        ),
        _ => (
            "see docs/jobspec.md for what this field takes",
            "see docs/config.md for what this field takes",
        ),
    };
    match format {
        Format::Json => json.to_string(),
        Format::Toml => toml.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_from_one() {
        let lines = Lines::new("ab\nçd\n\nx");
        assert_eq!(lines.position(0), (1, 1));
        assert_eq!(lines.position(3), (2, 1));
        assert_eq!(lines.position(5), (2, 2));
        assert_eq!(lines.position(7), (3, 1));
        assert_eq!(lines.position(8), (4, 1));
        assert_eq!(lines.position(100), (4, 2));
        assert_eq!(lines.offset_of(2, 1), 3);
    }

    #[test]
    fn unknown_fields_get_a_suggestion() {
        let (message, hint) = explain_serde(
            "unknown field `concurency`, expected `name` or `concurrency`",
            Format::Toml,
        );
        assert_eq!(message, "unknown field `concurency`");
        assert_eq!(hint.as_deref(), Some("did you mean `concurrency`?"));
        let (_, hint) = explain_serde(
            "unknown variant `zzz`, expected `plain` or `json`",
            Format::Toml,
        );
        assert_eq!(hint.as_deref(), Some("expected one of: `plain`, `json`"));
    }
}
