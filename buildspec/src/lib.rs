//! Models, parsers and checks for AWS CodeBuild `buildspec.yml` and CodeDeploy
//! `appspec.yml` files.
//!
//! Pure: the functions take text and return values and [`Diagnostic`]s; no I/O happens here.
//! Every diagnostic carries `line:column`, a one-line cause and a hint, and all problems of
//! a file are reported, not just the first.
//!
//! ```
//! use buildspec::{Source, parse_buildspec};
//! let source = Source::new("buildspec.yml", "version: 0.2\nphases:\n  build:\n    commands:\n      - make\n");
//! let parsed = parse_buildspec(&source);
//! let spec = parsed.value.expect("valid");
//! assert_eq!(spec.phases.build.unwrap().commands[0].text, "make");
//! ```

pub mod appspec;
pub mod buildspec;
mod decode;
mod diag;
mod render;
mod source;
mod yaml;

pub use appspec::AppSpec;
pub use buildspec::Buildspec;
pub use decode::Spanned;
pub use diag::{Code, Diagnostic, Severity};
pub use render::{render, render_all};
pub use source::{Position, Source, Span};

use decode::Decoder;
use diag::Diagnostics;
use serde::Serialize;

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Buildspec,
    Appspec,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Buildspec => "buildspec",
            Kind::Appspec => "appspec",
        }
    }
}

/// The result of parsing: the value when there is no error, and every diagnostic
/// (warnings included) in file order.
#[derive(Debug, Clone)]
pub struct Parsed<T> {
    pub value: Option<T>,
    pub diagnostics: Vec<Diagnostic>,
}

impl<T> Parsed<T> {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
}

/// A parsed file of either kind.
#[derive(Debug, Clone)]
pub enum Document {
    Buildspec(Box<Buildspec>),
    Appspec(Box<AppSpec>),
}

pub fn parse_buildspec(source: &Source) -> Parsed<Buildspec> {
    let (_, parsed) = parse(source, Some(Kind::Buildspec));
    Parsed {
        value: match parsed.value {
            Some(Document::Buildspec(spec)) => Some(*spec),
            _ => None,
        },
        diagnostics: parsed.diagnostics,
    }
}

pub fn parse_appspec(source: &Source) -> Parsed<AppSpec> {
    let (_, parsed) = parse(source, Some(Kind::Appspec));
    Parsed {
        value: match parsed.value {
            Some(Document::Appspec(spec)) => Some(*spec),
            _ => None,
        },
        diagnostics: parsed.diagnostics,
    }
}

/// Parses `source` as `kind`, or as what its content says it is when `kind` is `None`.
pub fn parse(source: &Source, kind: Option<Kind>) -> (Kind, Parsed<Document>) {
    let mut diags = Diagnostics::new(source);
    let root = yaml::load(source, &mut diags);
    let kind = kind.unwrap_or_else(|| detect(source, root.as_ref()));
    let mut decoder = Decoder::new(diags);
    let value = root.and_then(|root| match kind {
        Kind::Buildspec => {
            buildspec::decode(&mut decoder, &root).map(|b| Document::Buildspec(Box::new(b)))
        }
        Kind::Appspec => {
            appspec::decode(&mut decoder, &root).map(|a| Document::Appspec(Box::new(a)))
        }
    });
    if value.is_none() && !decoder.diags.has_errors() {
        empty(&mut decoder, kind);
    }
    let diagnostics = decoder.diags.finish();
    let value = value.filter(|_| diagnostics.iter().all(|d| !d.is_error()));
    (kind, Parsed { value, diagnostics })
}

/// Nothing was decoded and nothing was said: the stream held no document at all.
fn empty(decoder: &mut Decoder<'_>, kind: Kind) {
    let hint = match kind {
        Kind::Buildspec => {
            "a buildspec needs at least `version: 0.2` and a `phases:` section with commands"
        }
        Kind::Appspec => "an appspec needs at least `version: 0.0` and `os: linux`",
    };
    decoder.diags.error(
        Code::EmptyDocument,
        Span::new(0, 0),
        format!("the {} is empty", kind.as_str()),
        hint,
    );
}

/// An appspec has `os`, `hooks`, top-level `files`, `Resources` or version 0.0; anything
/// else is read as a buildspec. A file that is not YAML is judged by its name.
fn detect(source: &Source, root: Option<&yaml::Node>) -> Kind {
    let by_name = || {
        let name = source.name().rsplit(['/', '\\']).next().unwrap_or("");
        if name.to_ascii_lowercase().contains("appspec") {
            Kind::Appspec
        } else {
            Kind::Buildspec
        }
    };
    let Some(yaml::Node {
        value: yaml::Value::Map(entries),
        ..
    }) = root
    else {
        return by_name();
    };
    let mut appspec = 0;
    let mut buildspec = 0;
    // Keys only one kind has weigh more than a version, which may be mistyped.
    for (key, value) in entries {
        match key.scalar().map(str::trim) {
            Some(
                "os" | "hooks" | "files" | "file_exists_behavior" | "permissions" | "Resources",
            ) => appspec += 2,
            Some(
                "phases" | "env" | "artifacts" | "cache" | "reports" | "batch" | "run-as" | "proxy",
            ) => buildspec += 2,
            Some("version") => match value.scalar().map(str::trim) {
                Some(v) if v.parse::<f64>().ok() == Some(0.0) => appspec += 1,
                Some("0.1" | "0.2") => buildspec += 1,
                _ => {}
            },
            _ => {}
        }
    }
    match appspec.cmp(&buildspec) {
        std::cmp::Ordering::Greater => Kind::Appspec,
        std::cmp::Ordering::Less => Kind::Buildspec,
        std::cmp::Ordering::Equal => by_name(),
    }
}
