#![no_main]

//! The secret masker: however a stream is split into writes, the output is the same as
//! for the whole stream at once; and no registered value is left in it, raw or in any of
//! the encodings a build prints it in (JSON, URL, base64 at any offset and wrap width).

#[allow(dead_code)]
#[path = "../../agent/src/logs/mask.rs"]
mod mask;

use libfuzzer_sys::arbitrary::{self, Arbitrary};

#[derive(Debug, Arbitrary)]
struct Input {
    secrets: Vec<Vec<u8>>,
    stream: Vec<u8>,
    /// Secrets written into the stream, encoded.
    embeds: Vec<Embed>,
    /// Where the stream is cut into writes.
    cuts: Vec<u16>,
}

#[derive(Debug, Arbitrary)]
struct Embed {
    /// Which secret.
    secret: u8,
    /// Which encoding.
    encoding: u8,
    /// Bytes before the secret inside the encoded value (its offset in base64).
    before: Vec<u8>,
    /// Bytes after it.
    after: Vec<u8>,
    /// Base64 line width (0: one line) and line end.
    width: u8,
    crlf: bool,
}

const ENCODINGS: u8 = 9;

fn encode(e: &Embed, secret: &[u8]) -> Vec<u8> {
    let text = || String::from_utf8_lossy(secret).into_owned();
    match e.encoding % ENCODINGS {
        0 => secret.to_vec(),
        1 => serde_json::to_string(&text())
            .unwrap_or_default()
            .into_bytes(),
        2 => json_ascii(&text(), false).into_bytes(),
        3 => json_ascii(&text(), true).into_bytes(),
        4 => quote(secret, b"/", false, false),
        5 => quote(secret, b"", true, false),
        6 => quote(secret, b"", false, true),
        7 | 8 => {
            let alphabet = if e.encoding % ENCODINGS == 7 {
                BASE64
            } else {
                BASE64_URL
            };
            let mut plain = e.before[..e.before.len().min(8)].to_vec();
            plain.extend_from_slice(secret);
            plain.extend_from_slice(&e.after[..e.after.len().min(8)]);
            let encoded = base64(&plain, alphabet);
            let width = usize::from(e.width);
            if width == 0 {
                return encoded;
            }
            let mut out = Vec::new();
            for line in encoded.chunks(width) {
                out.extend_from_slice(line);
                out.extend_from_slice(if e.crlf { b"\r\n" } else { b"\n" });
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The encoded forms that must not be left, for a value the masker masks with its encodings.
fn forbidden(secret: &[u8]) -> Vec<(Vec<u8>, bool)> {
    let mut forms = Vec::new();
    if let Ok(text) = std::str::from_utf8(secret) {
        for form in [
            serde_json::to_string(text).unwrap_or_default(),
            json_ascii(text, false),
            json_ascii(text, true),
        ] {
            forms.push((form.trim_matches('"').as_bytes().to_vec(), false));
        }
    }
    forms.push((quote(secret, b"/", false, false), false));
    forms.push((quote(secret, b"", true, false), false));
    forms.push((quote(secret, b"", false, true), false));
    for alphabet in [BASE64, BASE64_URL] {
        for offset in 0..3 {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(secret);
            let encoded = base64(&padded, alphabet);
            let first = (offset * 8).div_ceil(6);
            let last = padded.len() * 8 / 6;
            if last >= first + mask::MIN_ENCODED {
                // Base64 may be wrapped: looked for with line breaks taken out.
                forms.push((encoded[first..last].to_vec(), true));
            }
        }
    }
    forms
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        let mut n = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            n |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                alphabet[((n >> (18 - 6 * i)) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    out
}

/// Python's `json.dumps` with `ensure_ascii`, without the quotes.
fn json_ascii(text: &str, upper: bool) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&if upper {
                        format!("\\u{u:04X}")
                    } else {
                        format!("\\u{u:04x}")
                    });
                }
            }
        }
    }
    out
}

/// Python's `urllib.parse.quote` (`quote_plus` with `plus`).
fn quote(bytes: &[u8], safe: &[u8], plus: bool, lower: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) || safe.contains(&b) {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else if lower {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

fn is_break(b: &u8) -> bool {
    *b == b'\n' || *b == b'\r'
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The longest run of line-break bytes in `bytes`.
fn longest_break_run(bytes: &[u8]) -> usize {
    bytes
        .split(|b| !is_break(b))
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0)
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let secrets: Vec<&[u8]> = input
        .secrets
        .iter()
        .take(4)
        .map(|s| &s[..s.len().min(300)])
        .collect();
    let mut stream = input.stream.clone();
    for e in input.embeds.iter().take(8) {
        if let Some(secret) = secrets.get(usize::from(e.secret) % secrets.len().max(1)) {
            stream.extend_from_slice(&encode(e, secret));
            stream.extend_from_slice(&input.stream[..input.stream.len().min(16)]);
        }
    }

    let masker = mask::Masker::new(&secrets);
    let mut whole = Vec::new();
    let mut m = masker.fresh();
    m.push(&stream, &mut whole);
    m.flush(&mut whole);

    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| usize::from(c) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut m = masker.fresh();
    let mut at = 0;
    for (i, cut) in cuts.into_iter().chain([stream.len()]).enumerate() {
        m.push(&stream[at..cut], &mut pieces);
        if i % 2 == 0 {
            m.release_idle(&mut pieces);
        }
        at = cut;
    }
    m.flush(&mut pieces);
    assert_eq!(whole, pieces, "split writes changed the output");

    // Line structure stays: masks keep every line break.
    let breaks = |b: &[u8]| b.iter().filter(|c| is_break(c)).count();
    assert_eq!(breaks(&whole), breaks(&stream), "line breaks lost");

    // A value with `*` in it could be rebuilt from a mask and its neighbours; a run of more
    // line breaks than a match may span ends a match by design.
    let stripped: Vec<u8> = whole.iter().copied().filter(|b| !is_break(b)).collect();
    let long_breaks = longest_break_run(&stream) > mask::MAX_BREAK;
    for s in &secrets {
        let chars = s.iter().filter(|b| !is_break(b)).count();
        if chars < mask::MIN_MASKED
            || s.iter().all(u8::is_ascii_whitespace)
            || s.contains(&b'*')
            || longest_break_run(s) > mask::MAX_BREAK
        {
            continue;
        }
        assert!(!contains(&whole, s), "{s:?} left in {whole:?}");
        if chars < mask::MIN_ENCODED || s.iter().any(is_break) {
            continue;
        }
        for (form, wrapped) in forbidden(s) {
            if form.contains(&b'*') || form.len() < mask::MIN_ENCODED {
                continue;
            }
            if wrapped {
                if !long_breaks {
                    assert!(!contains(&stripped, &form), "{form:?} of {s:?} left in {whole:?}");
                }
            } else {
                assert!(!contains(&whole, &form), "{form:?} of {s:?} left in {whole:?}");
            }
        }
    }
});
