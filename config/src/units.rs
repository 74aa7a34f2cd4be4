//! The numbers an operator gives the agent, on the command line and in the config: a
//! build's time limit, a container's memory and CPUs, its process limit. One parser and one
//! range for each, shared by `run-local`'s flags and the config, so that a value one accepts
//! the other accepts too, and none silently removes a limit or overflows.

use std::time::Duration;

use crate::values::{format_duration, parse_duration};

/// The shortest build time limit.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest build time limit: CodeBuild's maximum, 36 hours.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(36 * 3600);
/// Docker's smallest memory limit, 6 MiB.
pub const MIN_MEMORY: u64 = 6 << 20;
/// The largest memory limit: 1 PiB, far beyond any host, and well inside what Docker's
/// signed 64-bit field holds.
pub const MAX_MEMORY: u64 = 1 << 50;
/// Docker's smallest CPU share.
pub const MIN_CPUS: f64 = 0.01;
/// The most CPUs a build may be given.
pub const MAX_CPUS: f64 = 1024.0;
/// The fewest processes a build can run with (a shell and a build tool).
pub const MIN_PIDS: i64 = 16;
/// The most processes Linux allows (`pid_max`'s limit).
pub const MAX_PIDS: i64 = 4_194_304;

/// A build's time limit as `run-local --timeout` takes it: `90m`, `30s`, `2h`, `1h30m`, or
/// a bare number of minutes as CodeBuild counts them; between 1 second and 36 hours.
pub fn parse_timeout_minutes(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let duration = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let minutes: u64 = trimmed.parse().map_err(|_| too_long(text))?;
        Duration::from_secs(minutes.checked_mul(60).ok_or_else(|| too_long(text))?)
    } else {
        parse_duration(trimmed).map_err(|_| {
            format!("`{text}` is not a duration like 90m, 30s, 1h30m, or a number of minutes")
        })?
    };
    check_timeout(duration).map_err(|e| format!("`{text}`: {e}"))
}

fn too_long(text: &str) -> String {
    format!(
        "`{text}`: a build's time limit is at most 36h (CodeBuild's maximum), {} minutes",
        MAX_TIMEOUT.as_secs() / 60
    )
}

/// Whether `duration` is a build time limit the agent accepts: 1 second to 36 hours.
pub fn check_timeout(duration: Duration) -> Result<Duration, String> {
    if duration < MIN_TIMEOUT {
        Err("a build's time limit is at least 1s".into())
    } else if duration > MAX_TIMEOUT {
        Err(format!(
            "{} is longer than 36h, CodeBuild's maximum for a build's time limit",
            format_duration(duration)
        ))
    } else {
        Ok(duration)
    }
}

/// A time limit in words for the build log: `5 seconds`, `1 minute`, `90 minutes`, `1m30s`.
pub fn describe_timeout(duration: Duration) -> String {
    let secs = duration.as_secs();
    match (secs / 60, secs % 60) {
        (0, 1) => "1 second".into(),
        (0, s) => format!("{s} seconds"),
        (1, 0) => "1 minute".into(),
        (m, 0) => format!("{m} minutes"),
        _ => format_duration(duration),
    }
}

/// A memory limit: `4g`, `512m`, `1024k` or a number of bytes; 6 MiB (Docker's minimum) to
/// 1 PiB.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let digits = text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let is_number = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let bytes = crate::values::parse_size(text.trim()).map_err(|e| {
        // Digits and a unit that do not fit in 64 bits are a size too large, not a typo.
        if e.contains("too large") || (is_number && digits.parse::<u64>().is_err()) {
            format!("`{text}`: a memory limit is at most 1024t")
        } else {
            format!("`{text}` is not a size like 4g, 512m or a number of bytes")
        }
    })?;
    check_memory(bytes).map_err(|e| format!("`{text}`: {e}"))
}

/// Whether `bytes` is a memory limit the agent accepts.
pub fn check_memory(bytes: u64) -> Result<u64, String> {
    if bytes < MIN_MEMORY {
        Err("a memory limit is at least 6m (Docker refuses less)".into())
    } else if bytes > MAX_MEMORY {
        Err("a memory limit is at most 1024t".into())
    } else {
        Ok(bytes)
    }
}

/// A CPU count: `2`, `0.5`; finite, from 0.01 to 1024.
pub fn parse_cpus(text: &str) -> Result<f64, String> {
    let n: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of CPUs like 2 or 0.5"))?;
    check_cpus(n).map_err(|e| format!("`{text}`: {e}"))
}

/// Whether `n` is a CPU count the agent accepts.
pub fn check_cpus(n: f64) -> Result<f64, String> {
    if n.is_finite() && (MIN_CPUS..=MAX_CPUS).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "a number of CPUs is between {MIN_CPUS} and {MAX_CPUS}"
        ))
    }
}

/// A process limit: a whole number from 16 to 4194304.
pub fn parse_pids(text: &str) -> Result<i64, String> {
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of processes like 4096"))?;
    check_pids(n).map_err(|e| format!("`{text}`: {e}"))
}

/// Whether `n` is a process limit the agent accepts.
pub fn check_pids(n: i64) -> Result<i64, String> {
    if (MIN_PIDS..=MAX_PIDS).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "a process limit is between {MIN_PIDS} and {MAX_PIDS} (fewer cannot run a shell and a build tool; 0 or less would remove the limit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout_minutes("90"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_timeout_minutes("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(
            parse_timeout_minutes("1h30m"),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(parse_timeout_minutes("36h"), Ok(MAX_TIMEOUT));
        for bad in [
            "soon",
            "10x",
            "0s",
            "0",
            "37h",
            "2161",
            "99999999999999999999",
            "18446744073709551615m",
            "-5",
        ] {
            assert!(parse_timeout_minutes(bad).is_err(), "{bad}");
        }
        assert!(
            parse_timeout_minutes("37h")
                .unwrap_err()
                .contains("CodeBuild's maximum")
        );
        assert_eq!(describe_timeout(Duration::from_secs(5)), "5 seconds");
        assert_eq!(describe_timeout(Duration::from_secs(60)), "1 minute");
        assert_eq!(describe_timeout(Duration::from_secs(5400)), "90 minutes");
        assert_eq!(describe_timeout(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn memory_cpus_and_pids() {
        assert_eq!(parse_memory("4g"), Ok(4 << 30));
        assert_eq!(parse_memory("6m"), Ok(6 << 20));
        for bad in [
            "lots",
            "5m",
            "0",
            "99999999999999999999g",
            "16777216t",
            "-1g",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        for bad in ["0", "NaN", "inf", "-1", "1025", "0.001", "two"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_pids("4096"), Ok(4096));
        for bad in ["0", "-1", "15", "99999999", "many"] {
            assert!(parse_pids(bad).is_err(), "{bad}");
        }
    }
}
