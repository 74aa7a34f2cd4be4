//! `commands` and `finally` lists.

use super::Command;
use crate::decode::{Decoder, is_block, list_item_hint};
use crate::diag::Code;
use crate::yaml::{Node, Value};

pub(super) fn decode_commands(d: &mut Decoder<'_>, node: &Node, path: &str) -> Vec<Command> {
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ if node.is_null() => Vec::new(),
        Value::Scalar { text, .. } => {
            d.diags.warning(
                Code::WrongType,
                node.span,
                format!("`{path}` should be a list; this string is read as its only command"),
                list_item_hint(text),
            );
            vec![node]
        }
        Value::Map(_) => {
            command_is_mapping(d, node, path);
            return Vec::new();
        }
    };
    let mut commands = Vec::with_capacity(items.len());
    for item in items {
        match &item.value {
            _ if item.is_null() => d.diags.error(
                Code::EmptyCommand,
                item.span,
                format!("`{path}` has an empty command"),
                "write the command after `- `, or remove the empty item",
            ),
            Value::Scalar { text, .. } => {
                if text.trim().is_empty() {
                    d.diags.error(
                        Code::EmptyCommand,
                        item.span,
                        format!("`{path}` has an empty command"),
                        "write the command inside the quotes, or remove the item",
                    );
                    continue;
                }
                if is_block(item) && hides_failures(text) {
                    d.diags.warning(
                        Code::MultilineCommand,
                        item.span,
                        "this multi-line command runs as one script: only its last line's exit status counts",
                        "split it into one `- command` per line, or start it with `set -e` (which then stays on for later commands, as the shell is shared)",
                    );
                }
                let line = d.diags.source().position(item.span.start).line;
                commands.push(Command {
                    text: text.clone(),
                    line,
                    span: item.span,
                });
            }
            Value::Map(_) => command_is_mapping(d, item, path),
            Value::Seq(_) => d.wrong_type(
                item,
                &format!("{path}[]"),
                "a string",
                "write each command as `- command` at the same indentation",
            ),
        }
    }
    commands
}

fn command_is_mapping(d: &mut Decoder<'_>, node: &Node, path: &str) {
    let source = d.diags.source();
    let written = source.slice(node.span).trim();
    let hint = if !written.is_empty() && !written.contains('\n') {
        format!(
            "YAML reads `: ` as a key and value: quote the whole command, e.g. `- {}`",
            single_quoted(written)
        )
    } else {
        "YAML reads `: ` as a key and value: quote the whole command in single quotes".to_string()
    };
    d.diags.error(
        Code::CommandIsMapping,
        node.span,
        format!("a command in `{path}` was read as a mapping, not as a command"),
        hint,
    );
}

/// `text` in single quotes, which keep `$`, `"` and `\` as they are.
fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Whether a script of several lines can fail in a line other than its last without the
/// failure being seen, in a way the warning's advice fixes: true when it has two or more
/// commands, no `set -e`, and nothing that splitting it line by line would break (a here-
/// document, an `if`, a loop, a `case`, a function, a brace or parenthesis group).
fn hides_failures(script: &str) -> bool {
    if has_compound(script) {
        return false;
    }
    const CONTINUES: [&str; 9] = ["\\", "&&", "||", "|", "then", "do", "else", "{", "("];
    const CLOSERS: [&str; 7] = ["fi", "done", "esac", "}", ")", "else", ";;"];
    let mut commands = 0;
    let mut continued = false;
    for line in script.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if is_errexit(line) {
            return false;
        }
        if !continued && !CLOSERS.contains(&line) {
            commands += 1;
        }
        continued = CONTINUES.iter().any(|c| line.ends_with(c));
    }
    commands >= 2
}

/// Whether the script holds a construct of several lines: one `- command` per line would
/// cut it apart.
fn has_compound(script: &str) -> bool {
    const OPENERS: [&str; 7] = ["if", "for", "while", "until", "case", "select", "function"];
    script.lines().any(|line| {
        let line = line.trim();
        let first = line.split_whitespace().next().unwrap_or("");
        OPENERS.contains(&first)
            || line.contains("<<")
            || line.ends_with('{')
            || line.ends_with('(')
            || line.contains("() {")
            || line.ends_with("()")
    })
}

fn is_errexit(line: &str) -> bool {
    let mut words = line.split_whitespace();
    if words.next() != Some("set") {
        return false;
    }
    let rest: Vec<&str> = words.collect();
    rest.iter()
        .any(|w| w.starts_with('-') && !w.starts_with("--") && w.contains('e') && *w != "-o")
        || rest.windows(2).any(|w| w[0] == "-o" && w[1] == "errexit")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::hides_failures;

    #[test]
    fn several_commands_without_errexit_hide_failures() {
        assert!(hides_failures("make\nmake test\n"));
        assert!(hides_failures("cd app\n# build\nnpm ci\n"));
    }

    #[test]
    fn one_command_or_errexit_does_not() {
        assert!(!hides_failures("docker build \\\n  -t x \\\n  .\n"));
        assert!(!hides_failures("set -e\nmake\nmake test\n"));
        assert!(!hides_failures("set -euo pipefail\nmake\nmake test\n"));
        assert!(!hides_failures("set -o errexit\nmake\nmake test\n"));
        assert!(!hides_failures("if [ -f x ]; then\n  make\nfi\n"));
        assert!(!hides_failures("make &&\n  make test\n"));
        assert!(!hides_failures("only one line\n"));
    }

    #[test]
    fn constructs_that_splitting_would_break_are_not_warned_about() {
        assert!(!hides_failures(
            "cat > f <<EOF\nline one\nline two\nEOF\nmake\n"
        ));
        assert!(!hides_failures("cat <<-'EOF' | sh\n\techo a\nEOF\n"));
        assert!(!hides_failures(
            "if [ -f x ]\nthen\n  make\n  make test\nfi\n"
        ));
        assert!(!hides_failures(
            "for d in a b; do\n  make -C $d\ndone\nmake all\n"
        ));
        assert!(!hides_failures(
            "while read l; do\n  echo $l\ndone < f\necho end\n"
        ));
        assert!(!hides_failures("case $X in\n  a) make;;\nesac\nmake\n"));
        assert!(!hides_failures("build() {\n  make\n}\nbuild\n"));
        assert!(!hides_failures("(\n  cd app\n  make\n)\nmake\n"));
    }

    /// The hint's rewrite of a one-line command, put back in a buildspec, is the same
    /// command; a block is never rewritten.
    #[test]
    fn a_hint_never_changes_what_runs() {
        use crate::{Source, parse_buildspec};
        for text in [
            r#"echo "a: b" \ and 'quoted' # not a comment"#,
            r"printf '%s\n' C:\path\to",
            "- starts with a dash",
            "  padded  ",
            "ends with colon:",
        ] {
            let hint = super::list_item_hint(text);
            let item = hint
                .strip_prefix("write it as a list item: `- ")
                .and_then(|h| h.strip_suffix('`'))
                .unwrap_or_else(|| panic!("{hint}"));
            let yaml = format!("version: 0.2\nphases:\n  build:\n    commands:\n      - {item}\n");
            let parsed = parse_buildspec(&Source::new("b.yml", &yaml));
            let spec = parsed.value.unwrap_or_else(|| panic!("{yaml}"));
            let build = spec.phases.build.unwrap();
            assert_eq!(build.commands[0].text, text.trim_end(), "{yaml}");
        }
        let block = "docker build \\\n  -t app \\\n  .\n";
        assert!(super::list_item_hint(block).contains("`- |`"));
    }
}
