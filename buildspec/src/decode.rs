//! Typed reading of the YAML tree, reporting every problem instead of stopping at the first.

use serde::Serialize;

use crate::diag::{Code, Diagnostics, did_you_mean};
use crate::source::Span;
use crate::yaml::{Node, Style, Value, parse_bool};

/// A value with the place in the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spanned<T> {
    pub value: T,
    #[serde(skip)]
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The entries of a mapping, looked up by key.
pub(crate) struct Fields<'n> {
    pub node: &'n Node,
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, _, v)| *v)
    }

    pub fn key_span(&self, name: &str) -> Option<Span> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, k, _)| k.span)
    }

    /// Entries in file order: (key text, key node, value node).
    pub fn iter(&self) -> impl Iterator<Item = (&'n str, &'n Node, &'n Node)> + '_ {
        self.entries.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

pub(crate) struct Decoder<'s> {
    pub diags: Diagnostics<'s>,
}

impl<'s> Decoder<'s> {
    pub fn new(diags: Diagnostics<'s>) -> Self {
        Decoder { diags }
    }

    pub fn wrong_type(&mut self, node: &Node, path: &str, expected: &str, hint: &str) {
        self.diags.error(
            Code::WrongType,
            node.span,
            format!("`{path}` must be {expected}, not {}", node.kind_name()),
            hint,
        );
    }

    /// The entries of a mapping; keys outside `known` get an unknown-key warning.
    /// Nothing (`key:` with no value) reads as an empty mapping.
    pub fn fields<'n>(&mut self, node: &'n Node, path: &str, known: &[&str]) -> Option<Fields<'n>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            _ if node.is_null() => {
                return Some(Fields {
                    node,
                    entries: Vec::new(),
                });
            }
            _ => {
                let hint =
                    format!("indent the keys of `{path}` under it, one `key: value` per line");
                self.wrong_type(node, path, "a mapping", &hint);
                return None;
            }
        };
        let mut fields = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let Some(name) = key.scalar() else {
                self.wrong_type(
                    key,
                    &format!("{path} key"),
                    "a string",
                    "write keys as plain words",
                );
                continue;
            };
            let name = name.trim();
            if !known.is_empty() && !known.contains(&name) {
                self.unknown_key(key.span, name, path, known);
            }
            fields.push((name, key, value));
        }
        Some(Fields {
            node,
            entries: fields,
        })
    }

    pub fn unknown_key(&mut self, span: Span, name: &str, path: &str, known: &[&str]) {
        let place = if path.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in `{path}`")
        };
        let hint = match did_you_mean(name, known) {
            Some(close) => format!("did you mean `{close}`?"),
            None => format!("expected one of: {}", known.join(", ")),
        };
        self.diags.warning(
            Code::UnknownKey,
            span,
            format!("unknown key `{name}` {place} is ignored"),
            hint,
        );
    }

    /// A scalar's text. Numbers and booleans are strings as written.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<Spanned<String>> {
        match &node.value {
            Value::Scalar { text, .. } if !node.is_null() => {
                Some(Spanned::new(text.clone(), node.span))
            }
            _ => {
                self.wrong_type(
                    node,
                    path,
                    "a string",
                    "give it a value on the same line, after `: `",
                );
                None
            }
        }
    }

    pub fn opt_string(
        &mut self,
        fields: &Fields<'_>,
        key: &str,
        path: &str,
    ) -> Option<Spanned<String>> {
        let node = fields.get(key)?;
        if node.is_null() {
            return None;
        }
        self.string(node, &join(path, key))
    }

    /// `yes`/`no`/`true`/`false`/`on`/`off`, quoted or not, as CodeBuild's YAML 1.1 reads them.
    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        let parsed = match &node.value {
            Value::Scalar { text, .. } => parse_bool(text.trim()),
            _ => None,
        };
        if parsed.is_none() {
            self.diags.error(
                Code::InvalidValue,
                node.span,
                format!("`{path}` must be yes or no, not {}", node.describe()),
                "write `yes` or `no` (`true`/`false` also work)",
            );
        }
        parsed
    }

    pub fn opt_bool(&mut self, fields: &Fields<'_>, key: &str, path: &str) -> Option<bool> {
        let node = fields.get(key)?;
        if node.is_null() {
            return None;
        }
        self.bool(node, &join(path, key))
    }

    /// A whole number in `min..=max`, written plain or quoted.
    pub fn number(
        &mut self,
        node: &Node,
        path: &str,
        range: (u64, u64),
        hint: &str,
    ) -> Option<u64> {
        let (min, max) = range;
        let value = node.scalar().and_then(|t| t.trim().parse::<u64>().ok());
        match value {
            Some(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.diags.error(
                    Code::InvalidValue,
                    node.span,
                    format!(
                        "`{path}` must be a whole number from {min} to {max}, not {}",
                        node.describe()
                    ),
                    hint,
                );
                None
            }
        }
    }

    /// A list of strings. A lone string is read as a one-item list, with a warning, since
    /// the intent is clear; nothing reads as an empty list.
    pub fn string_list(&mut self, node: &Node, path: &str) -> Vec<Spanned<String>> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .filter_map(|item| self.string(item, &format!("{path}[]")))
                .collect(),
            _ if node.is_null() => Vec::new(),
            Value::Scalar { text, .. } => {
                self.diags.warning(
                    Code::WrongType,
                    node.span,
                    format!("`{path}` should be a list; this string is read as its only item"),
                    list_item_hint(text),
                );
                vec![Spanned::new(text.clone(), node.span)]
            }
            Value::Map(_) => {
                self.wrong_type(node, path, "a list", "write one `- item` per line");
                Vec::new()
            }
        }
    }

    /// A mapping of names to string values, in file order.
    pub fn string_map(
        &mut self,
        node: &Node,
        path: &str,
    ) -> Vec<(Spanned<String>, Spanned<String>)> {
        let Some(fields) = self.fields(node, path, &[]) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, key, value) in fields.iter() {
            let text = match &value.value {
                _ if value.is_null() => String::new(),
                Value::Scalar { text, .. } => text.clone(),
                _ => {
                    self.wrong_type(
                        value,
                        &join(path, name),
                        "a string",
                        "quote the value; lists and mappings cannot be variable values",
                    );
                    continue;
                }
            };
            out.push((
                Spanned::new(name.to_string(), key.span),
                Spanned::new(text, value.span),
            ));
        }
        out
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `text` as a YAML value that reads back the same, quoting it when it needs quotes.
/// The hint for a lone string where a list belongs. A one-line text is offered as a list
/// item; a text of several lines (a `|` block) is not rewritten in the hint, since no
/// one-line form keeps every line break, `\` and quote as it was: it is shown how to
/// make the block itself the list's item.
pub(crate) fn list_item_hint(text: &str) -> String {
    if text.trim_end().contains('\n') {
        "make it a list of one item and keep the text as it is: write `- |` on the line after the key, and indent the text two more spaces under it".to_string()
    } else {
        format!(
            "write it as a list item: `- {}`",
            quote_if_needed(text.trim_end())
        )
    }
}

pub(crate) fn quote_if_needed(text: &str) -> String {
    let needs = text.is_empty()
        || text.contains(": ")
        || text.contains(" #")
        || text.ends_with(':')
        || text.starts_with(|c: char| "*&!%@`{[|>'\"#,?-".contains(c))
        || text != text.trim();
    if needs {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        text.to_string()
    }
}

/// True for block scalars (`|`, `>`), whose text spans several lines of the file.
pub(crate) fn is_block(node: &Node) -> bool {
    matches!(node.style(), Some(Style::Literal | Style::Folded))
}
