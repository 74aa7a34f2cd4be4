//! `commands` and `finally` lists.

use super::Command;
use crate::decode::{Decoder, is_block, quote_if_needed};
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
                format!("write it as a list item: `- {}`", quote_if_needed(text)),
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
/// failure being seen: true when it has two or more commands and no `set -e`.
fn hides_failures(script: &str) -> bool {
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
}
