//! Streaming secret masking: every registered value, and the encodings a build is likely to
//! print it in, becomes `***`, even when a value arrives split across several writes.

use aho_corasick::{AhoCorasick, MatchKind};

/// What a masked value is replaced with, as CodeBuild prints it.
pub const MASK: &[u8] = b"***";

/// Masks a byte stream. Holds back at most the longest pattern's length minus one byte,
/// so memory stays bounded whatever the input.
pub struct Masker {
    matcher: Option<AhoCorasick>,
    longest: usize,
    pending: Vec<u8>,
}

impl Masker {
    /// A masker for `secrets`; empty and all-whitespace values are ignored.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Self {
        let mut patterns: Vec<Vec<u8>> = secrets
            .iter()
            .map(AsRef::as_ref)
            .filter(|s| !s.iter().all(u8::is_ascii_whitespace))
            .flat_map(variants)
            .filter(|p| !p.is_empty())
            .collect();
        patterns.sort();
        patterns.dedup();
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let matcher = if patterns.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()
        };
        Masker {
            matcher,
            longest,
            pending: Vec::new(),
        }
    }

    /// This masker with more values to mask; output held back so far is kept.
    pub fn extended<S: AsRef<[u8]>>(&mut self, secrets: &[S]) -> Masker {
        let mut next = Masker::new(secrets);
        next.pending = std::mem::take(&mut self.pending);
        next
    }

    /// Masks `input`, appending what is safe to show to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(matcher) = &self.matcher else {
            out.extend_from_slice(input);
            return;
        };
        self.pending.extend_from_slice(input);
        let buf = &self.pending;
        // A match starting before `safe_end` has all the bytes its longest form could need.
        let safe_end = buf.len().saturating_sub(self.longest - 1);
        let mut cursor = 0;
        for m in matcher.find_iter(buf.as_slice()) {
            if m.start() >= safe_end {
                break;
            }
            out.extend_from_slice(&buf[cursor..m.start()]);
            out.extend_from_slice(MASK);
            cursor = m.end();
        }
        let emit_to = safe_end.max(cursor);
        out.extend_from_slice(&buf[cursor..emit_to]);
        self.pending.drain(..emit_to);
    }

    /// Masks and releases everything held back; call at the end of the stream.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        let pending = std::mem::take(&mut self.pending);
        if let Some(matcher) = &self.matcher {
            let mut cursor = 0;
            for m in matcher.find_iter(pending.as_slice()) {
                out.extend_from_slice(&pending[cursor..m.start()]);
                out.extend_from_slice(MASK);
                cursor = m.end();
            }
            out.extend_from_slice(&pending[cursor..]);
        } else {
            out.extend_from_slice(&pending);
        }
    }

    /// Masks a whole text at once.
    pub fn mask_str(&self, text: &str) -> String {
        let Some(matcher) = &self.matcher else {
            return text.to_string();
        };
        let masked =
            matcher.replace_all_bytes(text.as_bytes(), &vec![MASK; matcher.patterns_len()]);
        String::from_utf8_lossy(&masked).into_owned()
    }
}

/// The value itself and the forms it takes when a build encodes it: JSON-escaped,
/// URL-encoded, and base64 at each of the three alignments it can have inside a longer
/// base64 text.
fn variants(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![secret.to_vec()];
    if let Ok(text) = std::str::from_utf8(secret) {
        let json = serde_json::to_string(text).unwrap_or_default();
        out.push(json.trim_matches('"').as_bytes().to_vec());
        out.push(url_encode(secret));
    }
    for offset in 0..3 {
        out.extend(base64_core(secret, offset));
    }
    out
}

fn url_encode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The base64 characters that depend only on `secret` when it sits `offset` bytes into a
/// 3-byte group: the characters shared with neighbouring bytes are dropped, so the
/// pattern matches wherever the value appears inside a longer encoded text.
fn base64_core(secret: &[u8], offset: usize) -> Option<Vec<u8>> {
    // Too short a value leaves too few stable characters to mask without false hits.
    if secret.len() < 3 + offset {
        return None;
    }
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(secret);
    let mut chars = Vec::with_capacity(padded.len() * 4 / 3 + 4);
    for chunk in padded.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let count = chunk.len() + 1;
        for i in 0..count {
            chars.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    // Characters touched by the padding at the start, or by the unknown byte after the
    // end, vary with the surrounding text.
    let skip_start = match offset {
        0 => 0,
        1 => 2,
        _ => 3,
    };
    let total_bits = padded.len() * 8;
    let stable_end = total_bits / 6;
    (stable_end > skip_start + 1).then(|| chars[skip_start..stable_end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_in_pieces(masker: &mut Masker, pieces: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for piece in pieces {
            masker.push(piece, &mut out);
        }
        masker.flush(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_and_split_values() {
        let mut m = Masker::new(&["hunter2secret"]);
        assert_eq!(mask_in_pieces(&mut m, &[b"pw=hunter2secret\n"]), "pw=***\n");
        let mut m = Masker::new(&["hunter2secret"]);
        assert_eq!(
            mask_in_pieces(&mut m, &[b"pw=hun", b"ter2", b"sec", b"ret!"]),
            "pw=***!"
        );
        let mut m = Masker::new(&["hunter2secret"]);
        let bytes = b"a hunter2secret b hunter2secret";
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(mask_in_pieces(&mut m, &pieces), "a *** b ***");
    }

    #[test]
    fn prefers_the_longest_value() {
        let mut m = Masker::new(&["abc", "abcdef"]);
        assert_eq!(
            mask_in_pieces(&mut m, &[b"xabc", b"defx abcx"]),
            "x***x ***x"
        );
    }

    #[test]
    fn masks_encoded_forms() {
        let secret = "p@ss w/rd\"42";
        let m = Masker::new(&[secret]);
        assert_eq!(m.mask_str("json: \"p@ss w/rd\\\"42\""), "json: \"***\"");
        assert_eq!(m.mask_str("url: p%40ss%20w%2Frd%2242"), "url: ***");
        for prefix in ["", "a", "ab", "abc"] {
            let encoded = base64(format!("{prefix}{secret}tail").as_bytes());
            let masked = m.mask_str(&encoded);
            assert!(masked.contains("***"), "{prefix:?}: {encoded} -> {masked}");
            assert!(
                !masked.contains(&base64(secret.as_bytes())[1..8]),
                "{masked}"
            );
        }
    }

    #[test]
    fn without_secrets_passes_bytes_through() {
        let mut m = Masker::new::<&str>(&[]);
        let mut out = Vec::new();
        m.push(b"x", &mut out);
        m.push(b"\xff\n", &mut out);
        m.flush(&mut out);
        assert_eq!(out, b"x\xff\n");
        let mut m = Masker::new(&["  ", ""]);
        assert_eq!(mask_in_pieces(&mut m, &[b"  x  "]), "  x  ");
    }

    fn base64(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
