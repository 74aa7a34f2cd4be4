//! Diagnostics: what is wrong, where, and how to fix it.

use serde::Serialize;

use crate::source::{Position, Source, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// A stable identifier for each kind of problem, for tools reading `--format json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    YamlSyntax,
    EmptyDocument,
    MultipleDocuments,
    DocumentTooLarge,
    DuplicateKey,
    MissingVersion,
    UnknownVersion,
    FlattenedDocument,
    MissingPhases,
    UnknownPhase,
    MisplacedKey,
    MissingCommands,
    CommandIsMapping,
    EmptyCommand,
    WrongType,
    InvalidValue,
    MissingField,
    ReservedVariable,
    ExportedVariable,
    InvalidVariableName,
    InvalidSecretReference,
    InvalidBatch,
    OverLimit,
    Ignored,
    Unsupported,
    ReservedEvent,
    UnknownKey,
    UnknownEvent,
    Deprecated,
    MultilineCommand,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::YamlSyntax => "yaml-syntax",
            Code::EmptyDocument => "empty-document",
            Code::MultipleDocuments => "multiple-documents",
            Code::DocumentTooLarge => "document-too-large",
            Code::DuplicateKey => "duplicate-key",
            Code::MissingVersion => "missing-version",
            Code::UnknownVersion => "unknown-version",
            Code::FlattenedDocument => "flattened-document",
            Code::MissingPhases => "missing-phases",
            Code::UnknownPhase => "unknown-phase",
            Code::MisplacedKey => "misplaced-key",
            Code::MissingCommands => "missing-commands",
            Code::CommandIsMapping => "command-is-mapping",
            Code::EmptyCommand => "empty-command",
            Code::WrongType => "wrong-type",
            Code::InvalidValue => "invalid-value",
            Code::MissingField => "missing-field",
            Code::ReservedVariable => "reserved-variable",
            Code::ExportedVariable => "exported-variable",
            Code::InvalidVariableName => "invalid-variable-name",
            Code::InvalidSecretReference => "invalid-secret-reference",
            Code::InvalidBatch => "invalid-batch",
            Code::OverLimit => "over-limit",
            Code::Ignored => "ignored",
            Code::Unsupported => "unsupported",
            Code::ReservedEvent => "reserved-event",
            Code::UnknownKey => "unknown-key",
            Code::UnknownEvent => "unknown-event",
            Code::Deprecated => "deprecated",
            Code::MultilineCommand => "multiline-command",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in a file: a one-line cause, where it is, and a hint to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
    #[serde(skip)]
    pub span: Span,
    /// Where the problem starts.
    #[serde(flatten)]
    pub start: Position,
    /// Where the problem ends (exclusive).
    pub end: Position,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:column`, the form editors and terminals turn into links.
    pub fn location(&self, file: &str) -> String {
        format!("{file}:{}:{}", self.start.line, self.start.column)
    }
}

/// Collects diagnostics while a document is checked, resolving spans to positions.
pub(crate) struct Diagnostics<'s> {
    source: &'s Source,
    items: Vec<Diagnostic>,
}

impl<'s> Diagnostics<'s> {
    pub(crate) fn new(source: &'s Source) -> Self {
        Diagnostics {
            source,
            items: Vec::new(),
        }
    }

    pub(crate) fn source(&self) -> &'s Source {
        self.source
    }

    pub(crate) fn push(
        &mut self,
        severity: Severity,
        code: Code,
        span: Span,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.items.push(Diagnostic {
            severity,
            code,
            message: message.into(),
            hint,
            span,
            start: self.source.position(span.start),
            end: self.source.position(span.end),
        });
    }

    pub(crate) fn error(
        &mut self,
        code: Code,
        span: Span,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(Severity::Error, code, span, message, Some(hint.into()));
    }

    pub(crate) fn warning(
        &mut self,
        code: Code,
        span: Span,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(Severity::Warning, code, span, message, Some(hint.into()));
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics in the order they appear in the file.
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.items
            .sort_by_key(|d| (d.start, d.severity == Severity::Warning));
        self.items
            .dedup_by(|a, b| a.start == b.start && a.code == b.code && a.message == b.message);
        self.items
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let normalized = word.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    candidates
        .iter()
        .map(|c| {
            let cn = c.to_ascii_lowercase().replace('-', "_");
            let score = if cn == normalized {
                1.0
            } else {
                strsim::jaro_winkler(&normalized, &cn)
            };
            (score, *c)
        })
        .filter(|(score, _)| *score >= 0.84)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_close_names_only() {
        let keys = ["version", "phases", "artifacts", "pre_build"];
        assert_eq!(did_you_mean("phase", &keys), Some("phases"));
        assert_eq!(did_you_mean("artifact", &keys), Some("artifacts"));
        assert_eq!(did_you_mean("pre-build", &keys), Some("pre_build"));
        assert_eq!(did_you_mean("Version", &keys), Some("version"));
        assert_eq!(did_you_mean("zzz", &keys), None);
    }
}
