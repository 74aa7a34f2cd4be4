//! Invariants every parse must keep, whatever the input.

use buildspec::{Kind, Source};

pub fn check(data: &[u8], kind: Kind) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source::new("fuzz.yml", text);
    let (_, parsed) = buildspec::parse(&source, Some(kind));
    let has_errors = parsed.diagnostics.iter().any(|d| d.is_error());
    // A value is returned exactly when nothing is wrong, so nothing half-checked can run.
    assert_eq!(parsed.value.is_some(), !has_errors);
    let last_line = source.line_count();
    for d in &parsed.diagnostics {
        assert!(d.start.line >= 1 && d.start.line <= last_line, "{d:?}");
        assert!(d.start <= d.end, "{d:?}");
        assert!(d.span.start <= d.span.end && d.span.end <= source.text().len(), "{d:?}");
        assert!(!d.message.is_empty() && d.hint.as_deref().is_some_and(|h| !h.is_empty()));
    }
    let rendered = buildspec::render_all(&source, &parsed.diagnostics, false);
    assert_eq!(rendered.is_empty(), parsed.diagnostics.is_empty());
}
