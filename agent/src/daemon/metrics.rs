//! The daemon's Prometheus metrics, kept in memory and rendered in the text exposition format
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>) for `GET /metrics`.
//!
//! Recording is cheap enough to do on every poll: scalars are atomics, and labelled series
//! share one mutex that is held only while a number changes. Rendering copies the labelled
//! series out first so a slow scrape never holds up the workers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::result::JobStatus;

/// The Content-Type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds, in seconds, of `agent_job_duration_seconds`; spans quick checks to hour-long
/// builds.
pub const JOB_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Upper bounds, in seconds, of `agent_poll_latency_seconds`; long polls (SQS waits up to
/// 20 s) land in the upper buckets, a struggling endpoint shows in the lower ones.
pub const POLL_LATENCY_BUCKETS: &[f64] =
    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];

pub struct Metrics {
    version: String,
    start_time: f64,
    running: AtomicU64,
    uploaded_bytes: AtomicU64,
    own_uploads: Option<fn() -> u64>,
    /// The config's `agent.labels`.
    labels: std::sync::Mutex<BTreeMap<String, String>>,
    draining: AtomicBool,
    capacity: AtomicU64,
    labelled: Mutex<Labelled>,
}

#[derive(Clone, Default)]
struct Labelled {
    /// kind → status → count.
    jobs: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// kind → durations.
    job_durations: BTreeMap<String, Histogram>,
    /// source → latencies.
    poll_latency: BTreeMap<String, Histogram>,
    /// source → outcome → count.
    polls: BTreeMap<String, BTreeMap<&'static str, u64>>,
    poll_errors: BTreeMap<String, u64>,
    rejected: BTreeMap<String, u64>,
    source_up: BTreeMap<String, bool>,
}

#[derive(Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative (one slot per finite bound); the `+Inf` bucket
    /// is `count`.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        // `le` is inclusive: an observation equal to a bound belongs to that bucket.
        if let Some(i) = self.bounds.iter().position(|bound| value <= *bound)
            && let Some(slot) = self.buckets.get_mut(i)
        {
            *slot += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

impl Metrics {
    /// `version` is reported as `agent_build_info{version}`; the start time is now.
    pub fn new(version: impl Into<String>) -> Self {
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        Metrics {
            version: version.into(),
            start_time,
            running: AtomicU64::new(0),
            uploaded_bytes: AtomicU64::new(0),
            own_uploads: None,
            labels: std::sync::Mutex::new(BTreeMap::new()),
            draining: AtomicBool::new(false),
            capacity: AtomicU64::new(0),
            labelled: Mutex::new(Labelled::default()),
        }
    }

    fn labelled(&self) -> MutexGuard<'_, Labelled> {
        // A panic elsewhere while holding the lock leaves at worst one half-counted event;
        // losing every metric after it would be worse.
        self.labelled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A job ran to a result (any status, `REJECTED` included).
    pub fn job_finished(&self, kind: &str, status: JobStatus, duration: Duration) {
        let mut labelled = self.labelled();
        *entry(&mut labelled.jobs, kind)
            .entry(status.as_str())
            .or_insert(0) += 1;
        entry_with(&mut labelled.job_durations, kind, || {
            Histogram::new(JOB_DURATION_BUCKETS)
        })
        .observe(duration.as_secs_f64());
    }

    pub fn job_started(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    pub fn job_ended(&self) {
        // Saturating, so an unmatched call cannot wrap the gauge to 2^64.
        let _ = self
            .running
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// One poll of a source, however it ended. Also counts it in `agent_polls_total` by
    /// outcome (`job`, `empty`, `error`), so idle sources are told apart from failing ones.
    pub fn poll(&self, source: &str, latency: Duration, got_job: bool, error: bool) {
        let outcome = if error {
            "error"
        } else if got_job {
            "job"
        } else {
            "empty"
        };
        let mut labelled = self.labelled();
        entry_with(&mut labelled.poll_latency, source, || {
            Histogram::new(POLL_LATENCY_BUCKETS)
        })
        .observe(latency.as_secs_f64());
        *entry(&mut labelled.polls, source)
            .entry(outcome)
            .or_insert(0) += 1;
        // Created at zero on the first poll, so `rate()` sees the series before the first
        // error rather than only from it on.
        *entry(&mut labelled.poll_errors, source) += u64::from(error);
    }

    /// Counts this process's own uploads (CodePipeline outputs, results) too: the daemon's
    /// metrics do, a test's need not see what other tests in its process uploaded.
    pub fn with_own_uploads(mut self) -> Self {
        self.own_uploads = Some(crate::aws::uploaded::total);
        self
    }

    fn own_uploads(&self) -> u64 {
        self.own_uploads.map_or(0, |total| total())
    }

    pub fn bytes_uploaded(&self, n: u64) {
        self.uploaded_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// A message from `source` was not a job the agent would run.
    pub fn rejected(&self, source: &str) {
        *entry(&mut self.labelled().rejected, source) += 1;
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// How many jobs the agent runs at once.
    /// The agent's labels, one `agent_label{key,value}` sample each.
    pub fn set_labels(&self, labels: &BTreeMap<String, String>) {
        if let Ok(mut mine) = self.labels.lock() {
            mine.clone_from(labels);
        }
    }

    pub fn set_capacity(&self, n: usize) {
        self.capacity
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn set_source_healthy(&self, source: &str, healthy: bool) {
        *entry(&mut self.labelled().source_up, source) = healthy;
    }

    /// Every metric in the text exposition format; serve it as [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let labelled = self.labelled().clone();
        let mut out = String::with_capacity(4096);

        family(
            &mut out,
            "agent_build_info",
            "gauge",
            "The agent's version; always 1.",
        );
        sample(
            &mut out,
            "agent_build_info",
            &[("version", &self.version)],
            "1",
        );

        let labels = self.labels.lock().map(|l| l.clone()).unwrap_or_default();
        if !labels.is_empty() {
            family(
                &mut out,
                "agent_label",
                "gauge",
                "The agent's labels (`agent.labels`), one sample each; always 1.",
            );
            for (key, value) in &labels {
                sample(
                    &mut out,
                    "agent_label",
                    &[("key", key), ("value", value)],
                    "1",
                );
            }
        }

        family(
            &mut out,
            "agent_start_time_seconds",
            "gauge",
            "When the agent started, in seconds since the Unix epoch.",
        );
        sample(
            &mut out,
            "agent_start_time_seconds",
            &[],
            &float(self.start_time),
        );

        family(
            &mut out,
            "agent_jobs_total",
            "counter",
            "Jobs that reached a result, by kind and status.",
        );
        for (kind, statuses) in &labelled.jobs {
            for (status, n) in statuses {
                sample(
                    &mut out,
                    "agent_jobs_total",
                    &[("kind", kind), ("status", status)],
                    &n.to_string(),
                );
            }
        }

        family(
            &mut out,
            "agent_job_duration_seconds",
            "histogram",
            "How long jobs ran, by kind.",
        );
        for (kind, histogram) in &labelled.job_durations {
            render_histogram(
                &mut out,
                "agent_job_duration_seconds",
                ("kind", kind),
                histogram,
            );
        }

        family(&mut out, "agent_jobs_running", "gauge", "Jobs running now.");
        sample(
            &mut out,
            "agent_jobs_running",
            &[],
            &self.running.load(Ordering::Relaxed).to_string(),
        );

        family(
            &mut out,
            "agent_poll_latency_seconds",
            "histogram",
            "How long a poll of a job source took, by source.",
        );
        for (source, histogram) in &labelled.poll_latency {
            render_histogram(
                &mut out,
                "agent_poll_latency_seconds",
                ("source", source),
                histogram,
            );
        }

        family(
            &mut out,
            "agent_polls_total",
            "counter",
            "Polls of a job source, by source and outcome (job, empty, error).",
        );
        for (source, outcomes) in &labelled.polls {
            for (outcome, n) in outcomes {
                sample(
                    &mut out,
                    "agent_polls_total",
                    &[("source", source), ("outcome", outcome)],
                    &n.to_string(),
                );
            }
        }

        family(
            &mut out,
            "agent_poll_errors_total",
            "counter",
            "Polls of a job source that failed, by source.",
        );
        for (source, n) in &labelled.poll_errors {
            sample(
                &mut out,
                "agent_poll_errors_total",
                &[("source", source)],
                &n.to_string(),
            );
        }

        family(
            &mut out,
            "agent_jobs_rejected_total",
            "counter",
            "Messages that were not a job the agent would run, by source.",
        );
        for (source, n) in &labelled.rejected {
            sample(
                &mut out,
                "agent_jobs_rejected_total",
                &[("source", source)],
                &n.to_string(),
            );
        }

        family(
            &mut out,
            "agent_uploaded_bytes_total",
            "counter",
            "Bytes uploaded to S3: jobs' artifacts, logs and cache, CodePipeline outputs, results.",
        );
        sample(
            &mut out,
            "agent_uploaded_bytes_total",
            &[],
            // The jobs' uploads, reported in their summaries, and the agent's own.
            &(self.uploaded_bytes.load(Ordering::Relaxed) + self.own_uploads()).to_string(),
        );

        family(
            &mut out,
            "agent_draining",
            "gauge",
            "1 while the agent finishes its jobs and takes no new ones.",
        );
        sample(
            &mut out,
            "agent_draining",
            &[],
            if self.draining.load(Ordering::Relaxed) {
                "1"
            } else {
                "0"
            },
        );

        family(
            &mut out,
            "agent_concurrency",
            "gauge",
            "How many jobs the agent runs at once.",
        );
        sample(
            &mut out,
            "agent_concurrency",
            &[],
            &self.capacity.load(Ordering::Relaxed).to_string(),
        );

        family(
            &mut out,
            "agent_source_up",
            "gauge",
            "1 when the job source's last poll succeeded, by source.",
        );
        for (source, up) in &labelled.source_up {
            sample(
                &mut out,
                "agent_source_up",
                &[("source", source)],
                if *up { "1" } else { "0" },
            );
        }

        out
    }
}

/// The map's value for `key`, inserted as the default when absent.
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    entry_with(map, key, V::default)
}

fn entry_with<'m, V>(
    map: &'m mut BTreeMap<String, V>,
    key: &str,
    new: impl FnOnce() -> V,
) -> &'m mut V {
    map.entry(key.to_string()).or_insert_with(new)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

fn render_histogram(out: &mut String, name: &str, label: (&str, &str), histogram: &Histogram) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (bound, n) in histogram.bounds.iter().zip(&histogram.buckets) {
        cumulative += n;
        sample(
            out,
            &bucket,
            &[label, ("le", &float(*bound))],
            &cumulative.to_string(),
        );
    }
    let count = histogram.count.to_string();
    sample(out, &bucket, &[label, ("le", "+Inf")], &count);
    sample(out, &format!("{name}_sum"), &[label], &float(histogram.sum));
    sample(out, &format!("{name}_count"), &[label], &count);
}

/// A float as Prometheus parses it: Rust's shortest round-trip form, with the spellings of
/// the infinities and NaN that the format requires.
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        value.to_string()
    }
}

fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// HELP text escapes only the backslash and the line feed; a quote stays as it is.
fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
pub(crate) mod exposition {
    //! A small checker of the text exposition format, strict enough to catch what a
    //! Prometheus scrape would refuse.

    use std::collections::{BTreeMap, BTreeSet};

    type Labels = Vec<(String, String)>;

    #[derive(Debug, Clone, PartialEq)]
    pub struct Sample {
        pub name: String,
        pub labels: Labels,
        pub value: f64,
    }

    /// Parses the exposition; errors name the line.
    pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("the exposition must end with a line feed".into());
        }
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut helped: BTreeSet<String> = BTreeSet::new();
        let mut samples = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut parts = comment.trim_start().splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        check_name(name).map_err(|e| format!("line {n}: {e}"))?;
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(format!("line {n}: unknown type {kind:?}"));
                        }
                        if types.insert(name.to_string(), kind.to_string()).is_some() {
                            return Err(format!("line {n}: second TYPE for {name}"));
                        }
                        if samples
                            .iter()
                            .any(|s: &Sample| family_of(&s.name, &types) == name)
                        {
                            return Err(format!("line {n}: TYPE for {name} after its samples"));
                        }
                    }
                    (Some("HELP"), Some(name), _) => {
                        check_name(name).map_err(|e| format!("line {n}: {e}"))?;
                        if !helped.insert(name.to_string()) {
                            return Err(format!("line {n}: second HELP for {name}"));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let sample = parse_sample(line).map_err(|e| format!("line {n}: {e}: {line:?}"))?;
            let family = family_of(&sample.name, &types);
            match types.get(family).map(String::as_str) {
                None => return Err(format!("line {n}: {} has no TYPE", sample.name)),
                Some("histogram") => {
                    let has_le = sample.labels.iter().any(|(k, _)| k == "le");
                    if sample.name.ends_with("_bucket") != has_le {
                        return Err(format!("line {n}: `le` belongs on _bucket samples only"));
                    }
                }
                Some(_) => {
                    if family != sample.name {
                        return Err(format!("line {n}: {} is not its family", sample.name));
                    }
                }
            }
            if samples.contains(&sample) {
                return Err(format!("line {n}: duplicate sample"));
            }
            samples.push(sample);
        }
        check_histograms(&samples, &types)?;
        Ok(samples)
    }

    /// The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` samples
    /// belong to the histogram.
    fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && types.get(base).is_some_and(|t| t == "histogram")
            {
                return base;
            }
        }
        name
    }

    /// Buckets are cumulative, end at `+Inf`, and `+Inf` equals `_count`.
    fn check_histograms(
        samples: &[Sample],
        types: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
            let bucket = format!("{family}_bucket");
            let count = format!("{family}_count");
            let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for s in samples.iter().filter(|s| s.name == bucket) {
                let le = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| parse_value(v))
                    .ok_or("bucket without le")??;
                let rest = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .cloned()
                    .collect();
                series.entry(rest).or_default().push((le, s.value));
            }
            for (labels, buckets) in series {
                let mut last = (f64::NEG_INFINITY, 0.0);
                for &(le, value) in &buckets {
                    if le <= last.0 || value < last.1 {
                        return Err(format!("{family}{labels:?}: buckets not cumulative"));
                    }
                    last = (le, value);
                }
                if last.0 != f64::INFINITY {
                    return Err(format!("{family}{labels:?}: no +Inf bucket"));
                }
                let total = samples
                    .iter()
                    .find(|s| s.name == count && s.labels == labels)
                    .ok_or_else(|| format!("{family}{labels:?}: no _count"))?;
                if total.value != last.1 {
                    return Err(format!("{family}{labels:?}: +Inf bucket is not _count"));
                }
            }
        }
        Ok(())
    }

    fn check_name(name: &str) -> Result<(), String> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
        if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            Ok(())
        } else {
            Err(format!("bad metric name {name:?}"))
        }
    }

    fn parse_value(text: &str) -> Result<f64, String> {
        match text {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ if text.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') => {
                Err(format!("bad value {text:?}"))
            }
            _ => text.parse().map_err(|_| format!("bad value {text:?}")),
        }
    }

    fn parse_sample(line: &str) -> Result<Sample, String> {
        let name_end = line.find(['{', ' ']).ok_or("no value")?;
        let (name, mut rest) = line.split_at(name_end);
        check_name(name)?;
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = after;
            loop {
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = rest.find('=').ok_or("label without =")?;
                let label = &rest[..eq];
                let first_ok = label
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
                if !first_ok || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("bad label name {label:?}"));
                }
                if labels.iter().any(|(k, _)| k == label) {
                    return Err(format!("label {label} twice"));
                }
                rest = rest[eq + 1..]
                    .strip_prefix('"')
                    .ok_or("label value not quoted")?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        None => return Err("unterminated label value".into()),
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(format!("bad escape {other:?}")),
                        },
                        Some((_, '\n')) => return Err("raw line feed in label".into()),
                        Some((_, c)) => value.push(c),
                    }
                };
                labels.push((label.to_string(), value));
                rest = &rest[end + 1..];
                if let Some(after) = rest.strip_prefix(',') {
                    rest = after;
                } else if !rest.starts_with('}') {
                    return Err("expected , or } after a label".into());
                }
            }
        }
        let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().ok_or("no value")?)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
        }
        if fields.next().is_some() {
            return Err("trailing fields".into());
        }
        Ok(Sample {
            name: name.to_string(),
            labels,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::exposition::parse;
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn an_idle_agent_renders_every_family_and_parses() {
        let metrics = Metrics::new("1.2.3");
        let text = metrics.render();
        let samples = parse(&text).unwrap();
        assert!(lines(&text).contains(&r#"agent_build_info{version="1.2.3"} 1"#));
        assert!(lines(&text).contains(&"agent_jobs_running 0"));
        assert!(lines(&text).contains(&"agent_uploaded_bytes_total 0"));
        assert!(lines(&text).contains(&"agent_draining 0"));
        assert!(lines(&text).contains(&"# TYPE agent_job_duration_seconds histogram"));
        let start = samples
            .iter()
            .find(|s| s.name == "agent_start_time_seconds")
            .unwrap();
        assert!(start.value > 1.6e9, "{start:?}");
    }

    #[test]
    fn jobs_count_by_kind_and_status_with_cumulative_durations() {
        let metrics = Metrics::new("0.1.0");
        metrics.job_finished("build", JobStatus::Succeeded, Duration::from_secs(3));
        metrics.job_finished("build", JobStatus::Succeeded, Duration::from_secs(5));
        metrics.job_finished("build", JobStatus::Failed, Duration::from_secs(4000));
        metrics.job_finished("deploy", JobStatus::TimedOut, Duration::from_millis(500));
        let text = metrics.render();
        parse(&text).unwrap();
        let l = lines(&text);
        for want in [
            r#"agent_jobs_total{kind="build",status="FAILED"} 1"#,
            r#"agent_jobs_total{kind="build",status="SUCCEEDED"} 2"#,
            r#"agent_jobs_total{kind="deploy",status="TIMED_OUT"} 1"#,
            r#"agent_job_duration_seconds_bucket{kind="build",le="1"} 0"#,
            // 5 s lands in le="5": the bound is inclusive.
            r#"agent_job_duration_seconds_bucket{kind="build",le="5"} 2"#,
            r#"agent_job_duration_seconds_bucket{kind="build",le="3600"} 2"#,
            r#"agent_job_duration_seconds_bucket{kind="build",le="+Inf"} 3"#,
            r#"agent_job_duration_seconds_sum{kind="build"} 4008"#,
            r#"agent_job_duration_seconds_count{kind="build"} 3"#,
            r#"agent_job_duration_seconds_bucket{kind="deploy",le="1"} 1"#,
            r#"agent_job_duration_seconds_sum{kind="deploy"} 0.5"#,
        ] {
            assert!(l.contains(&want), "missing {want}\n{text}");
        }
        let buckets: Vec<_> = l
            .iter()
            .filter(|s| s.starts_with(r#"agent_job_duration_seconds_bucket{kind="build""#))
            .collect();
        assert_eq!(buckets.len(), JOB_DURATION_BUCKETS.len() + 1);
    }

    #[test]
    fn polls_record_latency_outcome_and_errors() {
        let metrics = Metrics::new("0.1.0");
        metrics.poll("sqs:jobs", Duration::from_millis(30), true, false);
        metrics.poll("sqs:jobs", Duration::from_secs(20), false, false);
        metrics.poll("spool", Duration::from_millis(1), false, true);
        let text = metrics.render();
        parse(&text).unwrap();
        let l = lines(&text);
        for want in [
            r#"agent_poll_latency_seconds_bucket{source="sqs:jobs",le="0.01"} 0"#,
            r#"agent_poll_latency_seconds_bucket{source="sqs:jobs",le="0.05"} 1"#,
            r#"agent_poll_latency_seconds_bucket{source="sqs:jobs",le="10"} 1"#,
            r#"agent_poll_latency_seconds_bucket{source="sqs:jobs",le="20"} 2"#,
            r#"agent_poll_latency_seconds_bucket{source="sqs:jobs",le="+Inf"} 2"#,
            r#"agent_poll_latency_seconds_count{source="sqs:jobs"} 2"#,
            r#"agent_poll_latency_seconds_bucket{source="spool",le="0.01"} 1"#,
            r#"agent_polls_total{source="sqs:jobs",outcome="job"} 1"#,
            r#"agent_polls_total{source="sqs:jobs",outcome="empty"} 1"#,
            r#"agent_polls_total{source="spool",outcome="error"} 1"#,
            r#"agent_poll_errors_total{source="sqs:jobs"} 0"#,
            r#"agent_poll_errors_total{source="spool"} 1"#,
        ] {
            assert!(l.contains(&want), "missing {want}\n{text}");
        }
    }

    #[test]
    fn gauges_and_counters_follow_the_daemon() {
        let metrics = Metrics::new("0.1.0");
        metrics.job_started();
        metrics.job_started();
        metrics.job_ended();
        metrics.bytes_uploaded(1000);
        metrics.bytes_uploaded(24);
        metrics.rejected("spool");
        metrics.rejected("spool");
        metrics.set_draining(true);
        metrics.set_capacity(4);
        metrics.set_source_healthy("spool", true);
        metrics.set_source_healthy("sqs:jobs", false);
        let text = metrics.render();
        parse(&text).unwrap();
        let l = lines(&text);
        for want in [
            "agent_jobs_running 1",
            "agent_uploaded_bytes_total 1024",
            r#"agent_jobs_rejected_total{source="spool"} 2"#,
            "agent_draining 1",
            "agent_concurrency 4",
            r#"agent_source_up{source="spool"} 1"#,
            r#"agent_source_up{source="sqs:jobs"} 0"#,
        ] {
            assert!(l.contains(&want), "missing {want}\n{text}");
        }
        metrics.job_ended();
        metrics.job_ended();
        assert!(lines(&metrics.render()).contains(&"agent_jobs_running 0"));
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new("v\"1\\\n");
        metrics.rejected("a\"b\\c\nd");
        let text = metrics.render();
        let l = lines(&text);
        assert!(
            l.contains(&r#"agent_build_info{version="v\"1\\\n"} 1"#),
            "{text}"
        );
        assert!(l.contains(&r#"agent_jobs_rejected_total{source="a\"b\\c\nd"} 1"#));
        let samples = parse(&text).unwrap();
        let rejected = samples
            .iter()
            .find(|s| s.name == "agent_jobs_rejected_total")
            .unwrap();
        assert_eq!(rejected.labels, [("source".into(), "a\"b\\c\nd".into())]);
    }

    #[test]
    fn recording_from_many_threads_loses_nothing() {
        let metrics = std::sync::Arc::new(Metrics::new("0.1.0"));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let metrics = std::sync::Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        metrics.poll("s", Duration::from_millis(2), false, false);
                        metrics.bytes_uploaded(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let l = metrics.render();
        assert!(lines(&l).contains(&r#"agent_poll_latency_seconds_count{source="s"} 8000"#));
        assert!(lines(&l).contains(&"agent_uploaded_bytes_total 8000"));
    }

    #[test]
    fn the_checker_refuses_what_prometheus_would() {
        for bad in [
            "x 1\n",                                   // no TYPE
            "# TYPE x counter\nx{a=\"b} 1\n",          // unterminated
            "# TYPE x counter\nx{a=b} 1\n",            // unquoted
            "# TYPE x counter\nx{a=\"\\t\"} 1\n",      // bad escape
            "# TYPE x counter\nx one\n",               // bad value
            "# TYPE x counter\nx 1",                   // no final line feed
            "# TYPE x counter\nx{1a=\"\"} 1\n",        // bad label name
            "# TYPE x counter\n# TYPE x gauge\nx 1\n", // TYPE twice
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n", // no +Inf
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        parse("# HELP x a \\\\ help\n# TYPE x gauge\nx{a=\"\",b=\"\\n\"} -1.5e3 1700000000\n")
            .unwrap();
    }
}
