//! Turns the YAML event stream into a [`Node`] tree with byte spans.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span as YamlSpan};

use super::{Node, Style, Value};
use crate::diag::{Code, Diagnostics};
use crate::source::{Cursor, Source, Span};

/// Nesting deeper than this is refused: no buildspec needs it, and it bounds recursion.
const MAX_DEPTH: usize = 64;
/// Nodes allowed after aliases are expanded, so a few lines cannot expand into gigabytes.
const MAX_NODES: usize = 100_000;
/// What a node costs in memory besides its text, for [`MAX_EXPANDED_BYTES`].
const NODE_COST: usize = 64;
/// Bytes allowed after aliases are expanded (each node's text plus [`NODE_COST`]): a 1 MiB
/// file of wide aliases to a big scalar or mapping stays within tens of MiB of memory.
pub(crate) const MAX_EXPANDED_BYTES: usize = 16 << 20;

/// The size of a subtree: its nodes and the bytes they hold.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
}

enum Frame {
    Seq {
        start: usize,
        flow: bool,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        flow: bool,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

struct Loader<'d, 's> {
    diags: &'d mut Diagnostics<'s>,
    source: &'s Source,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, Size)>,
    nodes: usize,
    bytes: usize,
    cursors: (Cursor, Cursor),
    documents: Vec<Node>,
}

/// Parses `source` into one document. Problems go to `diags`; `None` means there is
/// nothing usable (a syntax error, or an empty stream).
pub(crate) fn load<'s>(source: &'s Source, diags: &mut Diagnostics<'s>) -> Option<Node> {
    let mut loader = Loader {
        diags,
        source,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        bytes: 0,
        cursors: (Cursor::default(), Cursor::default()),
        documents: Vec::new(),
    };
    let parser = Parser::new_from_str(source.text());
    for event in parser {
        match event {
            Ok((event, span)) => {
                if let Err(LoadAbort) = loader.on_event(event, span) {
                    return None;
                }
            }
            Err(error) => {
                loader.syntax_error(&error);
                return None;
            }
        }
    }
    let mut documents = loader.documents.into_iter();
    let first = documents.next()?;
    if let Some(second) = documents.next() {
        loader.diags.error(
            Code::MultipleDocuments,
            second.span,
            "the file holds more than one YAML document",
            "keep a single document: remove the `---` line that starts the second one",
        );
    }
    Some(first)
}

struct LoadAbort;

impl Loader<'_, '_> {
    fn span(&mut self, span: YamlSpan) -> Span {
        // Starts and ends each come in order: walking on from the last one keeps a long line
        // (a flow sequence of many items) linear.
        let start =
            self.source
                .offset_from(span.start.line(), span.start.col(), &mut self.cursors.0);
        let end = self
            .source
            .offset_from(span.end.line(), span.end.col(), &mut self.cursors.1);
        Span::new(start, end)
    }

    fn on_event(&mut self, event: Event<'_>, span: YamlSpan) -> Result<(), LoadAbort> {
        let span = self.span(span);
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    ScalarStyle::Literal => Style::Literal,
                    ScalarStyle::Folded => Style::Folded,
                };
                let span = if matches!(style, Style::Literal | Style::Folded) {
                    Span::new(self.block_indicator_start(span.start), span.end)
                } else {
                    span
                };
                let node = Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        style,
                    },
                    span,
                };
                self.count(
                    Size {
                        nodes: 1,
                        bytes: NODE_COST.saturating_add(text_len(&node)),
                    },
                    span,
                    false,
                )?;
                self.complete(node, anchor)
            }
            Event::Alias(id) => {
                // Counted before the copy is made, so the copy itself stays within bounds.
                let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
                    self.diags.error(
                        Code::YamlSyntax,
                        span,
                        "this alias names no anchor defined before it",
                        "define the anchor (`&name`) before using `*name`, or quote the value if `*` is meant literally",
                    );
                    return Err(LoadAbort);
                };
                self.count(size, span, true)?;
                let Some((node, _)) = self.anchors.get(&id).cloned() else {
                    return Err(LoadAbort);
                };
                // The alias stands where it is written, so errors inside point here.
                let node = Node { span, ..node };
                self.complete(node, 0)
            }
            Event::SequenceStart(anchor, _) => {
                self.enter(span)?;
                let flow = self.source.text()[span.start..].starts_with('[');
                self.stack.push(Frame::Seq {
                    start: span.start,
                    flow,
                    anchor,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                self.enter(span)?;
                let flow = self.source.text()[span.start..].starts_with('{');
                self.stack.push(Frame::Map {
                    start: span.start,
                    flow,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    start,
                    flow,
                    anchor,
                    items,
                }) => {
                    let end = collection_end(flow, span, items.iter().map(|n| n.span.end));
                    self.complete_collection(Value::Seq(items), Span::new(start, end), anchor)
                }
                _ => Ok(()),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    start,
                    flow,
                    anchor,
                    entries,
                    ..
                }) => {
                    let end = collection_end(flow, span, entries.iter().map(|(_, v)| v.span.end));
                    let entries = self.check_keys(entries);
                    self.complete_collection(Value::Map(entries), Span::new(start, end), anchor)
                }
                _ => Ok(()),
            },
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => Ok(()),
        }
    }

    fn enter(&mut self, span: Span) -> Result<(), LoadAbort> {
        if self.stack.len() >= MAX_DEPTH {
            self.diags.error(
                Code::DocumentTooLarge,
                span,
                format!("the document nests more than {MAX_DEPTH} levels deep"),
                "flatten the structure: no buildspec or appspec key needs this depth",
            );
            return Err(LoadAbort);
        }
        Ok(())
    }

    /// Adds `size` to what the document expands to; past a bound, reports it at `span` (the
    /// alias that went over, when `alias`).
    fn count(&mut self, size: Size, span: Span, alias: bool) -> Result<(), LoadAbort> {
        self.nodes = self.nodes.saturating_add(size.nodes);
        self.bytes = self.bytes.saturating_add(size.bytes);
        let what = if self.nodes > MAX_NODES {
            format!("more than {MAX_NODES} values")
        } else if self.bytes > MAX_EXPANDED_BYTES {
            format!("more than {} MiB", MAX_EXPANDED_BYTES >> 20)
        } else {
            return Ok(());
        };
        let (message, hint) = if alias {
            (
                format!("this alias makes the document expand to {what}"),
                "aliases (`*name`) here repeat large parts of the file; write the values out or use fewer aliases",
            )
        } else {
            (
                format!("the document expands to {what}"),
                "a buildspec or appspec needs far less: split the file, or use fewer aliases (`*name`)",
            )
        };
        self.diags
            .error(Code::DocumentTooLarge, span, message, hint);
        Err(LoadAbort)
    }

    /// A sequence or mapping just closed: counted as one more node, then completed.
    fn complete_collection(
        &mut self,
        value: Value,
        span: Span,
        anchor: usize,
    ) -> Result<(), LoadAbort> {
        self.count(
            Size {
                nodes: 1,
                bytes: NODE_COST,
            },
            span,
            false,
        )?;
        self.complete(Node { value, span }, anchor)
    }

    /// Hands a finished node to its parent, or makes it a document.
    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), LoadAbort> {
        if anchor != 0 {
            let size = subtree_size(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }

    /// Reports duplicate keys (the later one would silently replace the earlier) and applies
    /// YAML merge keys (`<<: *defaults`).
    fn check_keys(&mut self, entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
        let mut kept: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(entries.len());
        let mut merges = Vec::new();
        for (key, value) in entries {
            let Some(name) = key.scalar() else {
                kept.push((key, value));
                continue;
            };
            if name == "<<" && key.style() == Some(Style::Plain) {
                merges.push(value);
                continue;
            }
            let name = name.trim();
            // A map of the names kept so far: a mapping of many keys stays linear.
            if let Some(first) = seen.get(name).map(|&i| &kept[i].0) {
                let line = self.source.position(first.span.start).line;
                self.diags.error(
                    Code::DuplicateKey,
                    key.span,
                    format!("`{name}` is defined twice in this mapping (first on line {line})"),
                    "YAML keeps only one of them: merge the two into one entry",
                );
                continue;
            }
            seen.insert(name.to_string(), kept.len());
            kept.push((key, value));
        }
        let mut complex = kept.iter().any(|(k, _)| k.scalar().is_none());
        for merge in merges {
            let sources = match merge.value {
                Value::Map(_) => vec![merge],
                Value::Seq(items) => items,
                Value::Scalar { .. } => {
                    self.diags.error(
                        Code::WrongType,
                        merge.span,
                        "a merge key (`<<`) must refer to a mapping",
                        "write `<<: *anchor` where `&anchor` marks a mapping",
                    );
                    continue;
                }
            };
            for source in sources {
                let Value::Map(extra) = source.value else {
                    continue;
                };
                for (key, value) in extra {
                    match key.scalar().map(str::trim) {
                        Some(name) if seen.contains_key(name) => {}
                        Some(name) => {
                            seen.insert(name.to_string(), kept.len());
                            kept.push((key, value));
                        }
                        None if complex => {}
                        None => {
                            complex = true;
                            kept.push((key, value));
                        }
                    }
                }
            }
        }
        kept
    }

    /// Block scalars are reported by the parser from their first content line; errors about a
    /// `- |` command read better pointing at the `|`.
    fn block_indicator_start(&self, content_start: usize) -> usize {
        let text = self.source.text();
        let before = text[..content_start].trim_end();
        let indicator_start = before
            .rfind(|c: char| c.is_whitespace())
            .map_or(0, |i| i + 1);
        let indicator = &before[indicator_start..];
        if indicator.starts_with('|') || indicator.starts_with('>') {
            indicator_start
        } else {
            content_start
        }
    }

    fn syntax_error(&mut self, error: &ScanError) {
        let marker = error.marker();
        let mut offset = self.source.offset_of(marker.line(), marker.col());
        let info = error.info();
        if info.contains("recursion limit") {
            let end = (offset + 1).min(self.source.text().len());
            self.diags.error(
                Code::DocumentTooLarge,
                Span::new(offset, offset.max(end)),
                "the document nests too deeply",
                "flatten the structure: no buildspec or appspec key needs this depth",
            );
            return;
        }
        let mut message = format!("invalid YAML: {info}");
        let mut hint = syntax_hint(info).to_string();
        let mut code = Code::YamlSyntax;
        if info.contains("mapping values are not allowed")
            && let Some(parent) = self.scalar_parent_line(marker.line())
        {
            let key = parent.split(':').next().unwrap_or(parent).trim();
            message = format!(
                "invalid YAML: this line is indented under `{}`, which already has a value",
                parent.trim()
            );
            hint = format!(
                "the indentation is wrong: start this key at the same column as `{key}:` (or quote the text if it belongs to `{key}`)"
            );
            code = Code::FlattenedDocument;
            let own = self.source.line_text(marker.line());
            let indent = own.chars().take_while(|c| c.is_whitespace()).count();
            offset = self.source.offset_of(marker.line(), indent);
        }
        // A tab in indentation confuses the parser into pointing elsewhere; find it.
        let last_line = (marker.line() + 1).min(self.source.line_count());
        if let Some(line) = (1..=last_line).find(|&l| {
            let text = self.source.line_text(l);
            let indent = &text[..text.len() - text.trim_start().len()];
            indent.contains('\t')
        }) {
            let text = self.source.line_text(line);
            let col = text.chars().position(|c| c == '\t').unwrap_or(0);
            offset = self.source.offset_of(line, col);
            message = "invalid YAML: a tab character is used for indentation".to_string();
            hint = "YAML indents with spaces only: replace the tab with spaces".to_string();
        }
        let end = (offset + 1).min(self.source.text().len());
        let end = if self.source.text().is_char_boundary(end) {
            end
        } else {
            offset
        };
        self.diags
            .error(code, Span::new(offset, end), message, hint);
    }

    /// For an indented line, the nearest less-indented line above it when that line is a
    /// `key: value` with the value on the same line: the indented line cannot belong to it.
    fn scalar_parent_line(&self, line: usize) -> Option<&str> {
        let indent = |text: &str| text.len() - text.trim_start().len();
        let own = self.source.line_text(line);
        let own_indent = indent(own);
        if own.trim().is_empty() || own_indent == 0 {
            return None;
        }
        let parent = (1..line)
            .rev()
            .map(|l| self.source.line_text(l))
            .filter(|t| !t.trim().is_empty() && !t.trim_start().starts_with('#'))
            .find(|t| indent(t) < own_indent)?;
        let (_, value) = parent.split_once(": ")?;
        let value = value.trim();
        let opens_block = value.is_empty() || value.starts_with(['|', '>', '&', '!', '#']);
        (!opens_block && !parent.trim_start().starts_with('-')).then_some(parent)
    }
}

fn collection_end(flow: bool, end_event: Span, child_ends: impl Iterator<Item = usize>) -> usize {
    if flow {
        end_event.end
    } else {
        child_ends.max().unwrap_or(end_event.start)
    }
}

fn text_len(node: &Node) -> usize {
    node.scalar().map_or(0, str::len)
}

/// The nodes and bytes of a subtree, as [`Loader::count`] counts them.
fn subtree_size(node: &Node) -> Size {
    let mut size = Size {
        nodes: 1,
        bytes: NODE_COST.saturating_add(text_len(node)),
    };
    let mut add = |child: &Node| {
        let s = subtree_size(child);
        size.nodes = size.nodes.saturating_add(s.nodes);
        size.bytes = size.bytes.saturating_add(s.bytes);
    };
    match &node.value {
        Value::Scalar { .. } => {}
        Value::Seq(items) => items.iter().for_each(&mut add),
        Value::Map(entries) => entries.iter().for_each(|(k, v)| {
            add(k);
            add(v);
        }),
    }
    size
}

fn syntax_hint(info: &str) -> &'static str {
    if info.contains("mapping values are not allowed") {
        "a value holds `: ` (colon and space): quote the whole value, e.g. `- \"echo key: value\"`"
    } else if info.contains("alias") || info.contains("anchor") {
        "a value starting with `*` or `&` is read as an alias or anchor: quote it, e.g. `- '**/*'`"
    } else if info.contains("quoted scalar") {
        "a quote is not closed: end the value with the same quote it starts with"
    } else if info.contains("tab") {
        "YAML indents with spaces only: replace the tab with spaces"
    } else if info.contains("block") || info.contains("indentation") {
        "check the indentation of this line against the lines above it"
    } else {
        "check indentation and quoting here: quote values containing `: `, ` #`, or starting with `*`, `&`, `!`, `%`, `@`, `{`, `[`"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Option<Node>, Vec<crate::diag::Diagnostic>) {
        let source = Source::new("t.yml", text);
        let mut diags = Diagnostics::new(&source);
        let node = load(&source, &mut diags);
        (node, diags.finish())
    }

    #[test]
    fn scalars_keep_their_text_and_spans() {
        let (node, diags) = parse("a: 012345678901\nb: 'x y'\n");
        assert!(diags.is_empty());
        let Some(Node {
            value: Value::Map(entries),
            ..
        }) = node
        else {
            panic!("expected a mapping");
        };
        assert_eq!(entries[0].1.scalar(), Some("012345678901"));
        assert_eq!(entries[0].1.span, Span::new(3, 15));
        assert_eq!(entries[1].1.scalar(), Some("x y"));
        assert_eq!(entries[1].1.style(), Some(Style::SingleQuoted));
    }

    #[test]
    fn aliases_and_merge_keys_expand() {
        let (node, diags) = parse("d: &d {x: 1, y: 2}\ne:\n  <<: *d\n  y: 3\n");
        assert!(diags.is_empty(), "{diags:?}");
        let Some(Node {
            value: Value::Map(entries),
            ..
        }) = node
        else {
            panic!("expected a mapping");
        };
        let Value::Map(e) = &entries[1].1.value else {
            panic!("expected a mapping");
        };
        let pairs: Vec<_> = e
            .iter()
            .map(|(k, v)| (k.scalar().unwrap_or(""), v.scalar().unwrap_or("")))
            .collect();
        assert_eq!(pairs, vec![("y", "3"), ("x", "1")]);
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (node, diags) = parse(&text);
        assert!(node.is_none());
        assert_eq!(diags[0].code, Code::DocumentTooLarge);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("a: {}{}", "[".repeat(500), "]".repeat(500));
        let (node, diags) = parse(&text);
        assert!(node.is_none());
        assert_eq!(diags[0].code, Code::DocumentTooLarge);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let (_, diags) = parse("a: 1\nb: 2\na: 3\n");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, Code::DuplicateKey);
        assert_eq!((diags[0].start.line, diags[0].start.column), (3, 1));
    }

    #[test]
    fn tabs_in_indentation_are_pointed_at() {
        let (node, diags) = parse("version: 0.2\n\tphases:\n");
        assert!(node.is_none());
        assert_eq!((diags[0].start.line, diags[0].start.column), (2, 1));
        assert!(diags[0].message.contains("tab"));
    }

    #[test]
    fn block_scalars_span_from_their_indicator() {
        let (node, _) = parse("c:\n  - |\n    a\n    b\n");
        let Some(Node {
            value: Value::Map(entries),
            ..
        }) = node
        else {
            panic!("expected a mapping");
        };
        let Value::Seq(items) = &entries[0].1.value else {
            panic!("expected a list");
        };
        assert_eq!(items[0].span.start, 7);
    }
}
