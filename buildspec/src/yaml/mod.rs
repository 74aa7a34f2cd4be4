//! A YAML tree that keeps every scalar as the text that was written, with its span.
//!
//! CodeBuild users write `ACCOUNT: 012345678901` and `VERSION: 1.10` and expect those strings,
//! so no scalar is ever converted to a number on load; each field decides how to read its text.

mod load;

pub(crate) use load::load;

use crate::source::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar { text: String, style: Style },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    pub span: Span,
}

impl Node {
    /// `~`, `null` or nothing at all, written plain.
    pub fn is_null(&self) -> bool {
        matches!(
            &self.value,
            Value::Scalar { text, style: Style::Plain }
                if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
        )
    }

    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn style(&self) -> Option<Style> {
        match &self.value {
            Value::Scalar { style, .. } => Some(*style),
            _ => None,
        }
    }

    /// The scalar's text in backticks, or what the node is: for "must be X, not …".
    pub fn describe(&self) -> String {
        match self.scalar() {
            Some(text) if !self.is_null() => format!("`{text}`"),
            _ => self.kind_name().to_string(),
        }
    }

    /// What the node is, in the words an error message uses.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "nothing",
            Value::Scalar {
                style: Style::Plain,
                text,
            } if parses_as_number(text) => "a number",
            Value::Scalar { .. } => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

fn parses_as_number(text: &str) -> bool {
    !text.is_empty() && text.parse::<f64>().is_ok()
}

/// YAML 1.1 booleans as CodeBuild reads them (`yes`, `no`, `on`, `off`, `true`, `false`).
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "y" => Some(true),
        "no" | "false" | "off" | "n" => Some(false),
        _ => None,
    }
}
