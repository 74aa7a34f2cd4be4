//! The value forms shared by the config file and job messages: durations, sizes, S3 URLs,
//! web URLs, names and paths. Each parser says what is wrong in words an operator can act on.

use std::borrow::Cow;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `30s`, `15m`, `2h`, `1h30m`, or a bare number of seconds.
///
/// A bare number is seconds here, unlike `run-local --timeout` where it is minutes as in
/// CodeBuild: config files and job messages are written by programs as often as by people,
/// and seconds are what programs count in.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration like `30s`, `15m`, `2h` or `1h30m`");
    if text.is_empty() || text.trim() != text {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut last_unit = u64::MAX;
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        // `30s1h` or `1m1m` are more likely slips than intent.
        if number.is_empty() || unit >= last_unit {
            return Err(bad());
        }
        last_unit = unit;
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The shortest form [`parse_duration`] reads back: `1h30m`, `45s`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (n, letter) in [(secs / 3600, 'h'), (secs / 60 % 60, 'm'), (secs % 60, 's')] {
        if n > 0 {
            out.push_str(&format!("{n}{letter}"));
        }
    }
    out
}

/// `4g`, `512m`, `1024k` (binary units, as Docker counts them, an optional `b` after the
/// unit, any case) or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a size like `4g`, `512m` or a number of bytes");
    let lower = text.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large a size"))
}

/// The shortest form [`parse_size`] reads back: `4g`, `1536m`, `100`.
pub fn format_size(bytes: u64) -> String {
    for (shift, letter) in [(40, 't'), (30, 'g'), (20, 'm'), (10, 'k')] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{letter}", bytes >> shift);
        }
    }
    bytes.to_string()
}

pub(crate) fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

pub(crate) fn serialize_option_duration<S: Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

pub(crate) fn serialize_size<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_size(*bytes))
}

/// How a duration is written, for the JSON Schema.
pub(crate) struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: `30s`, `15m`, `2h`, `1h30m` (units in decreasing order), or a bare number of seconds.",
            "anyOf": [
                {"type": "string", "pattern": "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$|^[0-9]+$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

/// How a size is written, for the JSON Schema.
pub(crate) struct SizeText;

impl JsonSchema for SizeText {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: `4g`, `512m`, `1024k` (binary units, optional `b`, any case), or a bare number of bytes.",
            "anyOf": [
                {"type": "string", "pattern": "^[0-9]+([kKmMgGtT][bB]?)?$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

/// A string or a number taken as the text written, so the checks after parsing can say
/// what is wrong with it instead of failing on its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An `s3://bucket[/key]` location. The key is kept as written: a job's source may name an
/// object (`s3://b/app.zip`) or a prefix (`s3://b/revisions/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl S3Url {
    pub fn parse(text: &str) -> Result<S3Url, String> {
        let rest = text.strip_prefix("s3://").ok_or_else(|| {
            format!("`{text}` is not an S3 URL; write it as `s3://bucket/prefix`")
        })?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket_name(bucket)?;
        if key.len() > 1024 {
            return Err("the S3 key is longer than 1024 bytes".to_string());
        }
        if key.chars().any(char::is_control) {
            return Err(format!(
                "`{}` holds a control character",
                text.escape_debug()
            ));
        }
        if key.starts_with('/') || key.contains("//") {
            return Err(format!(
                "`{text}` has an empty path segment (`//`); S3 tools disagree on what that means"
            ));
        }
        if key.split('/').any(|s| s == "." || s == "..") {
            return Err(format!(
                "`{text}` has a `.` or `..` segment, which would land outside the prefix once downloaded"
            ));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The key without a trailing `/`: where objects go under this location.
    pub fn prefix(&self) -> &str {
        self.key.trim_end_matches('/')
    }

    /// A prefix (nothing or ending in `/`) rather than one object.
    pub fn is_prefix(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.key)
        }
    }
}

impl Serialize for S3Url {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for S3Url {
    fn schema_name() -> Cow<'static, str> {
        "S3Url".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An S3 location: `s3://bucket` or `s3://bucket/prefix`.",
            "type": "string",
            "pattern": "^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
        })
    }
}

/// S3's rules for general purpose bucket names. Legacy names with capitals or underscores
/// are refused: they do not work with virtual-hosted addressing.
pub fn check_bucket_name(bucket: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("`{bucket}` is not a valid S3 bucket name: {why}"));
    if bucket.is_empty() {
        return Err("the S3 URL names no bucket".to_string());
    }
    if !(3..=63).contains(&bucket.len()) {
        return fail("it must be 3 to 63 characters long");
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return fail("only lowercase letters, digits, `.` and `-` are allowed");
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge_ok(bucket.bytes().next()) || !edge_ok(bucket.bytes().last()) {
        return fail("it must begin and end with a letter or digit");
    }
    if bucket.contains("..") {
        return fail("it must not hold two periods in a row");
    }
    if bucket.split('.').count() == 4 && bucket.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return fail("it must not look like an IP address");
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if bucket.starts_with(prefix) {
            return fail(&format!("the prefix `{prefix}` is reserved"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if bucket.ends_with(suffix) {
            return fail(&format!("the suffix `{suffix}` is reserved"));
        }
    }
    Ok(())
}

/// The parts of an `http(s)://` URL that the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebUrl<'t> {
    pub scheme: &'t str,
    pub host: &'t str,
    pub path: &'t str,
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host
            .strip_prefix("127.")
            .is_some_and(|rest| rest.split('.').all(|p| p.parse::<u8>().is_ok()))
}

/// An `https://` URL, or `http://` when `plain_http` is `Anywhere` or the host is on this
/// machine. Credentials in the URL are refused: job messages and configs get logged.
pub(crate) fn parse_web_url(text: &str, plain_http: PlainHttp) -> Result<WebUrl<'_>, String> {
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}` holds whitespace or a control character",
            text.escape_debug()
        ));
    }
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("`{text}` is not a URL like `https://host/path`"))?;
    if scheme != "https" && scheme != "http" {
        return Err(format!("`{text}` must start with `https://`"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(format!(
            "`{text}` carries credentials; they would show up in logs"
        ));
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty() && inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && !host.starts_with(['.', '-'])
    };
    if !host_ok {
        return Err(format!("`{text}` has no valid host name"));
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(format!("`{text}` has an invalid port `{port}`"));
    }
    if scheme == "http" && plain_http == PlainHttp::LoopbackOnly && !is_loopback(host) {
        return Err(format!(
            "`{text}` uses plain http to another machine; use https"
        ));
    }
    Ok(WebUrl { scheme, host, path })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlainHttp {
    Anywhere,
    LoopbackOnly,
}

/// A repository URL git can clone without running anything: `https://`, `ssh://`, the scp
/// form `git@host:org/repo.git`, or `file:///absolute/path` (which the config must allow
/// separately, see [`git_file_path`]). `ext::` and a leading `-` are refused because git
/// would run a command.
pub(crate) fn check_git_url(text: &str) -> Result<(), String> {
    if text.starts_with('-') {
        return Err(format!(
            "`{text}` starts with `-`, which git reads as an option"
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}` holds whitespace or a control character",
            text.escape_debug()
        ));
    }
    if text.starts_with("https://") || text.starts_with("http://") {
        return parse_web_url(text, PlainHttp::LoopbackOnly).map(|_| ());
    }
    if text.starts_with("file:") {
        return git_file_path(text).map(|_| ());
    }
    if let Some(rest) = text.strip_prefix("ssh://") {
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        let host = host.split(':').next().unwrap_or("");
        if host.is_empty() || !rest.contains('/') {
            return Err(format!("`{text}` is not an `ssh://host/path` URL"));
        }
        return Ok(());
    }
    if text.contains("://") || text.contains("::") {
        let scheme = text.split(':').next().unwrap_or("");
        return Err(format!(
            "git URLs of the form `{scheme}:` are not accepted; use https:// or ssh://"
        ));
    }
    // The scp form: [user@]host:path, with no slash before the colon.
    match text.split_once(':') {
        Some((host, path))
            if !host.is_empty()
                && !host.contains('/')
                && !path.is_empty()
                && !path.starts_with('-') =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{text}` is not a git URL; use `https://host/org/repo.git` or `git@host:org/repo.git`"
        )),
    }
}

/// The directory a `file:///path` git URL names: absolute, with no `.` or `..`.
pub fn git_file_path(url: &str) -> Result<PathBuf, String> {
    let Some(path) = url.strip_prefix("file://") else {
        return Err(format!("`{url}` is not a `file:///absolute/path` URL"));
    };
    if !path.starts_with('/') {
        return Err(format!(
            "`{url}` names no absolute path; write `file:///srv/git/repo.git`"
        ));
    }
    check_absolute_dir(path)
}

/// A branch, tag or commit that git reads as a revision and never as an option.
pub(crate) fn check_git_ref(text: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{}` is not a git ref: {why}", text.escape_debug()));
    if text.is_empty() {
        return bad("it is empty");
    }
    if text.len() > 255 {
        return bad("it is longer than 255 characters");
    }
    if text.starts_with('-') {
        return bad("it starts with `-`, which git reads as an option");
    }
    if text
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return bad("it holds a space, a control character or one of ~ ^ : ? * [ \\");
    }
    if text.contains("..") || text.contains("@{") || text.contains("//") {
        return bad("it holds `..`, `@{` or `//`");
    }
    if text.starts_with('/') || text.ends_with('/') || text.ends_with('.') {
        return bad("it starts or ends with `/`, or ends with `.`");
    }
    if text.ends_with(".lock") {
        return bad("it ends with `.lock`");
    }
    Ok(())
}

/// `[A-Za-z0-9._-]`, 1 to `max` characters, not `.` or `..`: safe as a file name, an S3 key
/// segment and a container label.
pub(crate) fn check_name(text: &str, max: usize) -> Result<(), String> {
    if text.is_empty() {
        return Err("it is empty".to_string());
    }
    if text.chars().count() > max {
        return Err(format!("it is longer than {max} characters"));
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{}` is not allowed; use letters, digits, `.`, `_` and `-`",
            c.escape_debug()
        ));
    }
    if text.chars().all(|c| c == '.') {
        return Err("it is only dots".to_string());
    }
    Ok(())
}

/// A label: the key as [`check_name`] (at most 63 characters, starting with a letter or
/// digit), the value at most 256 characters with no control characters.
pub(crate) fn check_label(key: &str, value: &str) -> Result<(), (bool, String)> {
    check_name(key, 63).map_err(|why| (true, format!("label key `{key}`: {why}")))?;
    if !key.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err((
            true,
            format!("label key `{key}` must start with a letter or digit"),
        ));
    }
    if value.chars().count() > 256 {
        return Err((
            false,
            format!("the value of label `{key}` is longer than 256 characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err((
            false,
            format!("the value of label `{key}` holds a control character"),
        ));
    }
    Ok(())
}

/// An absolute directory with no `.` or `..` in it, returned without a trailing slash.
pub(crate) fn check_absolute_dir(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("the path is empty".to_string());
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "`{}` holds a control character",
            text.escape_debug()
        ));
    }
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("`{text}` is not an absolute path"));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || text.split('/').any(|s| s == ".")
    {
        return Err(format!(
            "`{text}` holds `.` or `..`; write the directory it means"
        ));
    }
    Ok(path.components().collect())
}

/// A relative path inside a source tree: no leading `/`, no `.` or `..`, no empty segment.
pub(crate) fn check_relative_path(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the path is empty".to_string());
    }
    if text.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!(
            "`{}` holds a control character or a backslash",
            text.escape_debug()
        ));
    }
    if text.starts_with('/') {
        return Err(format!(
            "`{text}` is absolute; paths are relative to the source directory"
        ));
    }
    if text
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "`{text}` has an empty, `.` or `..` segment; it must stay inside the source"
        ));
    }
    Ok(())
}

/// An environment variable name as shells accept it.
pub(crate) fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`{}` is not a variable name; use letters, digits and `_`, not starting with a digit",
            name.escape_debug()
        ));
    }
    if name.starts_with("CODEBUILD_") {
        return Err(format!(
            "`{name}` starts with `CODEBUILD_`, which is reserved for the variables the agent sets"
        ));
    }
    Ok(())
}

/// STS's rule for `ExternalId`: 2 to 1224 characters of `[\w+=,.@:/-]`.
pub(crate) fn check_external_id(id: &str) -> Result<(), String> {
    let ok = (2..=1224).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("`{}` is not an external id", id.escape_debug()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_write_back() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", " 5m", "5x", "m", "30s1h", "1m1m", "5m3", "-5", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("99999999999999999999h").is_err());
        for secs in [0, 1, 59, 60, 61, 3600, 3661, 86400 * 3] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn sizes_read_and_write_back() {
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("4 g").is_err());
        assert!(parse_size("99999999999t").is_err());
        for n in [1, 1024, 1536 << 20, 4 << 30] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
    }

    #[test]
    fn s3_urls() {
        let url = S3Url::parse("s3://my-bucket/logs/").unwrap();
        assert_eq!(url.prefix(), "logs");
        assert!(url.is_prefix());
        assert_eq!(url.to_string(), "s3://my-bucket/logs/");
        assert!(!S3Url::parse("s3://b-1/app.zip").unwrap().is_prefix());
        for bad in [
            "https://b/x",
            "s3://",
            "s3://ab",
            "s3://Bucket",
            "s3://my_bucket",
            "s3://-bucket",
            "s3://a..b",
            "s3://192.168.1.1",
            "s3://xn--bucket",
            "s3://bucket--ol-s3",
            "s3://bucket//x",
            "s3://bucket/a/../b",
            "s3://bucket/a\nb",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn web_urls() {
        let ok = |t| parse_web_url(t, PlainHttp::LoopbackOnly).is_ok();
        assert!(ok("https://hooks.example.com/agent"));
        assert!(ok("http://127.0.0.1:5000/x"));
        assert!(ok("http://localhost/x"));
        assert!(ok("https://[::1]:8443/"));
        assert!(!ok("http://example.com/x"));
        assert!(!ok("https://user:pw@example.com/"));
        assert!(!ok("ftp://example.com/"));
        assert!(!ok("https://exa mple.com/"));
        assert!(!ok("https://example.com:99999/"));
        assert!(!ok("https:///path"));
    }

    #[test]
    fn git_urls_and_refs() {
        for good in [
            "https://github.com/org/repo.git",
            "ssh://git@github.com/org/repo.git",
            "git@github.com:org/repo.git",
            "file:///srv/git/repo.git",
        ] {
            assert_eq!(check_git_url(good), Ok(()), "{good}");
        }
        for bad in [
            "ext::sh -c touch% /tmp/pwned",
            "file://srv/repo",
            "file:///srv/git/../../etc",
            "file:/srv/repo",
            "ext::git-remote-x",
            "-uhttps://x",
            "git://example.com/repo",
            "https://token@github.com/org/repo",
            "/srv/repo",
        ] {
            assert!(check_git_url(bad).is_err(), "{bad}");
        }
        for good in ["main", "v1.2.3", "feature/x", "0123abcd"] {
            assert_eq!(check_git_ref(good), Ok(()));
        }
        for bad in [
            "--upload-pack=x",
            "a..b",
            "a b",
            "x.lock",
            "",
            "a/",
            "HEAD@{1}",
        ] {
            assert!(check_git_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_and_names() {
        assert_eq!(
            check_absolute_dir("/var/lib/agent/"),
            Ok("/var/lib/agent".into())
        );
        assert!(check_absolute_dir("var/lib").is_err());
        assert!(check_absolute_dir("/var/../etc").is_err());
        assert!(check_absolute_dir("/var/./lib").is_err());
        assert_eq!(check_relative_path("ci/buildspec.yml"), Ok(()));
        assert!(check_relative_path("../x").is_err());
        assert!(check_relative_path("/etc/passwd").is_err());
        assert!(check_relative_path("a//b").is_err());
        assert_eq!(check_name("job-1.a_b", 128), Ok(()));
        assert!(check_name("..", 128).is_err());
        assert!(check_name("a/b", 128).is_err());
        assert!(check_env_name("CODEBUILD_X").is_err());
        assert!(check_env_name("1X").is_err());
        assert_eq!(check_env_name("_X1"), Ok(()));
    }
}
