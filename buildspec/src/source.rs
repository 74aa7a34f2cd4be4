//! Source text and the mapping between byte offsets and `line:column` positions.

use serde::Serialize;

/// A byte range into a [`Source`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span {
            start,
            end: end.max(start),
        }
    }

    /// A span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A 1-based line and 1-based column counted in characters, as editors show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// A named text with a line index.
#[derive(Debug, Clone)]
pub struct Source {
    name: String,
    text: String,
    line_starts: Vec<usize>,
    /// `checkpoints[k]`: how many characters start in the first `k * CHECKPOINT` bytes.
    checkpoints: Vec<usize>,
}

impl Source {
    /// `name` is what diagnostics print (usually the path). A leading byte-order mark is
    /// dropped so that columns match what an editor shows.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let mut text: String = text.into();
        if text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let checkpoints = std::iter::once(0)
            .chain(text.as_bytes().chunks(CHECKPOINT).scan(0, |total, chunk| {
                *total += char_starts(chunk);
                Some(*total)
            }))
            .collect();
        Source {
            name: name.into(),
            text,
            line_starts,
            checkpoints,
        }
    }

    /// How many characters start before byte `offset`: a checkpoint every
    /// [`CHECKPOINT`] bytes and a count of at most that many, so that positions on a long
    /// line (a flow sequence of many items) do not each walk the line.
    fn chars_before(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        let block = offset / CHECKPOINT;
        let counted = self.checkpoints.get(block).copied().unwrap_or(0);
        counted + char_starts(&self.text.as_bytes()[block * CHECKPOINT..offset])
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text of 1-based line `line`, without its line break.
    pub fn line_text(&self, line: usize) -> &str {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return "";
        };
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |&next| next - 1);
        self.text[start..end].trim_end_matches('\r')
    }

    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// The byte offset of a 1-based line and 0-based character column, clamped to the text.
    pub fn offset_of(&self, line: usize, char_col: usize) -> usize {
        self.offset_from(line, char_col, &mut Cursor::default())
    }

    /// [`Source::offset_of`], walking on from `cursor` (a position found before) when it is
    /// on the same line and not past the column, and leaving `cursor` at the result: so
    /// positions met in order along a long line (a flow sequence of a million items) cost
    /// their distance, not the whole line each.
    pub fn offset_from(&self, line: usize, char_col: usize, cursor: &mut Cursor) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |next| next.saturating_sub(1));
        let (mut at, mut col) =
            if cursor.line == line && cursor.col <= char_col && cursor.byte >= start {
                (cursor.byte, cursor.col)
            } else {
                (start, 0)
            };
        let rest = self.text.get(at..end).unwrap_or("");
        let within = rest
            .char_indices()
            .nth(char_col - col)
            .map_or(rest.len(), |(i, _)| i);
        at += within;
        col = char_col;
        *cursor = Cursor {
            line,
            col,
            byte: at,
        };
        at
    }

    /// The position of a byte offset; offsets inside a character count as that character.
    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line_index = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line_index];
        let column = self.chars_before(offset) - self.chars_before(start) + 1;
        Position {
            line: line_index + 1,
            column,
        }
    }

    pub fn slice(&self, span: Span) -> &str {
        let end = span.end.min(self.text.len());
        let start = span.start.min(end);
        if self.text.is_char_boundary(start) && self.text.is_char_boundary(end) {
            &self.text[start..end]
        } else {
            ""
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_not_bytes() {
        let src = Source::new("f", "a: é\nbc: d\n");
        assert_eq!(src.position(0), Position { line: 1, column: 1 });
        assert_eq!(src.position(6), Position { line: 2, column: 1 });
        assert_eq!(src.position(10), Position { line: 2, column: 5 });
        assert_eq!(src.offset_of(1, 3), 3);
        assert_eq!(src.offset_of(1, 4), 5);
        assert_eq!(src.offset_of(2, 4), 10);
        assert_eq!(src.offset_of(9, 0), src.text().len());
        assert_eq!(src.line_text(2), "bc: d");
        assert_eq!(src.line_text(3), "");
    }

    #[test]
    fn byte_order_mark_is_dropped() {
        let src = Source::new("f", "\u{feff}version: 0.2");
        assert_eq!(src.text(), "version: 0.2");
    }

    #[test]
    fn crlf_lines_have_no_carriage_return() {
        let src = Source::new("f", "a: b\r\nc: d\r\n");
        assert_eq!(src.line_text(1), "a: b");
        assert_eq!(src.position(6), Position { line: 2, column: 1 });
    }
}

/// A position [`Source::offset_from`] found: its line, character column and byte offset.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor {
    line: usize,
    col: usize,
    byte: usize,
}

/// The distance between two of [`Source`]'s character checkpoints.
const CHECKPOINT: usize = 1024;

/// How many characters start in `bytes` (every byte but UTF-8 continuation bytes).
fn char_starts(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| (**b & 0xC0) != 0x80).count()
}
