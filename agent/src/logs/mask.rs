//! Streaming secret masking: every registered value, and the encodings a build is likely to
//! print it in, becomes `***`, even when a value arrives split across several writes or an
//! encoded form is wrapped over several lines.
//!
//! # What is masked
//!
//! For a value of 4 bytes or more (line breaks not counted):
//!
//! * the value itself;
//! * JSON string forms: plain (`serde_json`, `JSON.stringify`, `json.dumps(ensure_ascii=False)`),
//!   `ensure_ascii` (non-ASCII as `\u00e4`, astral characters as surrogate pairs) with lower-
//!   and upper-case hex, Go's HTML-safe form (`\u003c`), each also with `/` written `\/`;
//! * URL forms: RFC 3986 unreserved (`quote(safe='')`), Python `quote()` (keeps `/`),
//!   `quote_plus()`, `encodeURIComponent`, `encodeURI`, `application/x-www-form-urlencoded`,
//!   each with upper- and lower-case hex escapes;
//! * base64, standard and URL-safe alphabets, of the value at any byte offset inside a longer
//!   encoded text (the characters that depend only on the value), wrapped at any width with
//!   `\n` or `\r\n` line ends: patterns are matched on the stream with `\r` and `\n` skipped,
//!   and a match that spans lines masks its part of every line, keeping the line breaks.
//!
//! A value with line breaks (a PEM key) is masked whole, with `\n` or `\r\n` line ends, and
//! each of its lines of 4 bytes or more is masked on its own, with that line's encodings.
//!
//! # Short values
//!
//! * empty or all-whitespace values, and 1-byte values: not masked (a 1-byte secret would
//!   turn every occurrence of a common character into `***` and make the log unreadable);
//! * 2- and 3-byte values: masked as the raw value only, no encoded forms;
//! * a base64 form is used only when at least 4 of its characters depend on the value alone.
//!
//! # Streaming
//!
//! [`Masker::push`] releases everything except the longest suffix of the stream that could
//! still grow into a match (at most the longest pattern, plus the line breaks inside it), so
//! memory stays bounded. More than [`MAX_BREAK`] line-break bytes in a row end any match in
//! progress, which keeps a stream of blank lines from being held back.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, MatchKind};

/// What a masked value is replaced with, as CodeBuild prints it.
pub const MASK: &[u8] = b"***";

/// A value shorter than this (line breaks not counted) is masked as itself only.
pub const MIN_ENCODED: usize = 4;

/// A value shorter than this is not masked at all.
pub const MIN_MASKED: usize = 2;

/// How many line-break bytes in a row a match may span.
pub const MAX_BREAK: usize = 16;

/// Up to this many bytes of patterns the automaton is a DFA (fastest, about 0.5 KiB a
/// pattern byte); above, a compact NFA.
const DFA_LIMIT: usize = 8 * 1024;

/// A map keyed by state: state IDs are small integers, hashed with one multiplication
/// (the default hasher made building for long values several times slower).
type StateMap<V> = HashMap<StateID, V, BuildHasherDefault<StateHasher>>;

#[derive(Default)]
struct StateHasher(u64);

impl Hasher for StateHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

fn is_break(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

enum Engine {
    Dfa(DFA),
    Nfa(NFA),
}

/// The compiled patterns, shared by a masker and the maskers `mask_str` makes.
struct Patterns {
    engine: Engine,
    start: StateID,
    /// For each state, how many of the last bytes (line breaks not counted) may still
    /// become part of a match.
    hold: StateMap<usize>,
    /// The bytes that leave the automaton in its start state (line breaks excepted).
    stays: [bool; 256],
    longest: usize,
}

/// Masks a byte stream; see the module documentation for what it masks.
pub struct Masker {
    patterns: Option<Arc<Patterns>>,
    scan: Scan,
}

/// Where a masker is in its stream.
struct Scan {
    state: StateID,
    /// Bytes seen so far, line breaks not counted.
    seen: u64,
    /// Line-break bytes in a row at the end of the stream.
    breaks: usize,
    /// Bytes held back: they may still be the start of a match.
    pending: Vec<u8>,
    /// How many of `pending` are not line breaks.
    pending_chars: usize,
    /// Ranges (in `seen` positions) to mask, sorted, disjoint.
    covers: VecDeque<(u64, u64)>,
    /// The last byte released was masked: a masked byte next continues the same `***`.
    in_mask: bool,
}

impl Scan {
    fn new(start: StateID) -> Self {
        Scan {
            state: start,
            seen: 0,
            breaks: 0,
            pending: Vec::new(),
            pending_chars: 0,
            covers: VecDeque::new(),
            in_mask: false,
        }
    }
}

impl Masker {
    /// A masker for `secrets`; see the module documentation for the values it ignores.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Self {
        let mut patterns: Vec<Vec<u8>> = secrets
            .iter()
            .flat_map(|s| variants(s.as_ref()))
            .map(|p| p.into_iter().filter(|&b| !is_break(b)).collect::<Vec<u8>>())
            .filter(|p| p.len() >= MIN_MASKED)
            .collect();
        patterns.sort();
        patterns.dedup();
        let patterns = Patterns::build(&patterns).map(Arc::new);
        let start = patterns
            .as_ref()
            .map_or(StateID::ZERO, |p: &Arc<Patterns>| p.start);
        Masker {
            patterns,
            scan: Scan::new(start),
        }
    }

    /// A masker for `secrets` (all of them, old and new) that takes over this one's stream:
    /// output held back so far is kept and scanned again for the new values.
    pub fn extended<S: AsRef<[u8]>>(&mut self, secrets: &[S]) -> Masker {
        self.continued_with(&Masker::new(secrets))
    }

    /// A masker for the values `template` masks that takes over this one's stream, as
    /// [`Masker::extended`] does (one set of patterns can serve several streams).
    pub fn continued_with(&mut self, template: &Masker) -> Masker {
        let mut next = template.fresh();
        let pending = std::mem::take(&mut self.scan.pending);
        next.scan.in_mask = self.scan.in_mask;
        if let Some(patterns) = next.patterns.clone() {
            patterns.scan(&mut next.scan, &pending);
        } else {
            next.scan.pending = pending;
        }
        next
    }

    /// Masks `input`, appending what is safe to show to `out`: everything except the
    /// longest suffix that could still become (part of) a match.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match &self.patterns {
            None => out.extend_from_slice(input),
            Some(patterns) => {
                patterns.scan(&mut self.scan, input);
                let hold = patterns.hold_of(self.scan.state);
                release(&mut self.scan, hold, out);
            }
        }
    }

    /// For live output when the stream went quiet: releases every held-back byte that
    /// cannot be the start of a match. [`Masker::push`] already releases that much, so this
    /// only matters after [`Masker::extended`]; calling it is always safe.
    pub fn release_idle(&mut self, out: &mut Vec<u8>) {
        match &self.patterns {
            None => out.append(&mut self.scan.pending),
            Some(patterns) => {
                let hold = patterns.hold_of(self.scan.state);
                release(&mut self.scan, hold, out);
            }
        }
    }

    /// How many bytes are held back now.
    pub fn held_back(&self) -> usize {
        self.scan.pending.len()
    }

    /// Masks and releases everything held back; call at the end of the stream. The masker
    /// can go on with a new stream afterwards.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        release(&mut self.scan, 0, out);
        if let Some(patterns) = &self.patterns {
            self.scan.state = patterns.start;
        }
        self.scan.breaks = 0;
        self.scan.in_mask = false;
        self.scan.covers.clear();
    }

    /// A masker for the same values, at the start of a new stream.
    pub fn fresh(&self) -> Masker {
        let start = self.patterns.as_ref().map_or(StateID::ZERO, |p| p.start);
        Masker {
            patterns: self.patterns.clone(),
            scan: Scan::new(start),
        }
    }

    /// Masks a whole text at once.
    pub fn mask_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.mask_bytes(text.as_bytes())).into_owned()
    }

    /// Masks a whole byte string at once.
    pub fn mask_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut masker = self.fresh();
        let mut out = Vec::with_capacity(bytes.len());
        masker.push(bytes, &mut out);
        masker.flush(&mut out);
        out
    }
}

impl Patterns {
    fn build(patterns: &[Vec<u8>]) -> Option<Patterns> {
        if patterns.is_empty() {
            return None;
        }
        let total: usize = patterns.iter().map(Vec::len).sum();
        let nfa = || {
            NFA::builder()
                .match_kind(MatchKind::Standard)
                .build(patterns)
                .map(Engine::Nfa)
        };
        let engine = if total <= DFA_LIMIT {
            DFA::builder()
                .match_kind(MatchKind::Standard)
                .build(patterns)
                .map(Engine::Dfa)
                .or_else(|_| nfa())
        } else {
            nfa()
        };
        // Only a pattern set beyond the automaton's size limits (gigabytes) fails to build.
        let engine = engine.ok()?;
        let mut alphabet = [false; 256];
        for p in patterns {
            for &b in p {
                alphabet[usize::from(b)] = true;
            }
        }
        let alphabet: Vec<u8> = (0..=255u8).filter(|&b| alphabet[usize::from(b)]).collect();
        let (start, hold) = match &engine {
            Engine::Dfa(a) => holds(a, &alphabet)?,
            Engine::Nfa(a) => holds(a, &alphabet)?,
        };
        let mut stays = [false; 256];
        for b in 0..=255u8 {
            stays[usize::from(b)] = !is_break(b)
                && match &engine {
                    Engine::Dfa(a) => a.next_state(Anchored::No, start, b) == start,
                    Engine::Nfa(a) => a.next_state(Anchored::No, start, b) == start,
                };
        }
        Some(Patterns {
            engine,
            start,
            hold,
            stays,
            longest: patterns.iter().map(Vec::len).max().unwrap_or(0),
        })
    }

    fn scan(&self, scan: &mut Scan, input: &[u8]) {
        match &self.engine {
            Engine::Dfa(a) => scan_with(a, self, scan, input),
            Engine::Nfa(a) => scan_with(a, self, scan, input),
        }
    }

    fn hold_of(&self, state: StateID) -> usize {
        self.hold.get(&state).copied().unwrap_or(self.longest)
    }
}

/// The start state and, for every state, how many of the last bytes can still grow into a
/// match: the longest suffix of the state's string that is a proper prefix of a pattern.
///
/// A breadth-first walk from the start reaches each state first along its own string, so
/// it learns every state's depth (its string's length) in order. The longest suffix of a
/// state's string that `b` extends into a pattern prefix is one byte shorter than the depth
/// of the state `b` leads to; the longest over every byte is the state's hold.
fn holds<A: Automaton>(a: &A, alphabet: &[u8]) -> Option<(StateID, StateMap<usize>)> {
    let start = a.start_state(Anchored::No).ok()?;
    let mut depth = StateMap::default();
    let mut hold = StateMap::default();
    depth.insert(start, 0usize);
    let mut queue = VecDeque::from([(start, 0usize)]);
    while let Some((state, d)) = queue.pop_front() {
        let mut longest = 0;
        for &b in alphabet {
            let next = a.next_state(Anchored::No, state, b);
            let next_depth = *depth.entry(next).or_insert_with(|| {
                queue.push_back((next, d + 1));
                d + 1
            });
            longest = longest.max(next_depth.saturating_sub(1));
        }
        hold.insert(state, longest);
    }
    Some((start, hold))
}

/// Runs `input` through the automaton, skipping line breaks, and records what to mask.
fn scan_with<A: Automaton>(a: &A, patterns: &Patterns, scan: &mut Scan, input: &[u8]) {
    let start = patterns.start;
    let stays = &patterns.stays;
    let mut state = scan.state;
    let mut seen = scan.seen;
    let mut breaks = scan.breaks;
    let mut i = 0;
    while i < input.len() {
        if state == start {
            // Most text never leaves the start state: skip it without the automaton.
            let skip = input[i..]
                .iter()
                .position(|&b| !stays[usize::from(b)])
                .unwrap_or(input.len() - i);
            if skip > 0 {
                seen += skip as u64;
                breaks = 0;
                i += skip;
                continue;
            }
        }
        let b = input[i];
        i += 1;
        if is_break(b) {
            breaks += 1;
            if breaks > MAX_BREAK {
                state = start;
            }
            continue;
        }
        breaks = 0;
        state = a.next_state(Anchored::No, state, b);
        seen += 1;
        if a.is_special(state) && a.is_match(state) {
            let len = (0..a.match_len(state))
                .map(|i| a.pattern_len(a.match_pattern(state, i)))
                .max()
                .unwrap_or(0) as u64;
            cover(&mut scan.covers, seen - len, seen);
        }
    }
    scan.pending_chars += usize::try_from(seen - scan.seen).unwrap_or(usize::MAX);
    scan.pending.extend_from_slice(input);
    scan.state = state;
    scan.seen = seen;
    scan.breaks = breaks;
}

/// Adds `[from, to)` to the ranges to mask; `to` is at or after every range's end.
fn cover(covers: &mut VecDeque<(u64, u64)>, mut from: u64, to: u64) {
    while let Some(&(start, end)) = covers.back() {
        if end < from {
            break;
        }
        from = from.min(start);
        covers.pop_back();
    }
    covers.push_back((from, to));
}

/// Releases the held-back bytes except the last `keep` characters (and the line breaks
/// among them), masking what is covered.
fn release(scan: &mut Scan, keep: usize, out: &mut Vec<u8>) {
    let keep = keep.min(scan.pending_chars);
    let drop = scan.pending_chars - keep;
    // Where the kept part starts: its first character, or the end if nothing is kept.
    let cut = if keep == 0 {
        scan.pending.len()
    } else {
        let mut chars = 0;
        let mut cut = scan.pending.len();
        for (i, &b) in scan.pending.iter().enumerate() {
            if !is_break(b) {
                if chars == drop {
                    cut = i;
                    break;
                }
                chars += 1;
            }
        }
        cut
    };
    if cut == 0 {
        return;
    }
    let base = scan.seen - scan.pending_chars as u64;
    let end = base + drop as u64;
    let released = &scan.pending[..cut];
    if scan.covers.front().is_none_or(|&(from, _)| from >= end) {
        out.extend_from_slice(released);
        scan.in_mask = false;
    } else {
        let mut at = base;
        for &b in released {
            if is_break(b) {
                out.push(b);
                scan.in_mask = false;
                continue;
            }
            while scan.covers.front().is_some_and(|&(_, to)| to <= at) {
                scan.covers.pop_front();
            }
            if scan.covers.front().is_some_and(|&(from, _)| from <= at) {
                if !scan.in_mask {
                    out.extend_from_slice(MASK);
                    scan.in_mask = true;
                }
            } else {
                out.push(b);
                scan.in_mask = false;
            }
            at += 1;
        }
    }
    while scan.covers.front().is_some_and(|&(_, to)| to <= end) {
        scan.covers.pop_front();
    }
    scan.pending.drain(..cut);
    scan.pending_chars = keep;
}

/// Every form of `secret` to mask, before line breaks are taken out.
fn variants(secret: &[u8]) -> Vec<Vec<u8>> {
    let chars = secret.iter().filter(|&&b| !is_break(b)).count();
    if secret.iter().all(u8::is_ascii_whitespace) || chars < MIN_MASKED {
        return Vec::new();
    }
    if chars < MIN_ENCODED {
        return vec![secret.to_vec()];
    }
    let mut out = Vec::new();
    encoded_forms(secret, &mut out);
    let trimmed = secret.trim_ascii();
    if trimmed != secret && trimmed.len() >= MIN_ENCODED {
        encoded_forms(trimmed, &mut out);
    }
    if secret.contains(&b'\n') {
        for line in secret.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= MIN_ENCODED && line != secret {
                encoded_forms(line, &mut out);
            }
        }
    }
    out
}

/// `value` itself, JSON-escaped, URL-encoded and base64-encoded.
fn encoded_forms(value: &[u8], out: &mut Vec<Vec<u8>>) {
    out.push(value.to_vec());
    if let Ok(text) = std::str::from_utf8(value) {
        for style in JSON_STYLES {
            out.push(json_escape(text, style, false));
            out.push(json_escape(text, style, true));
        }
    }
    for style in URL_STYLES {
        out.push(url_encode(value, style, true));
        out.push(url_encode(value, style, false));
    }
    for alphabet in [BASE64, BASE64_URL] {
        for offset in 0..3 {
            out.extend(base64_core(value, offset, alphabet));
        }
    }
}

#[derive(Clone, Copy)]
struct JsonStyle {
    /// Non-ASCII characters as `\uXXXX` (UTF-16 units).
    ascii: bool,
    upper: bool,
    /// `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX`, as Go writes them.
    html: bool,
}

const JSON_STYLES: [JsonStyle; 5] = [
    JsonStyle {
        ascii: false,
        upper: false,
        html: false,
    },
    JsonStyle {
        ascii: false,
        upper: true,
        html: false,
    },
    JsonStyle {
        ascii: true,
        upper: false,
        html: false,
    },
    JsonStyle {
        ascii: true,
        upper: true,
        html: false,
    },
    JsonStyle {
        ascii: false,
        upper: false,
        html: true,
    },
];

/// `text` inside a JSON string, without the quotes; `slash` writes `/` as `\/`.
fn json_escape(text: &str, style: JsonStyle, slash: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    let unit = |out: &mut Vec<u8>, u: u16| {
        out.extend_from_slice(b"\\u");
        push_hex(out, (u >> 8) as u8, style.upper);
        push_hex(out, (u & 0xff) as u8, style.upper);
    };
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '/' if slash => out.extend_from_slice(b"\\/"),
            c if (c as u32) < 0x20 || (c == '\u{7f}' && style.ascii) => unit(&mut out, c as u16),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style.html => {
                unit(&mut out, c as u32 as u16);
            }
            c if style.ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for &u in c.encode_utf16(&mut units).iter() {
                    unit(&mut out, u);
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

fn push_hex(out: &mut Vec<u8>, byte: u8, upper: bool) {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    out.push(digits[usize::from(byte >> 4)]);
    out.push(digits[usize::from(byte & 15)]);
}

#[derive(Clone, Copy)]
struct UrlStyle {
    /// Bytes kept as they are besides ASCII letters and digits.
    safe: &'static [u8],
    /// Space as `+`.
    plus: bool,
}

const URL_STYLES: [UrlStyle; 6] = [
    // RFC 3986 unreserved; Python `quote(s, safe='')`.
    UrlStyle {
        safe: b"-_.~",
        plus: false,
    },
    // Python `quote(s)`.
    UrlStyle {
        safe: b"-_.~/",
        plus: false,
    },
    // Python `quote_plus(s)`.
    UrlStyle {
        safe: b"-_.~",
        plus: true,
    },
    // JavaScript `encodeURIComponent`.
    UrlStyle {
        safe: b"-_.!~*'()",
        plus: false,
    },
    // JavaScript `encodeURI`.
    UrlStyle {
        safe: b"-_.!~*'();,/?:@&=+$#",
        plus: false,
    },
    // HTML forms, `URLSearchParams`.
    UrlStyle {
        safe: b"*-._",
        plus: true,
    },
];

fn url_encode(bytes: &[u8], style: UrlStyle, upper: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || style.safe.contains(&b) {
            out.push(b);
        } else if b == b' ' && style.plus {
            out.push(b'+');
        } else {
            out.push(b'%');
            push_hex(&mut out, b, upper);
        }
    }
    out
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The base64 characters that depend only on `secret` when it sits `offset` bytes into a
/// 3-byte group: the characters shared with neighbouring bytes are dropped, so the
/// pattern matches wherever the value appears inside a longer encoded text.
fn base64_core(secret: &[u8], offset: usize, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(secret);
    let mut chars = Vec::with_capacity(padded.len() * 4 / 3 + 4);
    for chunk in padded.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            chars.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    // Characters touched by the padding at the start, or by the unknown byte after the
    // end, vary with the surrounding text.
    let skip_start = [0, 2, 3][offset];
    let stable_end = padded.len() * 8 / 6;
    (stable_end >= skip_start + MIN_ENCODED).then(|| chars[skip_start..stable_end].to_vec())
}

#[cfg(test)]
#[path = "mask_tests.rs"]
mod tests;
