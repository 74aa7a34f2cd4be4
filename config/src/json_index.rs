//! Where each value of a JSON document starts, by its path of keys and indexes.
//!
//! serde_json reports positions for syntax and type errors only; the checks after parsing
//! look positions up here. It also finds keys written twice in one object, which serde_json
//! takes silently for maps (the last one wins) while other parsers keep the first: a message
//! that means one thing to a gateway and another to the agent is refused.

use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Spot {
    /// The opening quote of the key, for values inside objects.
    pub key: Option<usize>,
    /// The first byte of the value.
    pub value: usize,
    /// Just past the value's last byte.
    pub end: usize,
}

#[derive(Debug, Default)]
pub(crate) struct JsonIndex {
    spots: HashMap<Vec<String>, Spot>,
    /// Keys written twice: the path of the second one and where its key starts.
    pub duplicates: Vec<(Vec<String>, usize)>,
}

impl JsonIndex {
    /// Indexes a document that serde_json has already accepted; on anything unexpected it
    /// stops and keeps what it found, so positions fall back to an enclosing value.
    pub(crate) fn build(text: &str) -> JsonIndex {
        let mut scan = Scan {
            text,
            bytes: text.as_bytes(),
            at: 0,
            index: JsonIndex::default(),
        };
        let mut path = Vec::new();
        let _ = scan.value(&mut path, None);
        scan.index
    }

    fn nearest(&self, path: &[&str]) -> Option<Spot> {
        (0..=path.len()).rev().find_map(|n| {
            let key: Vec<String> = path[..n].iter().map(|s| s.to_string()).collect();
            self.spots.get(&key).copied()
        })
    }

    /// Where the value at `path` starts, or the nearest enclosing value that exists.
    pub(crate) fn value(&self, path: &[&str]) -> usize {
        self.nearest(path).map_or(0, |s| s.value)
    }

    /// Where the key of the value at `path` starts (else as [`JsonIndex::value`]).
    pub(crate) fn key(&self, path: &[&str]) -> usize {
        self.nearest(path).map_or(0, |s| s.key.unwrap_or(s.value))
    }

    /// The start of the innermost value around `offset`: serde_json reports type errors
    /// at a value's last byte, which reads worse than its first.
    pub(crate) fn value_around(&self, offset: usize) -> Option<usize> {
        self.spots
            .values()
            .filter(|s| s.value <= offset && offset < s.end)
            .map(|s| s.value)
            .max()
    }

    /// The start of the last key at or before `offset`: serde_json reports an unknown key
    /// at its closing quote.
    pub(crate) fn key_before(&self, offset: usize) -> Option<usize> {
        self.spots
            .values()
            .filter_map(|s| s.key)
            .filter(|&k| k <= offset)
            .max()
    }
}

struct Scan<'t> {
    text: &'t str,
    bytes: &'t [u8],
    at: usize,
    index: JsonIndex,
}

impl Scan<'_> {
    fn skip_ws(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_ws();
        (self.bytes.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes.get(self.at).copied()
    }

    /// Skips a string, returning its decoded text.
    fn string(&mut self) -> Option<String> {
        let start = self.at;
        self.at += 1;
        loop {
            match self.bytes.get(self.at)? {
                b'\\' => self.at += 2,
                b'"' => {
                    self.at += 1;
                    break;
                }
                _ => self.at += 1,
            }
        }
        serde_json::from_str(self.text.get(start..self.at)?).ok()
    }

    fn value(&mut self, path: &mut Vec<String>, key: Option<usize>) -> Option<()> {
        let first = self.peek()?;
        let value = self.at;
        let result = self.value_body(first, path);
        let end = self.at;
        self.index
            .spots
            .entry(path.clone())
            .or_insert(Spot { key, value, end });
        result
    }

    fn value_body(&mut self, first: u8, path: &mut Vec<String>) -> Option<()> {
        match first {
            b'{' => {
                self.at += 1;
                let mut seen = HashSet::new();
                if self.peek()? == b'}' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    if self.peek()? != b'"' {
                        return None;
                    }
                    let key_at = self.at;
                    let name = self.string()?;
                    self.eat(b':')?;
                    path.push(name.clone());
                    if !seen.insert(name) {
                        self.index.duplicates.push((path.clone(), key_at));
                    }
                    self.value(path, Some(key_at))?;
                    path.pop();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b'}' => {
                            self.at += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.at += 1;
                if self.peek()? == b']' {
                    self.at += 1;
                    return Some(());
                }
                let mut i = 0usize;
                loop {
                    path.push(i.to_string());
                    self.value(path, None)?;
                    path.pop();
                    i += 1;
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                while self.bytes.get(self.at).is_some_and(|b| {
                    !matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    self.at += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_keys_and_duplicates() {
        let text =
            "{\n  \"a\": {\"b\": [1, {\"c\": \"x\\\"y\"}]},\n  \"d\\u0041\": true, \"dA\": 2\n}";
        let index = JsonIndex::build(text);
        assert_eq!(&text[index.value(&["a", "b", "1", "c"])..][..2], "\"x");
        assert_eq!(&text[index.key(&["a", "b"])..][..3], "\"b\"");
        assert_eq!(&text[index.value(&["a", "b", "0"])..][..1], "1");
        assert_eq!(&text[index.value(&["dA"])..][..4], "true");
        // Missing paths fall back to the nearest value that exists.
        assert_eq!(index.value(&["a", "zz"]), index.value(&["a"]));
        assert_eq!(index.duplicates.len(), 1);
        assert_eq!(index.duplicates[0].0, vec!["dA".to_string()]);
    }
}
