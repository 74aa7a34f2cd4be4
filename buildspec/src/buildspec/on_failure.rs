//! `phases.<phase>.on-failure`: ABORT, CONTINUE and the RETRY forms.

use serde::Serialize;

/// What to do when a phase fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OnFailure {
    Abort,
    Continue,
    /// Run the phase again, up to `count` more times, when the failure's message matches
    /// `pattern` (`None` matches every message).
    Retry {
        count: u32,
        pattern: Option<String>,
    },
}

/// CodeBuild's retry count when none is given.
pub const DEFAULT_RETRIES: u32 = 3;
pub const MAX_RETRIES: u32 = 100;

impl OnFailure {
    /// Parses the text of `on-failure`. The error says what is wrong with it.
    pub fn parse(text: &str) -> Result<OnFailure, String> {
        match text {
            "ABORT" => return Ok(OnFailure::Abort),
            "CONTINUE" => return Ok(OnFailure::Continue),
            "RETRY" => {
                return Ok(OnFailure::Retry {
                    count: DEFAULT_RETRIES,
                    pattern: None,
                });
            }
            _ => {}
        }
        let Some(rest) = text.strip_prefix("RETRY-") else {
            return Err(format!("`{text}` is not an on-failure action"));
        };
        // After `RETRY-`, a token of digits is the count; the rest, dashes included, is the regex.
        let (count_text, pattern) = match rest.split_once('-') {
            Some((head, tail)) if is_digits(head) => (Some(head), Some(tail)),
            None if is_digits(rest) => (Some(rest), None),
            _ => (None, Some(rest)),
        };
        let count = match count_text {
            None => DEFAULT_RETRIES,
            Some(digits) => match digits.parse::<u32>() {
                Ok(n) if n <= MAX_RETRIES => n,
                _ => {
                    return Err(format!(
                        "retry count `{digits}` is over the limit of {MAX_RETRIES}"
                    ));
                }
            },
        };
        let pattern = match pattern {
            None => None,
            Some("") => return Err("`RETRY-` must be followed by a count or a regex".to_string()),
            Some(p) => {
                if let Err(e) = regex::Regex::new(p) {
                    let text = e.to_string();
                    let last = text.lines().last().unwrap_or("").trim();
                    let first = last.strip_prefix("error: ").unwrap_or(last);
                    return Err(format!("the retry regex `{p}` is invalid: {first}"));
                }
                Some(p.to_string())
            }
        };
        Ok(OnFailure::Retry { count, pattern })
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(count: u32, pattern: Option<&str>) -> OnFailure {
        OnFailure::Retry {
            count,
            pattern: pattern.map(str::to_string),
        }
    }

    #[test]
    fn every_documented_form() {
        assert_eq!(OnFailure::parse("ABORT"), Ok(OnFailure::Abort));
        assert_eq!(OnFailure::parse("CONTINUE"), Ok(OnFailure::Continue));
        assert_eq!(OnFailure::parse("RETRY"), Ok(retry(3, None)));
        assert_eq!(OnFailure::parse("RETRY-5"), Ok(retry(5, None)));
        assert_eq!(OnFailure::parse("RETRY-0"), Ok(retry(0, None)));
        assert_eq!(OnFailure::parse("RETRY-100"), Ok(retry(100, None)));
        assert_eq!(
            OnFailure::parse("RETRY-.*Error: Unable to connect to database.*"),
            Ok(retry(3, Some(".*Error: Unable to connect to database.*")))
        );
        assert_eq!(
            OnFailure::parse("RETRY-invalid+"),
            Ok(retry(3, Some("invalid+")))
        );
        assert_eq!(
            OnFailure::parse("RETRY-3-.*connection timed out.*"),
            Ok(retry(3, Some(".*connection timed out.*")))
        );
        assert_eq!(
            OnFailure::parse("RETRY-8-invalid+"),
            Ok(retry(8, Some("invalid+")))
        );
        assert_eq!(OnFailure::parse("RETRY-2-a-b"), Ok(retry(2, Some("a-b"))));
    }

    #[test]
    fn bad_forms_say_why() {
        assert!(OnFailure::parse("abort").is_err());
        assert!(OnFailure::parse("RETRY-101").unwrap_err().contains("limit"));
        assert!(OnFailure::parse("RETRY-").is_err());
        assert!(OnFailure::parse("RETRY-2-").is_err());
        assert!(
            OnFailure::parse("RETRY-(unclosed")
                .unwrap_err()
                .contains("invalid")
        );
    }
}
