//! The daemon's channel to the job process it starts (`--control-stdin`): the first line
//! of standard input is one JSON object with what must not be in argv (variables, secret
//! references), and the end of standard input afterwards asks the job to stop.

use serde::de::DeserializeOwned;

/// Reads the first line of standard input as `T`; `shape` shows what it should look like.
pub fn read<T: DeserializeOwned>(shape: &str) -> Result<T, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("--control-stdin: cannot read standard input: {e}"))?;
    parse(&line, shape)
}

/// Returns once standard input ends, the rest of it read and dropped: after the control
/// line, that end is the daemon asking the job to stop.
pub async fn end_of_input() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Parses one control line. The message says where it is wrong, never what it holds:
/// serde quotes the offending value, which may be a secret.
pub fn parse<T: DeserializeOwned>(line: &str, shape: &str) -> Result<T, String> {
    if line.trim().is_empty() {
        return Err(format!(
            "--control-stdin: standard input ended before its first line, {shape}"
        ));
    }
    serde_json::from_str(line).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => format!("does not have the shape {shape}"),
            _ => "is not JSON on one line".to_string(),
        };
        format!(
            "--control-stdin: the first line of standard input {what} (column {})",
            e.column()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_where_never_what() {
        let parsed: std::collections::BTreeMap<String, String> =
            parse("{\"A\": \"b\"}\n", "`{NAME: VALUE}`").unwrap();
        assert_eq!(parsed["A"], "b");
        for (line, says) in [
            ("", "ended before its first line, `{NAME: VALUE}`"),
            (
                "{\"A\": [\"hunter2\"]}",
                "does not have the shape `{NAME: VALUE}`",
            ),
            ("hunter2", "is not JSON on one line"),
        ] {
            let message =
                parse::<std::collections::BTreeMap<String, String>>(line, "`{NAME: VALUE}`")
                    .unwrap_err();
            assert!(message.contains(says), "{line}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }
}
