//! Diagnostics printed the way compilers print them: the cause, `file:line:column`, the
//! source line with a caret under the problem, and the hint.

use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};

use crate::diag::{Diagnostic, Severity};
use crate::source::Source;

/// One diagnostic as text; `color` adds ANSI styles for a terminal.
pub fn render(source: &Source, diagnostic: &Diagnostic, color: bool) -> String {
    let level = match diagnostic.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    // Underline at least one character so the caret shows, but never past the text.
    let text = source.text();
    let start = floor_char_boundary(text, diagnostic.span.start);
    let mut end = floor_char_boundary(text, diagnostic.span.end.max(start));
    if end == start {
        end = text[start..]
            .chars()
            .next()
            .filter(|c| *c != '\n' && *c != '\r')
            .map_or(start, |c| start + c.len_utf8());
    }
    // A span over several lines is shown by its first line only: the caret is what matters.
    if let Some(newline) = text[start..end].find('\n') {
        end = start + newline;
    }
    let mut group = level
        .primary_title(diagnostic.message.as_str())
        .id(diagnostic.code.as_str())
        .element(
            Snippet::source(text)
                .path(source.name())
                .annotation(AnnotationKind::Primary.span(start..end)),
        );
    if let Some(hint) = &diagnostic.hint {
        group = group.element(Level::HELP.message(hint.as_str()));
    }
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    renderer.render(&[group])
}

fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Every diagnostic, separated by blank lines.
pub fn render_all(source: &Source, diagnostics: &[Diagnostic], color: bool) -> String {
    let mut out = String::new();
    for diagnostic in diagnostics {
        out.push_str(&render(source, diagnostic, color));
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::{Source, parse_buildspec};

    #[test]
    fn shows_location_source_line_caret_and_hint() {
        let source = Source::new(
            "buildspec.yml",
            "version: 0.3\nphases:\n  build:\n    commands: [make]\n",
        );
        let parsed = parse_buildspec(&source);
        let text = super::render_all(&source, &parsed.diagnostics, false);
        assert!(
            text.contains("error[unknown-version]: unknown buildspec version `0.3`"),
            "{text}"
        );
        assert!(text.contains("buildspec.yml:1:10"), "{text}");
        assert!(text.contains("1 | version: 0.3"), "{text}");
        assert!(text.contains("^^^"), "{text}");
        assert!(text.contains("help: use `version: 0.2`"), "{text}");
    }
}
