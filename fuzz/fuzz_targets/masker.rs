#![no_main]

//! The secret masker: however a stream is split into writes, the output is the same as
//! for the whole stream at once, and no registered value is left in it.

#[allow(dead_code)]
#[path = "../../agent/src/logs/mask.rs"]
mod mask;

use libfuzzer_sys::arbitrary::{self, Arbitrary};

#[derive(Debug, Arbitrary)]
struct Input {
    secrets: Vec<Vec<u8>>,
    stream: Vec<u8>,
    /// Where the stream is cut into writes.
    cuts: Vec<u16>,
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let secrets: Vec<&[u8]> = input
        .secrets
        .iter()
        .take(8)
        .map(|s| &s[..s.len().min(64)])
        .collect();
    let mut whole = Vec::new();
    let mut m = mask::Masker::new(&secrets);
    m.push(&input.stream, &mut whole);
    m.flush(&mut whole);

    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| usize::from(c) % (input.stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut m = mask::Masker::new(&secrets);
    let mut at = 0;
    for cut in cuts.into_iter().chain([input.stream.len()]) {
        m.push(&input.stream[at..cut], &mut pieces);
        at = cut;
    }
    m.flush(&mut pieces);
    assert_eq!(whole, pieces, "split writes changed the output");

    // A value with `*` in it could be rebuilt from a mask and its neighbours.
    for s in &secrets {
        if s.is_empty() || s.iter().all(u8::is_ascii_whitespace) || s.contains(&b'*') {
            continue;
        }
        assert!(
            !whole.windows(s.len()).any(|w| w == *s),
            "{s:?} left in {whole:?}"
        );
    }
});
