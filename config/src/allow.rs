//! The allow-lists: which IAM roles a job may assume and which images it may run.
//!
//! Both are written to resist bypass: a candidate must first be well formed by the strict
//! grammar of its kind (a role ARN as IAM writes it, an image reference as Docker reads it),
//! then it is normalised, and only then matched against patterns anchored at both ends.
//! Anything odd — whitespace, look-alike Unicode, wildcards in the candidate, a different
//! partition or registry — is refused with the reason.

use std::borrow::Cow;
use std::fmt;

use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Serialize, Serializer};

use crate::config::{Config, RoleRef};

/// The AWS partitions a role ARN may name.
pub const PARTITIONS: &[&str] = &[
    "aws",
    "aws-cn",
    "aws-us-gov",
    "aws-iso",
    "aws-iso-b",
    "aws-iso-e",
    "aws-iso-f",
    "aws-eusc",
];

/// IAM's character set for role names and path segments: `[\w+=,.@-]`, ASCII only.
fn is_iam_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// A well-formed IAM role ARN: `arn:<partition>:iam::<12 digits>:role/[<path>/]<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleArn {
    text: String,
    partition: String,
    account: String,
}

impl RoleArn {
    pub fn parse(text: &str) -> Result<RoleArn, String> {
        let refuse = |why: &str| format!("`{}` is not a role ARN: {why}", text.escape_debug());
        if text.is_empty() {
            return Err("the role ARN is empty".to_string());
        }
        if text.len() > 2048 {
            return Err(refuse("it is longer than 2048 characters"));
        }
        if let Some(c) = text.chars().find(|c| !c.is_ascii()) {
            return Err(refuse(&format!(
                "`{c}` is not ASCII (a look-alike character?); IAM names are ASCII"
            )));
        }
        if text
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(refuse("it holds whitespace or a control character"));
        }
        if text.contains(['*', '?']) {
            return Err(refuse(
                "a role to assume cannot hold `*` or `?`; wildcards belong in patterns",
            ));
        }
        let fields: Vec<&str> = text.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = fields[..] else {
            return Err(refuse("expected `arn:aws:iam::123456789012:role/name`"));
        };
        if arn != "arn" {
            return Err(refuse("it must start with `arn:`"));
        }
        check_partition(partition).map_err(|why| refuse(&why))?;
        if service != "iam" {
            return Err(refuse("the service must be `iam`"));
        }
        if !region.is_empty() {
            return Err(refuse(
                "IAM ARNs have no region; the fourth field must be empty",
            ));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse("the account must be 12 digits"));
        }
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(refuse("the resource must start with `role/`"));
        };
        let segments: Vec<&str> = path_and_name.split('/').collect();
        let Some((name, path)) = segments.split_last() else {
            return Err(refuse("it names no role"));
        };
        if name.is_empty() {
            return Err(refuse("it names no role (it ends with `/`)"));
        }
        if name.len() > 64 {
            return Err(refuse("the role name is longer than 64 characters"));
        }
        if path.iter().any(|s| s.is_empty()) {
            return Err(refuse("the role path has an empty segment (`//`)"));
        }
        if path.iter().map(|s| s.len() + 1).sum::<usize>() + 1 > 512 {
            return Err(refuse("the role path is longer than 512 characters"));
        }
        if let Some(c) = path_and_name.chars().find(|&c| c != '/' && !is_iam_char(c)) {
            return Err(refuse(&format!(
                "`{}` is not allowed in a role name or path",
                c.escape_debug()
            )));
        }
        Ok(RoleArn {
            text: text.to_string(),
            partition: partition.to_string(),
            account: account.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn partition(&self) -> &str {
        &self.partition
    }

    pub fn account(&self) -> &str {
        &self.account
    }
}

fn check_partition(partition: &str) -> Result<(), String> {
    if PARTITIONS.contains(&partition) {
        Ok(())
    } else {
        Err(format!(
            "`{partition}` is not an AWS partition (one of {})",
            PARTITIONS.join(", ")
        ))
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for RoleArn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl JsonSchema for RoleArn {
    fn schema_name() -> Cow<'static, str> {
        "RoleArn".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An IAM role ARN: `arn:<partition>:iam::<12-digit account>:role/[<path>/]<name>`.",
            "type": "string",
            "pattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$"
        })
    }
}

/// A pattern of role ARNs: a full role ARN where `*` matches any run of characters except
/// `:` (so it does cross `/` into role paths, as in IAM policies) and `?` one such
/// character. The partition is literal; the account is 12 digits or exactly `*` (any
/// account: allowed, but it trusts every account that has a role with a matching name).
#[derive(Debug, Clone)]
pub struct RolePattern {
    text: String,
    partition: String,
    account: Option<String>,
    resource: Regex,
}

impl RolePattern {
    pub fn parse(text: &str) -> Result<RolePattern, String> {
        let refuse = |why: &str| format!("`{}` is not a role pattern: {why}", text.escape_debug());
        if text.is_empty() {
            return Err("the role pattern is empty".to_string());
        }
        if let Some(c) = text.chars().find(|c| !c.is_ascii()) {
            return Err(refuse(&format!("`{c}` is not ASCII; IAM names are ASCII")));
        }
        if text
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(refuse("it holds whitespace or a control character"));
        }
        let fields: Vec<&str> = text.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = fields[..] else {
            return Err(refuse("expected `arn:aws:iam::123456789012:role/name-*`"));
        };
        if arn != "arn" {
            return Err(refuse("it must start with `arn:`"));
        }
        if partition.contains(['*', '?']) {
            return Err(refuse(
                "the partition cannot hold a wildcard; write one pattern per partition",
            ));
        }
        check_partition(partition).map_err(|why| refuse(&why))?;
        if service != "iam" {
            return Err(refuse("the service must be `iam`"));
        }
        if !region.is_empty() {
            return Err(refuse(
                "IAM ARNs have no region; the fourth field must be empty",
            ));
        }
        let account = if account == "*" {
            None
        } else if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
            Some(account.to_string())
        } else if account.contains(['*', '?']) {
            return Err(refuse(
                "a wildcard in the account must be the whole field (`*`), never part of it",
            ));
        } else {
            return Err(refuse("the account must be 12 digits or `*`"));
        };
        let Some(rest) = resource.strip_prefix("role/") else {
            return Err(refuse(
                "the resource must start with `role/` (no wildcard before it)",
            ));
        };
        if rest.is_empty() {
            return Err(refuse("it names no role; write `role/*` for every role"));
        }
        if rest.contains("//") {
            return Err(refuse("the role path has an empty segment (`//`)"));
        }
        if let Some(c) = rest
            .chars()
            .find(|&c| !(c == '/' || c == '*' || c == '?' || is_iam_char(c)))
        {
            return Err(refuse(&format!(
                "`{}` is not allowed in a role name or path",
                c.escape_debug()
            )));
        }
        let mut regex = String::from("^role/");
        for c in rest.chars() {
            match c {
                '*' => regex.push_str("[^:]*"),
                '?' => regex.push_str("[^:]"),
                c => regex.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            }
        }
        regex.push('$');
        let resource = Regex::new(&regex).map_err(|e| format!("`{text}`: {e}"))?;
        Ok(RolePattern {
            text: text.to_string(),
            partition: partition.to_string(),
            account,
            resource,
        })
    }

    /// Whether a well-formed role ARN matches, case-sensitively and whole.
    pub fn matches(&self, arn: &RoleArn) -> bool {
        let resource = arn.text.splitn(6, ':').nth(5).unwrap_or("");
        arn.partition == self.partition
            && self.account.as_ref().is_none_or(|a| *a == arn.account)
            && self.resource.is_match(resource)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it trusts every account (`*` in the account field).
    pub fn any_account(&self) -> bool {
        self.account.is_none()
    }
}

impl PartialEq for RolePattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for RolePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for RolePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl JsonSchema for RolePattern {
    fn schema_name() -> Cow<'static, str> {
        "RolePattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A role ARN pattern: a full role ARN where `*` matches any characters but `:` (it crosses `/` in role paths) and `?` one; the partition is literal, the account 12 digits or exactly `*`.",
            "type": "string",
            "pattern": "^arn:aws[a-z-]*:iam::([0-9]{12}|\\*):role/[A-Za-z0-9_+=,.@/*?-]+$"
        })
    }
}

/// Whether any pattern allows the role.
pub fn role_allowed(patterns: &[RolePattern], arn: &RoleArn) -> bool {
    patterns.iter().any(|p| p.matches(arn))
}

/// The role a named environment of `[roles.environments]` maps to.
pub fn environment_role<'c>(config: &'c Config, name: &str) -> Option<&'c RoleRef> {
    config.roles.environments.get(name)
}

/// An image reference, parsed as Docker reads it and normalised the way Docker resolves
/// it: `busybox` is `docker.io/library/busybox:latest`, `index.docker.io` is `docker.io`,
/// the registry host is lowercased (host names are case-insensitive; repositories are not,
/// and capitals there are refused as Docker refuses them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Docker's default registry, which a name without a host resolves to.
pub const DEFAULT_REGISTRY: &str = "docker.io";

struct Split<'t> {
    domain: Option<&'t str>,
    path: &'t str,
    tag: Option<&'t str>,
    digest: Option<&'t str>,
}

fn split_reference(text: &str) -> Split<'_> {
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    // Docker's rule: the first component is a registry host when it has a `.` or `:`, is
    // `localhost`, or has capitals.
    let (domain, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), path)
        }
        _ => (None, name),
    };
    Split {
        domain,
        path,
        tag,
        digest,
    }
}

fn normalise_domain(domain: Option<&str>) -> String {
    match domain.map(str::to_ascii_lowercase) {
        None => DEFAULT_REGISTRY.to_string(),
        Some(d) if d == "index.docker.io" || d == "registry-1.docker.io" => {
            DEFAULT_REGISTRY.to_string()
        }
        Some(d) => d,
    }
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if domain.starts_with('[') {
        match domain.find(']') {
            Some(end) if end + 1 == domain.len() => (domain, None),
            Some(end) => match domain[end + 1..].strip_prefix(':') {
                Some(port) => (&domain[..=end], Some(port)),
                None => return Err(format!("`{domain}` is not a registry host name")),
            },
            None => return Err(format!("`{domain}` is not a registry host name")),
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(format!("the registry port `{port}` is not a port number"));
    }
    let ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty() && inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{domain}` is not a registry host name"))
    }
}

/// Docker's path component: lowercase alphanumerics joined by `.`, `_`, `__` or dashes.
fn check_component(component: &str, wildcards: bool) -> Result<(), String> {
    if component.is_empty() {
        return Err("the repository has an empty path component (`//` or a trailing `/`)".into());
    }
    if component == "." || component == ".." {
        return Err(format!("`{component}` is not a repository path component"));
    }
    if let Some(c) = component.chars().find(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "`{c}` is a capital; repository names must be lowercase"
        ));
    }
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let is_wild = |c: char| wildcards && (c == '*' || c == '?');
    if let Some(c) = component
        .chars()
        .find(|&c| !(is_alnum(c) || is_wild(c) || "._-".contains(c)))
    {
        return Err(format!(
            "`{}` is not allowed in a repository name",
            c.escape_debug()
        ));
    }
    if !wildcards {
        let bytes = component.as_bytes();
        let starts_ok = bytes.first().is_some_and(|&b| is_alnum(b as char));
        let ends_ok = bytes.last().is_some_and(|&b| is_alnum(b as char));
        let separators_ok = !component.contains("..")
            && !component.contains("___")
            && !component.contains("._")
            && !component.contains("_.")
            && !component.contains(".-")
            && !component.contains("-.")
            && !component.contains("_-")
            && !component.contains("-_");
        if !starts_ok || !ends_ok || !separators_ok {
            return Err(format!(
                "`{component}` is not a repository path component: separators go between letters or digits"
            ));
        }
    }
    Ok(())
}

fn check_tag(tag: &str, wildcards: bool) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || (wildcards && "*?".contains(c)));
    let rest_ok = chars
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c) || (wildcards && "*?".contains(c)));
    if tag.len() > 128 || !first_ok || !rest_ok {
        return Err(format!(
            "`{}` is not a tag: up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
            tag.escape_debug()
        ));
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("`{digest}` is not a digest like `sha256:<64 hex>`"))?;
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "`{algorithm}` is not a digest algorithm Docker accepts"
            ));
        }
    };
    if hex.len() != len
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "a {algorithm} digest is {len} lowercase hex digits"
        ));
    }
    Ok(())
}

fn check_reference_text(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the image reference is empty".to_string());
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii()) {
        return Err(format!(
            "`{c}` is not ASCII (a look-alike character?); image references are ASCII"
        ));
    }
    if text
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err("the image reference holds whitespace or a control character".to_string());
    }
    if text.len() > 512 {
        return Err("the image reference is longer than 512 characters".to_string());
    }
    Ok(())
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        let fail =
            |why: String| format!("`{}` is not an image reference: {why}", text.escape_debug());
        check_reference_text(text).map_err(fail)?;
        if text.contains(['*', '?']) {
            return Err(fail(
                "an image to run cannot hold `*` or `?`; wildcards belong in patterns".into(),
            ));
        }
        let split = split_reference(text);
        if let Some(domain) = split.domain {
            check_domain(domain).map_err(fail)?;
        }
        for component in split.path.split('/') {
            check_component(component, false).map_err(fail)?;
        }
        if let Some(tag) = split.tag {
            check_tag(tag, false).map_err(fail)?;
        }
        if let Some(digest) = split.digest {
            check_digest(digest).map_err(fail)?;
        }
        let domain = normalise_domain(split.domain);
        let path = if domain == DEFAULT_REGISTRY && !split.path.contains('/') {
            format!("library/{}", split.path)
        } else {
            split.path.to_string()
        };
        if domain.len() + 1 + path.len() > 255 {
            return Err(fail(
                "the repository name is longer than 255 characters".into(),
            ));
        }
        let tag = match (split.tag, split.digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(ImageRef {
            domain,
            path,
            tag,
            digest: split.digest.map(str::to_string),
        })
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A pattern of images, normalised the same way as the images it matches (`agent-*` means
/// `docker.io/library/agent-*`). In the repository, `*` and `?` stay within one path
/// component and a `**` component spans any number of them; the registry host is literal.
///
/// Without a tag or digest the pattern allows every tag and digest of the repositories it
/// matches. With a tag (`:1.*`), the tag must match and the image must carry no digest,
/// since Docker pulls by the digest and ignores the tag. With a digest, the digest must be
/// that one.
#[derive(Debug, Clone)]
pub struct ImagePattern {
    text: String,
    domain: String,
    path: Regex,
    tag: Option<Regex>,
    digest: Option<String>,
}

impl ImagePattern {
    pub fn parse(text: &str) -> Result<ImagePattern, String> {
        let fail =
            |why: String| format!("`{}` is not an image pattern: {why}", text.escape_debug());
        check_reference_text(text).map_err(fail)?;
        let split = split_reference(text);
        if split.domain.is_some_and(|d| d.contains(['*', '?'])) {
            return Err(fail(
                "the registry host cannot hold a wildcard; name each registry".into(),
            ));
        }
        if let Some(domain) = split.domain {
            check_domain(domain).map_err(fail)?;
        }
        let components: Vec<&str> = split.path.split('/').collect();
        for component in &components {
            if component.contains("**") && *component != "**" {
                return Err(fail(format!(
                    "`{component}`: `**` must be a whole path component, as in `registry/team/**`"
                )));
            }
            check_component(component, true).map_err(fail)?;
        }
        if let Some(tag) = split.tag {
            check_tag(tag, true).map_err(fail)?;
        }
        if let Some(digest) = split.digest {
            check_digest(digest).map_err(fail)?;
        }
        let domain = normalise_domain(split.domain);
        let mut components = components;
        if domain == DEFAULT_REGISTRY && components.len() == 1 && components[0] != "**" {
            components.insert(0, "library");
        }
        let mut regex = String::from("^");
        let last = components.len() - 1;
        for (i, component) in components.iter().enumerate() {
            match (*component, i == last) {
                ("**", true) => regex.push_str("[^/]+(?:/[^/]+)*"),
                ("**", false) => regex.push_str("(?:[^/]+/)*"),
                (component, is_last) => {
                    regex.push_str(&glob_to_regex(component, "[^/]"));
                    if !is_last {
                        regex.push('/');
                    }
                }
            }
        }
        regex.push('$');
        let path = Regex::new(&regex).map_err(|e| fail(e.to_string()))?;
        let tag = split
            .tag
            .map(|t| Regex::new(&format!("^{}$", glob_to_regex(t, "."))))
            .transpose()
            .map_err(|e| fail(e.to_string()))?;
        Ok(ImagePattern {
            text: text.to_string(),
            domain,
            path,
            tag,
            digest: split.digest.map(str::to_string),
        })
    }

    pub fn matches(&self, image: &ImageRef) -> bool {
        if image.domain != self.domain || !self.path.is_match(&image.path) {
            return false;
        }
        if let Some(digest) = &self.digest
            && image.digest.as_ref() != Some(digest)
        {
            return false;
        }
        match &self.tag {
            None => true,
            Some(tag) => {
                (self.digest.is_some() || image.digest.is_none())
                    && image.tag.as_deref().is_some_and(|t| tag.is_match(t))
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn glob_to_regex(glob: &str, any: &str) -> String {
    let mut out = String::new();
    for c in glob.chars() {
        match c {
            '*' => {
                out.push_str(any);
                out.push('*');
            }
            '?' => out.push_str(any),
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out
}

impl PartialEq for ImagePattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ImagePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl JsonSchema for ImagePattern {
    fn schema_name() -> Cow<'static, str> {
        "ImagePattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An image pattern, normalised like an image (`agent-*` is `docker.io/library/agent-*`): `*` and `?` within one repository path component, `**` as a whole component for any depth; the registry host is literal. Without a tag it allows every tag and digest; with a tag, only images without a digest whose tag matches; with a digest, only that digest.",
            "type": "string",
            "minLength": 1
        })
    }
}

/// Whether the image may run: it is the default image, or a pattern allows it. Returns the
/// normalised reference, or why it is refused.
pub fn image_allowed(
    image: &str,
    default_image: &ImageRef,
    patterns: &[ImagePattern],
) -> Result<ImageRef, String> {
    let image = ImageRef::parse(image)?;
    if image == *default_image || patterns.iter().any(|p| p.matches(&image)) {
        Ok(image)
    } else {
        Err(format!(
            "image `{image}` is neither the default image nor matched by `jobs.allowed_images`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";

    fn arn(resource: &str) -> String {
        format!("arn:aws:iam::{ACCOUNT}:{resource}")
    }

    fn pattern(text: &str) -> RolePattern {
        RolePattern::parse(text).unwrap()
    }

    fn allowed(pattern_text: &str, candidate: &str) -> Result<bool, String> {
        let p = pattern(pattern_text);
        RoleArn::parse(candidate).map(|a| p.matches(&a))
    }

    #[test]
    fn role_patterns_match_the_whole_arn() {
        let p = arn("role/deploy*");
        assert_eq!(allowed(&p, &arn("role/deploy")), Ok(true));
        assert_eq!(allowed(&p, &arn("role/deploy-prod")), Ok(true));
        assert_eq!(allowed(&p, &arn("role/deployX")), Ok(true));
        // `*` crosses `/` into role paths, as IAM policy wildcards do.
        assert_eq!(allowed(&p, &arn("role/deploy/team/x")), Ok(true));
        assert_eq!(allowed(&p, &arn("role/Deploy")), Ok(false));
        assert_eq!(allowed(&p, &arn("role/xdeploy")), Ok(false));
        assert_eq!(allowed(&p, &arn("role/team/deploy")), Ok(false));
        let exact = arn("role/deploy");
        assert_eq!(allowed(&exact, &arn("role/deploy")), Ok(true));
        assert_eq!(allowed(&exact, &arn("role/deployX")), Ok(false));
        assert_eq!(allowed(&exact, &arn("role/DEPLOY")), Ok(false));
        assert_eq!(allowed(&exact, &arn("role/path/deploy")), Ok(false));
        let q = arn("role/deploy-?");
        assert_eq!(allowed(&q, &arn("role/deploy-a")), Ok(true));
        assert_eq!(allowed(&q, &arn("role/deploy-ab")), Ok(false));
        assert_eq!(allowed(&q, &arn("role/deploy-")), Ok(false));
    }

    #[test]
    fn role_candidates_must_be_well_formed() {
        let p = arn("role/deploy*");
        for bad in [
            arn("role/deploy\n"),
            arn("role/deploy "),
            format!(" {}", arn("role/deploy")),
            arn("role/deploy/"),
            arn("role/deploy*"),
            arn("role/deploy?"),
            arn("role/dep\u{0142}oy"),
            // Cyrillic `е` in place of `e`.
            arn("role/d\u{0435}ploy"),
            arn("role//deploy"),
            arn("user/deploy"),
            arn("role/"),
            arn("role/deploy:x"),
            arn(&format!("role/{}", "a".repeat(65))),
            "arn:aws:iam:eu-west-1:123456789012:role/deploy".to_string(),
            "arn:aws:iam::12345678901:role/deploy".to_string(),
            "arn:aws:iam::1234567890123:role/deploy".to_string(),
            "arn:aws:sts::123456789012:role/deploy".to_string(),
            "arn:aws:iam::123456789012:role/deploy%41".to_string(),
            "ARN:aws:iam::123456789012:role/deploy".to_string(),
            "arn:aws-evil:iam::123456789012:role/deploy".to_string(),
            "arn:aws:iam::123456789012".to_string(),
            String::new(),
            " ".to_string(),
        ] {
            let result = allowed(&p, &bad);
            assert!(result.is_err(), "{bad:?} gave {result:?}");
        }
        assert!(RoleArn::parse("").unwrap_err().contains("empty"));
        assert!(
            RoleArn::parse(&arn("role/deploy*"))
                .unwrap_err()
                .contains("wildcards belong in patterns")
        );
        assert!(
            RoleArn::parse(&arn("role/d\u{0435}ploy"))
                .unwrap_err()
                .contains("not ASCII")
        );
    }

    #[test]
    fn partitions_never_cross() {
        let p = arn("role/deploy");
        assert_eq!(
            allowed(&p, "arn:aws-cn:iam::123456789012:role/deploy"),
            Ok(false)
        );
        assert_eq!(
            allowed(&p, "arn:aws-us-gov:iam::123456789012:role/deploy"),
            Ok(false)
        );
        let cn = "arn:aws-cn:iam::123456789012:role/deploy";
        assert_eq!(allowed(cn, cn), Ok(true));
        assert_eq!(allowed(cn, &arn("role/deploy")), Ok(false));
    }

    #[test]
    fn accounts_are_exact_or_wholly_any() {
        let any = RolePattern::parse("arn:aws:iam::*:role/agent-*").unwrap();
        assert!(any.any_account());
        assert!(any.matches(&RoleArn::parse("arn:aws:iam::999999999999:role/agent-x").unwrap()));
        assert!(
            !any.matches(&RoleArn::parse("arn:aws-cn:iam::999999999999:role/agent-x").unwrap())
        );
        assert_eq!(
            allowed(&arn("role/x"), "arn:aws:iam::123456789013:role/x"),
            Ok(false)
        );
        for bad in [
            "arn:aws:iam::12345678901*:role/x",
            "arn:aws:iam::1234567890?2:role/x",
            "arn:aws:iam::**:role/x",
            "arn:*:iam::123456789012:role/x",
            "arn:aws*:iam::123456789012:role/x",
            "arn:aws:iam::123456789012:*",
            "arn:aws:iam::123456789012:role*",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
            "arn:aws:*:*:123456789012:role/x",
            "",
            "  ",
        ] {
            assert!(RolePattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            RolePattern::parse("arn:aws:iam::12345678901*:role/x")
                .unwrap_err()
                .contains("whole field")
        );
    }

    fn image(pattern_text: &str, candidate: &str) -> Result<bool, String> {
        let p = ImagePattern::parse(pattern_text)?;
        ImageRef::parse(candidate).map(|i| p.matches(&i))
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn images_normalise_like_docker() {
        let busybox = ImageRef::parse("busybox").unwrap();
        assert_eq!(busybox.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(
            ImageRef::parse("docker.io/busybox").unwrap(),
            ImageRef::parse("index.docker.io/library/busybox:latest").unwrap()
        );
        assert_eq!(
            ImageRef::parse("Registry.Example.com:5000/team/app:1")
                .unwrap()
                .to_string(),
            "registry.example.com:5000/team/app:1"
        );
        let pinned = ImageRef::parse(&format!("busybox@{DIGEST}")).unwrap();
        assert_eq!(pinned.tag, None);
        assert_eq!(
            ImageRef::parse("localhost/app").unwrap().domain,
            "localhost"
        );
        assert_eq!(
            ImageRef::parse("[::1]:5000/app").unwrap().domain,
            "[::1]:5000"
        );
        assert_eq!(ImageRef::parse("[::1]/app").unwrap().domain, "[::1]");
        assert!(ImageRef::parse("[::1]x/app").is_err());
    }

    #[test]
    fn image_patterns_match_repositories() {
        assert_eq!(image("agent-*", "agent-standard:latest"), Ok(true));
        assert_eq!(image("agent-*", "agent-standard"), Ok(true));
        assert_eq!(
            image("agent-*", "docker.io/library/agent-small:1.0"),
            Ok(true)
        );
        assert_eq!(
            image("agent-*", &format!("agent-standard:latest@{DIGEST}")),
            Ok(true)
        );
        assert_eq!(image("agent-*", "evil.com/agent-standard"), Ok(false));
        assert_eq!(image("agent-*", "docker.io/evil/agent-standard"), Ok(false));
        assert_eq!(image("agent-*", "agent-standard/x"), Ok(false));
        let team = "registry.example.com/team/*";
        assert_eq!(image(team, "registry.example.com/team/app:1"), Ok(true));
        assert_eq!(image(team, "registry.example.com/team/a/b"), Ok(false));
        assert_eq!(image(team, "registry.example.com/teamx/app"), Ok(false));
        assert_eq!(
            image(team, "registry.example.com.evil.com/team/app"),
            Ok(false)
        );
        assert_eq!(image(team, "registry.example.com:443/team/app"), Ok(false));
        assert_eq!(image(team, "REGISTRY.example.com/team/app"), Ok(true));
        let deep = "registry.example.com/team/**";
        assert_eq!(image(deep, "registry.example.com/team/a/b/c:1"), Ok(true));
        assert_eq!(image(deep, "registry.example.com/team"), Ok(false));
        let mid = "registry.example.com/**/app";
        assert_eq!(image(mid, "registry.example.com/app"), Ok(true));
        assert_eq!(image(mid, "registry.example.com/x/y/app"), Ok(true));
        assert_eq!(image(mid, "registry.example.com/x/y/app2"), Ok(false));
    }

    #[test]
    fn image_tags_and_digests() {
        let pinned_tag = "agent-standard:latest";
        assert_eq!(image(pinned_tag, "agent-standard"), Ok(true));
        assert_eq!(image(pinned_tag, "agent-standard:latest"), Ok(true));
        assert_eq!(image(pinned_tag, "agent-standard:1.0"), Ok(false));
        // The digest wins over the tag when Docker pulls: a tag-only pattern must not match.
        assert_eq!(
            image(pinned_tag, &format!("agent-standard:latest@{DIGEST}")),
            Ok(false)
        );
        assert_eq!(
            image(pinned_tag, &format!("agent-standard@{DIGEST}")),
            Ok(false)
        );
        assert_eq!(image("agent-standard:1.*", "agent-standard:1.2"), Ok(true));
        assert_eq!(image("agent-standard:1.*", "agent-standard:10"), Ok(false));
        let by_digest = format!("agent-standard@{DIGEST}");
        assert_eq!(
            image(&by_digest, &format!("agent-standard@{DIGEST}")),
            Ok(true)
        );
        assert_eq!(
            image(&by_digest, &format!("agent-standard:x@{DIGEST}")),
            Ok(true)
        );
        assert_eq!(image(&by_digest, "agent-standard:latest"), Ok(false));
        let other = DIGEST.replace("0123", "fffe");
        assert_eq!(
            image(&by_digest, &format!("agent-standard@{other}")),
            Ok(false)
        );
    }

    #[test]
    fn malformed_images_are_refused() {
        for bad in [
            "agent-standard/../x",
            "Agent-Standard",
            "agent-STANDARD:latest",
            "agent-standard:latest ",
            " agent-standard",
            "agent-standard\n",
            "agent-st\u{0430}ndard",
            "agent-*",
            "",
            "agent-standard:",
            "agent-standard:-x",
            "agent-standard@sha256:abc",
            "agent-standard@md5:0123456789abcdef0123456789abcdef",
            "registry..com/x",
            "-agent",
            "agent--",
            "a//b",
            "a/",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "*.example.com/x",
            "registry.example.com:*/x",
            "team/app-**",
            "REGISTRY/x:\u{0430}",
            "",
        ] {
            assert!(ImagePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_pattern_allows_everything_by_accident() {
        // `*` and `**` alone are repositories on Docker Hub, never every registry.
        assert_eq!(image("*", "busybox"), Ok(true));
        assert_eq!(image("*", "evil.com/busybox"), Ok(false));
        assert_eq!(image("**", "docker.io/someone/thing"), Ok(true));
        assert_eq!(image("**", "evil.com/thing"), Ok(false));
    }

    #[test]
    fn the_default_image_is_always_allowed() {
        let default = ImageRef::parse("agent-standard:latest").unwrap();
        assert!(image_allowed("agent-standard", &default, &[]).is_ok());
        assert!(image_allowed("docker.io/library/agent-standard:latest", &default, &[]).is_ok());
        let refused = image_allowed("agent-standard:2", &default, &[]).unwrap_err();
        assert!(refused.contains("jobs.allowed_images"), "{refused}");
        assert!(image_allowed(&format!("agent-standard@{DIGEST}"), &default, &[]).is_err());
    }
}
