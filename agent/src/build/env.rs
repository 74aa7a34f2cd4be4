//! The build's environment, in CodeBuild's precedence: the image's variables, then the
//! built-in `CODEBUILD_*` ones, then the buildspec's `env.variables`, then the job's
//! (`--env-file`, then `-e`), then secrets.

use buildspec::Buildspec;

/// Applies `layers` in order; a later definition of a name replaces the earlier one and
/// keeps its first position, so the order stays readable in dumps.
pub fn merge(layers: &[&[(String, String)]]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for layer in layers {
        for (name, value) in *layer {
            match out.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1.clone_from(value),
                None => out.push((name.clone(), value.clone())),
            }
        }
    }
    out
}

/// `env.variables` as literal values: CodeBuild does not expand `$PATH` in them.
pub fn buildspec_variables(spec: &Buildspec) -> Vec<(String, String)> {
    spec.env
        .variables
        .iter()
        .map(|v| (v.name.value.clone(), v.value.value.clone()))
        .collect()
}

/// Parses an env file as CodeBuild's local agent does: `NAME=VALUE` a line, `#` comments
/// and blank lines skipped, no quote handling (quotes stay in the value).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "line {}: expected NAME=VALUE, found `{line}`",
                index + 1
            ));
        };
        let name = name.trim();
        if !is_name(name) {
            return Err(format!(
                "line {}: `{name}` is not a variable name",
                index + 1
            ));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

/// `NAME=VALUE` from the command line.
pub fn parse_assignment(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    if !is_name(name) {
        return Err(format!("`{name}` is not a variable name"));
    }
    Ok((name.to_string(), value.to_string()))
}

pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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
    fn later_layers_win_and_keep_order() {
        let image = pairs(&[("PATH", "/bin"), ("A", "image")]);
        let spec = pairs(&[("A", "spec"), ("B", "spec")]);
        let cli = pairs(&[("B", "cli")]);
        assert_eq!(
            merge(&[&image, &spec, &cli]),
            pairs(&[("PATH", "/bin"), ("A", "spec"), ("B", "cli")])
        );
    }

    #[test]
    fn env_files_keep_quotes_and_skip_comments() {
        let parsed = parse_env_file("# c\n\nA=1\nB=\"two\"\nC=x=y\r\n").unwrap();
        assert_eq!(parsed, pairs(&[("A", "1"), ("B", "\"two\""), ("C", "x=y")]));
        assert!(
            parse_env_file("A=1\nnope\n")
                .unwrap_err()
                .starts_with("line 2")
        );
        assert!(parse_env_file("1A=x\n").is_err());
    }
}
