//! Variables from the command line and from files: `-e`, `--env-file`, `--secret`,
//! `--secret-file`.
//!
//! No message here quotes a value or a line of a file: a secret file's lines are secrets,
//! and an env file's may be too.

use std::collections::BTreeMap;
use std::path::Path;

use crate::build::env::is_name;

/// Reads a dotenv file: `NAME=VALUE` lines, `export NAME=VALUE`, spaces around `=`
/// trimmed, `'…'` taken literally, `"…"` with `\n`, `\t`, `\"` and `\\` escapes, `#`
/// comments (whole lines, or after an unquoted value and a space) and blank lines.
pub fn read_dotenv(file: &Path, flag: &str) -> Result<Vec<(String, String)>, String> {
    let text = agent_config::files::read_bounded(
        file,
        agent_config::files::MAX_FILE_BYTES,
        "an environment or secret file",
    )
    .map_err(|e| format!("error: {flag} {}: {e}", file.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| format!("error: {flag} {}: not UTF-8 text", file.display()))?;
    parse_dotenv(&text)
        .map_err(|(line, why)| format!("error: {flag} {}:{line}: {why}", file.display()))
}

/// The variables of a dotenv text, or the 1-based line that is wrong and why (never what
/// the line holds).
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(line, str::trim_start);
        let fail = |why: &str| Err((index + 1, why.to_string()));
        let Some((name, value)) = line.split_once('=') else {
            return fail("expected NAME=VALUE, and this line has no `=`");
        };
        let name = name.trim();
        if !is_name(name) {
            return fail(
                "the text before `=` is not a variable name (letters, digits and _, not starting with a digit)",
            );
        }
        let value = match parse_value(value.trim()) {
            Ok(value) => value,
            Err(why) => return fail(why),
        };
        out.push((name.to_string(), value));
    }
    Ok(out)
}

fn parse_value(value: &str) -> Result<String, &'static str> {
    let mut chars = value.char_indices();
    let rest_is_comment = |rest: &str| {
        let rest = rest.trim_start();
        rest.is_empty() || rest.starts_with('#')
    };
    match chars.next() {
        Some((_, '\'')) => {
            let body = &value[1..];
            let end = body
                .find('\'')
                .ok_or("a value opened with ' is not closed on the same line")?;
            if !rest_is_comment(&body[end + 1..]) {
                return Err("unexpected text after the closing '");
            }
            Ok(body[..end].to_string())
        }
        Some((_, '"')) => {
            let mut out = String::new();
            let mut escaped = false;
            for (at, c) in chars {
                if escaped {
                    match c {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '"' | '\\' | '$' => out.push(c),
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    if !rest_is_comment(&value[at + 1..]) {
                        return Err("unexpected text after the closing \"");
                    }
                    return Ok(out);
                } else {
                    out.push(c);
                }
            }
            Err("a value opened with \" is not closed on the same line")
        }
        _ => {
            // An unquoted value ends at a comment: ` #` (a `#` inside a word is kept).
            let end = value
                .char_indices()
                .find(|&(at, c)| c == '#' && value[..at].ends_with([' ', '\t']))
                .map_or(value.len(), |(at, _)| at);
            Ok(value[..end].trim_end().to_string())
        }
    }
}

/// What `-e` and `--secret` entries come to, and notes for the engineer about what was
/// left out.
#[derive(Debug, Default)]
pub struct Resolved {
    pub vars: Vec<(String, String)>,
    pub notes: Vec<String>,
}

/// `-e` entries: `NAME=VALUE`, or `NAME` passed on from this environment as `docker run -e
/// NAME` does (skipped with a note when it is not set). Anything else is an error that
/// points at `--env-file`.
pub fn resolve_env(
    entries: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Resolved, String> {
    let mut resolved = Resolved::default();
    for entry in entries {
        match entry.split_once('=') {
            Some((name, value)) => {
                if !is_name(name) {
                    return Err(format!(
                        "error: -e: `{name}` is not a variable name (letters, digits and _, not starting with a digit)"
                    ));
                }
                resolved.vars.push((name.to_string(), value.to_string()));
            }
            None if is_name(entry) && !Path::new(entry).is_file() => match lookup(entry) {
                Some(value) => resolved.vars.push((entry.clone(), value)),
                None => resolved.notes.push(format!(
                    "Note: -e {entry}: {entry} is not set in this environment; skipped"
                )),
            },
            None => {
                let what = if Path::new(entry).is_file() {
                    format!("`{entry}` is a file")
                } else {
                    format!("`{entry}` is not a variable name")
                };
                return Err(format!(
                    "error: -e {entry}: expected NAME=VALUE, or the NAME of a variable to pass on; {what}\nhint: to read variables from a file, use --env-file {entry}"
                ));
            }
        }
    }
    Ok(resolved)
}

/// `--secret` entries. `NAME=VALUE` entries were taken out of the command line at start
/// (see [`crate::run_local::hide`]) and come back in `given`; `NAME` alone is taken from
/// `given`, else from this environment. Errors never show a value.
pub fn resolve_secrets(
    entries: &[String],
    given: &BTreeMap<String, String>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Resolved, String> {
    let mut resolved = Resolved::default();
    for entry in entries {
        let (name, value) = match entry.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (entry.as_str(), None),
        };
        let a_file = value.is_none() && !given.contains_key(name) && Path::new(name).is_file();
        if !is_name(name) || a_file {
            return Err(if value.is_some() {
                "error: --secret: the text before `=` is not a variable name (letters, digits and _, not starting with a digit)".to_string()
            } else {
                let what = if Path::new(name).is_file() {
                    "is a file"
                } else {
                    "is not a variable name"
                };
                format!(
                    "error: --secret {name}: expected NAME (taken from this environment) or NAME=VALUE; `{name}` {what}\nhint: to read secrets from a file, use --secret-file {name}"
                )
            });
        }
        match value
            .or_else(|| given.get(name).cloned())
            .or_else(|| lookup(name))
        {
            Some(value) => resolved.vars.push((name.to_string(), value)),
            None => resolved.notes.push(format!(
                "Note: --secret {name}: {name} is not set in this environment; skipped"
            )),
        }
    }
    Ok(resolved)
}

/// This process's variable, when it is set and is text.
pub fn from_environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn dotenv_syntax() {
        let text = "# comment\n\nexport A=1\nB = two words \nC='single $HOME \\n'\nD=\"line\\nnext \\\"q\\\"\"\nE=x # note\nF=a#b\nG=\nexport=3\n";
        assert_eq!(
            parse_dotenv(text).unwrap(),
            pairs(&[
                ("A", "1"),
                ("B", "two words"),
                ("C", "single $HOME \\n"),
                ("D", "line\nnext \"q\""),
                ("E", "x"),
                ("F", "a#b"),
                ("G", ""),
                ("export", "3"),
            ])
        );
    }

    #[test]
    fn dotenv_errors_name_the_line_not_its_content() {
        let secret = "MIIEpAIBAAKCAQEA7";
        let text = format!("KEY=-----BEGIN RSA PRIVATE KEY-----\n{secret}\n");
        let (line, why) = parse_dotenv(&text).unwrap_err();
        assert_eq!(line, 2);
        assert!(!why.contains(secret), "{why}");
        assert_eq!(parse_dotenv("A='open\n").unwrap_err().0, 1);
        assert_eq!(parse_dotenv("A=1\n1A=2\n").unwrap_err().0, 2);
        assert_eq!(parse_dotenv("A=\"x\" y\n").unwrap_err().0, 1);
    }

    #[test]
    fn env_entries_pass_names_on_and_point_files_at_env_file() {
        let lookup = |name: &str| (name == "SET").then(|| "v".to_string());
        let got = resolve_env(&["A=1".into(), "SET".into(), "UNSET".into()], lookup).unwrap();
        assert_eq!(got.vars, pairs(&[("A", "1"), ("SET", "v")]));
        assert_eq!(got.notes.len(), 1);
        assert!(got.notes[0].contains("UNSET"), "{:?}", got.notes);
        let err = resolve_env(&["my.env".into()], lookup).unwrap_err();
        assert!(err.contains("--env-file my.env"), "{err}");
    }

    #[test]
    fn secret_errors_never_show_values() {
        let err =
            resolve_secrets(&["1BAD=hunter2".into()], &BTreeMap::new(), |_| None).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let given = BTreeMap::from([("TOKEN".to_string(), "t0k".to_string())]);
        let got = resolve_secrets(&["TOKEN".into()], &given, |_| None).unwrap();
        assert_eq!(got.vars, pairs(&[("TOKEN", "t0k")]));
    }
}
