use super::*;

fn mask_in_pieces(masker: &mut Masker, pieces: &[&[u8]]) -> String {
    let mut out = Vec::new();
    for piece in pieces {
        masker.push(piece, &mut out);
    }
    masker.flush(&mut out);
    String::from_utf8(out).unwrap()
}

/// Masks `stream` whole, then cut at every `step` bytes, then one byte at a time with
/// `release_idle` between bytes; all must agree. Returns the output.
fn masked_every_way(masker: &Masker, stream: &[u8], step: usize) -> Vec<u8> {
    let mut whole = Vec::new();
    let mut m = masker.fresh();
    m.push(stream, &mut whole);
    m.flush(&mut whole);

    let mut stepped = Vec::new();
    let mut m = masker.fresh();
    let longest = masker.patterns.as_ref().map_or(0, |p| p.longest);
    for piece in stream.chunks(step.max(1)) {
        m.push(piece, &mut stepped);
        assert!(m.held_back() <= longest * (MAX_BREAK + 1) + MAX_BREAK);
    }
    m.flush(&mut stepped);
    assert_eq!(
        String::from_utf8_lossy(&whole),
        String::from_utf8_lossy(&stepped),
        "cut every {step} bytes"
    );

    if stream.len() <= 20_000 {
        let mut single = Vec::new();
        let mut m = masker.fresh();
        for b in stream.chunks(1) {
            m.push(b, &mut single);
            m.release_idle(&mut single);
        }
        m.flush(&mut single);
        assert_eq!(
            String::from_utf8_lossy(&whole),
            String::from_utf8_lossy(&single),
            "byte by byte"
        );
    }
    whole
}

fn strip_breaks(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(|&b| !is_break(b)).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// Reference encoders, written from the specifications and independent of the masker's.

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

/// `base64 -w width` (0: no wrapping), with `eol` after every line, the last one too.
fn wrapped(encoded: &[u8], width: usize, eol: &[u8]) -> Vec<u8> {
    if width == 0 {
        return encoded.to_vec();
    }
    let mut out = Vec::new();
    for line in encoded.chunks(width) {
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
    }
    out
}

/// The characters of `base64(prefix + secret + suffix)` that only `secret` determines.
fn stable_base64(secret: &[u8], offset: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let mut padded = vec![b'#'; offset];
    padded.extend_from_slice(secret);
    let encoded = base64(&padded, alphabet);
    let first = (offset * 8).div_ceil(6);
    let last = padded.len() * 8 / 6;
    encoded[first..last].to_vec()
}

/// Python's `json.dumps(s)` (ensure_ascii) without quotes.
fn json_dumps_ascii(text: &str, upper: bool) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == ' ' || (c.is_ascii() && !c.is_ascii_control()) => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    if upper {
                        out.push_str(&format!("\\u{u:04X}"));
                    } else {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
    }
    out
}

/// Python's `urllib.parse.quote(s, safe)`, `quote_plus` when `plus`.
fn quote(bytes: &[u8], safe: &str, plus: bool, lower: bool) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) || safe.as_bytes().contains(&b) {
            out.push(b as char);
        } else if plus && b == b' ' {
            out.push('+');
        } else if lower {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A secret of `len` bytes with URL- and JSON-special characters, and non-ASCII ones when
/// `unicode` (then `len` is approximate: whole characters only).
fn secret_of(len: usize, unicode: bool, seed: u64) -> Vec<u8> {
    let ascii = b"Zq8\"kP/2+mX=v&Lw\\9yT4 a%b?c#d<e>f;g@h:i";
    let wide = ["ä", "€", "😀", "ß", "x", "y", "z", "/", " "];
    let mut out = Vec::new();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    while out.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (state >> 33) as usize;
        if unicode {
            let w = wide[r % wide.len()].as_bytes();
            if out.len() + w.len() > len && out.len() < len {
                out.push(ascii[r % ascii.len()]);
            } else {
                out.extend_from_slice(w);
            }
        } else {
            out.push(ascii[r % ascii.len()]);
        }
    }
    out.truncate(len.max(1));
    out
}

const SIZES: [usize; 6] = [1, 20, 57, 58, 200, 3000];

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
fn overlapping_values_mask_their_union() {
    let mut m = Masker::new(&["abcd", "abcdef"]);
    assert_eq!(
        mask_in_pieces(&mut m, &[b"xabcd", b"efx abcdx"]),
        "x***x ***x"
    );
    let mut m = Masker::new(&["abcdXY", "XYzwvu"]);
    assert_eq!(mask_in_pieces(&mut m, &[b"-abcdXYzwvu-"]), "-***-");
}

#[test]
fn a_value_printed_across_a_line_break_is_masked_in_both_lines() {
    let m = Masker::new(&["hunter2secret"]);
    assert_eq!(m.mask_str("a hunter2\nsecret b\n"), "a ***\n*** b\n");
    assert_eq!(m.mask_str("a hunter2\r\nsecret b"), "a ***\r\n*** b");
}

#[test]
fn short_value_policy() {
    // One byte: not masked.
    let m = Masker::new(&["a"]);
    assert_eq!(m.mask_str("a banana"), "a banana");
    // Two and three bytes: the raw value only.
    let m = Masker::new(&["q/", "p+q"]);
    assert_eq!(m.mask_str("q/ p+q q%2F p%2Bq"), "*** *** q%2F p%2Bq");
    // Four bytes: every form.
    let m = Masker::new(&["p+q/"]);
    assert_eq!(m.mask_str("p+q/ p%2Bq%2F p%2bq%2f"), "*** *** ***");
    // Whitespace only: never.
    let m = Masker::new(&["    ", "\n\n"]);
    assert_eq!(m.mask_str("a    b\n\n"), "a    b\n\n");
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

#[test]
fn text_without_secrets_is_unchanged() {
    let secret = secret_of(200, true, 7);
    let text: Vec<u8> = (0..50_000u32)
        .flat_map(|i| format!("line {i}: the quick brown fox {}\n", i * 7919).into_bytes())
        .collect();
    let out = masked_every_way(&Masker::new(&[&secret]), &text, 333);
    assert_eq!(out, text);
}

#[test]
fn push_releases_all_but_a_possible_start() {
    let mut m = Masker::new(&["hunter2secret"]);
    let mut out = Vec::new();
    m.push(b"progress 10% hun", &mut out);
    m.release_idle(&mut out);
    assert_eq!(out, b"progress 10% ");
    assert_eq!(m.held_back(), 3);
    m.push(b"ting", &mut out);
    assert_eq!(out, b"progress 10% hunting");
    assert_eq!(m.held_back(), 0);
    m.push(b" hunter2sec", &mut out);
    m.push(b"ret", &mut out);
    m.release_idle(&mut out);
    assert_eq!(out, b"progress 10% hunting ***");
    // Nothing matching: nothing held.
    m.push(&vec![b'z'; 100_000], &mut out);
    assert_eq!(m.held_back(), 0);
}

#[test]
fn held_back_stays_bounded() {
    let secret = secret_of(3000, false, 3);
    let mut m = Masker::new(&[&secret]);
    let mut out = Vec::new();
    // The start of the value, then line breaks forever.
    m.push(&secret[..100], &mut out);
    for _ in 0..10_000 {
        m.push(b"\n\r\n", &mut out);
        assert!(m.held_back() <= 100 + MAX_BREAK + 3);
    }
    // The whole value, over and over.
    for _ in 0..20 {
        m.push(&secret, &mut out);
        assert!(m.held_back() <= 4 * 3000 * (MAX_BREAK + 1));
    }
    m.flush(&mut out);
    assert!(!contains(&out, &secret[..100]) || out.len() > 30_000);
}

/// Every form of every size: raw, JSON (plain, ensure_ascii lower and upper, `\/`), URL
/// (quote, quote_plus, encodeURIComponent, lower-case hex), base64 (standard and URL-safe,
/// offsets 0..3, unwrapped and wrapped at several widths with LF and CRLF), each written
/// whole and cut at several split points.
#[test]
fn every_form_of_every_size_is_masked() {
    for (n, &size) in SIZES.iter().enumerate() {
        for unicode in [false, true] {
            let secret = secret_of(size, unicode, n as u64 + 11);
            if secret.len() < MIN_MASKED {
                let m = Masker::new(&[&secret]);
                let text = [b"x ".as_slice(), &secret, b" y"].concat();
                assert_eq!(m.mask_bytes(&text), text, "1-byte values are not masked");
                continue;
            }
            let masker = Masker::new(&[&secret]);
            check_text_forms(&masker, &secret);
            check_base64_forms(&masker, &secret);
        }
    }
}

fn check_text_forms(masker: &Masker, secret: &[u8]) {
    let text = String::from_utf8(secret.to_vec()).unwrap();
    let mut forms = vec![
        text.clone(),
        serde_json::to_string(&text)
            .unwrap()
            .trim_matches('"')
            .to_string(),
        json_dumps_ascii(&text, false),
        json_dumps_ascii(&text, true),
        json_dumps_ascii(&text, false).replace('/', "\\/"),
        serde_json::to_string(&text)
            .unwrap()
            .trim_matches('"')
            .replace('/', "\\/"),
        quote(secret, "/", false, false),
        quote(secret, "", false, false),
        quote(secret, "", true, false),
        quote(secret, "", true, true),
        quote(secret, "/", false, true),
        quote(secret, "!*'()", false, false),
    ];
    forms.sort();
    forms.dedup();
    for form in forms {
        let mut stream = b"begin ".to_vec();
        stream.extend_from_slice(form.as_bytes());
        stream.extend_from_slice(b" end\n");
        for step in [1, 7, 64, 4096] {
            let out = masked_every_way(masker, &stream, step);
            if secret.len() < MIN_ENCODED {
                if form.as_bytes() == secret {
                    assert_eq!(out, b"begin *** end\n");
                }
                continue;
            }
            assert_eq!(
                String::from_utf8_lossy(&out),
                "begin *** end\n",
                "form {form:?} of a {}-byte value",
                secret.len()
            );
        }
    }
}

fn check_base64_forms(masker: &Masker, secret: &[u8]) {
    if secret.len() < MIN_ENCODED {
        return;
    }
    for alphabet in [BASE64, BASE64_URL] {
        for offset in 0..3 {
            let mut plain = b"ab"[..offset].to_vec();
            plain.extend_from_slice(secret);
            plain.extend_from_slice(b"-tail");
            let stable = stable_base64(secret, offset, alphabet);
            let encoded = base64(&plain, alphabet);
            for (width, eol) in [
                (0, &b"\n"[..]),
                (76, b"\n"),
                (64, b"\n"),
                (64, b"\r\n"),
                (76, b"\r\n"),
                (5, b"\n"),
                (1, b"\n"),
            ] {
                if width == 1 && secret.len() > 200 {
                    continue;
                }
                let body = wrapped(&encoded, width, eol);
                let mut stream = b"data:\n".to_vec();
                stream.extend_from_slice(&body);
                stream.extend_from_slice(b"done\n");
                for step in [3, 77, 1000] {
                    let out = masked_every_way(masker, &stream, step);
                    let flat = strip_breaks(&out);
                    let what = format!(
                        "{}-byte value at offset {offset}, width {width}, eol {eol:?}, cut every {step}",
                        secret.len()
                    );
                    assert!(
                        !contains(&flat, &stable),
                        "{what}: {}",
                        String::from_utf8_lossy(&out)
                    );
                    assert!(contains(&out, MASK), "{what}");
                    // Line structure stays.
                    let lines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
                    assert_eq!(lines(&out), lines(&stream), "{what}");
                    assert!(
                        out.starts_with(b"data:\n") && out.ends_with(b"done\n"),
                        "{what}"
                    );
                }
            }
        }
    }
}

#[test]
fn multi_line_values_are_masked_whole_and_line_by_line() {
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nabc\nQ2xvdWQgc2VjcmV0IGxpbmUgdGhyZWU=\n-----END PRIVATE KEY-----\n";
    let m = Masker::new(&[key]);
    // Whole, with LF or CRLF line ends.
    assert_eq!(
        m.mask_str(&format!("k={key}.")),
        "k=***\n***\n***\n***\n***\n."
    );
    let crlf = key.replace('\n', "\r\n");
    assert!(!m.mask_str(&crlf).contains("MIIEvQ"));
    // One line on its own, raw and encoded; a 3-byte line is not masked on its own.
    let line = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";
    assert_eq!(m.mask_str(&format!("x {line} y")), "x *** y");
    let encoded = String::from_utf8(base64(line.as_bytes(), BASE64)).unwrap();
    assert!(!m.mask_str(&encoded).contains(&encoded[..20]));
    assert_eq!(m.mask_str("abc"), "abc");
    // The whole key as JSON and as base64 wrapped at 76.
    let json = serde_json::to_string(key).unwrap();
    assert_eq!(m.mask_str(&json), "\"***\"");
    let b64 = wrapped(&base64(key.as_bytes(), BASE64), 76, b"\n");
    let out = m.mask_bytes(&b64);
    assert!(
        out.split(|&b| b == b'\n')
            .all(|l| l.is_empty() || l == MASK || l.ends_with(b"=")),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn values_added_later_are_masked_in_held_back_output() {
    let mut m = Masker::new(&["firstsecret"]);
    let mut out = Vec::new();
    m.push(b"a first", &mut out);
    let mut m = m.extended(&["firstsecret", "firstsecond"]);
    m.push(b"second b firstsecret\n", &mut out);
    m.flush(&mut out);
    assert_eq!(String::from_utf8(out).unwrap(), "a *** b ***\n");
}

#[test]
fn adjacent_masks_are_one_mask_however_split() {
    let secret = b"AKIAEXAMPLEKEY00";
    let stream = [secret.as_slice(), secret, b" ", secret].concat();
    let out = masked_every_way(&Masker::new(&[secret]), &stream, 5);
    assert_eq!(out, b"*** ***");
}

/// A small deterministic generator for the randomized test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
    fn below(&mut self, n: usize) -> usize {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
    /// Fewer than `max` bytes.
    fn some(&mut self, max: usize, alphabet: &[u8]) -> Vec<u8> {
        let len = self.below(max);
        self.bytes(len, alphabet)
    }
}

/// Random values (some with line breaks, some non-ASCII) written in random encodings at
/// random offsets and wrap widths into random text, cut at random points: the output does
/// not depend on the cuts, keeps every line break, and holds no form of any value.
#[test]
fn random_values_in_random_forms_and_cuts() {
    let mut rng = Rng(42);
    let text_alphabet = b"ab c\n\r=+/%\"\\xyzAQ019";
    let secret_alphabet: Vec<u8> = b"Zq8\"kP/2+mX=v&Lw\\9yT4 a%b?c#d<e>f;g@h:i\n"
        .iter()
        .copied()
        .chain("äé€".bytes())
        .collect();
    for round in 0..100 {
        let count = 1 + rng.below(3);
        let secrets: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                let len = [2, 3, 4, 5, 20, 57, 58, 90][rng.below(8)];
                let s = rng.bytes(len, &secret_alphabet);
                // Whole characters only, so every value has its JSON forms.
                String::from_utf8_lossy(&s).into_owned().into_bytes()
            })
            .collect();
        let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
        let masker = Masker::new(&refs);
        let mut stream = rng.some(40, text_alphabet);
        for _ in 0..1 + rng.below(4) {
            let secret = &secrets[rng.below(secrets.len())];
            let form = match rng.below(7) {
                0 => secret.clone(),
                1 => serde_json::to_string(&String::from_utf8_lossy(secret))
                    .unwrap()
                    .into_bytes(),
                2 => json_dumps_ascii(&String::from_utf8_lossy(secret), rng.below(2) == 0)
                    .into_bytes(),
                3 => quote(secret, "/", false, rng.below(2) == 0).into_bytes(),
                4 => quote(secret, "", true, rng.below(2) == 0).into_bytes(),
                _ => {
                    let mut plain = rng.some(5, text_alphabet);
                    plain.extend_from_slice(secret);
                    plain.extend(rng.some(3, text_alphabet));
                    let alphabet = if rng.below(2) == 0 {
                        BASE64
                    } else {
                        BASE64_URL
                    };
                    let eol: &[u8] = if rng.below(2) == 0 { b"\n" } else { b"\r\n" };
                    wrapped(&base64(&plain, alphabet), rng.below(80), eol)
                }
            };
            stream.extend_from_slice(&form);
            stream.extend(rng.some(20, text_alphabet));
        }
        let out = masked_every_way(&masker, &stream, 1 + rng.below(50));
        let breaks = |b: &[u8]| b.iter().filter(|&&c| is_break(c)).count();
        assert_eq!(breaks(&out), breaks(&stream), "round {round}");
        let flat = strip_breaks(&out);
        for s in &secrets {
            let chars = s.iter().filter(|&&b| !is_break(b)).count();
            if s.iter().all(u8::is_ascii_whitespace) || chars < MIN_MASKED {
                continue;
            }
            let what = || {
                format!(
                    "round {round}: {:?} in {:?} -> {:?}",
                    String::from_utf8_lossy(s),
                    String::from_utf8_lossy(&stream),
                    String::from_utf8_lossy(&out)
                )
            };
            assert!(!contains(&out, s), "{}", what());
            if chars < MIN_ENCODED || s.iter().any(|&b| is_break(b)) {
                continue;
            }
            let text = String::from_utf8_lossy(s);
            for form in [
                json_dumps_ascii(&text, false),
                json_dumps_ascii(&text, true),
                quote(s, "/", false, true),
                quote(s, "", true, false),
            ] {
                assert!(!contains(&out, form.as_bytes()), "{form}: {}", what());
            }
            for alphabet in [BASE64, BASE64_URL] {
                for offset in 0..3 {
                    let core = stable_base64(s, offset, alphabet);
                    if core.len() >= MIN_ENCODED {
                        assert!(!contains(&flat, &core), "base64: {}", what());
                    }
                }
            }
        }
    }
}
