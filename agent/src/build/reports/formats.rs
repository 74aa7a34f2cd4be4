//! Test counts from the report files a build leaves behind, for the three
//! `file-format`s of a CodeBuild report group: JUNITXML, CUCUMBERJSON and
//! VISUALSTUDIOTRX.
//!
//! Counts come from the individual test entries and never from summary
//! attributes such as `tests=` or `failures=`: tools disagree on what those
//! mean, leave them out, or write them before the last test has finished.
//!
//! Reports can be hundreds of megabytes, so XML is read as a stream of events
//! and JSON one feature and one scenario at a time; nothing holds the whole
//! document as a tree.

use std::fmt;
use std::marker::PhantomData;

use quick_xml::Reader;
use quick_xml::encoding::Decoder;
use quick_xml::events::{BytesStart, Event};
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

const JUNIT: &str = "JUNITXML";
const CUCUMBER: &str = "CUCUMBERJSON";
const TRX: &str = "VISUALSTUDIOTRX";

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// How many tests one or more reports hold; `total` is always the sum of the
/// other three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TestCounts {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl TestCounts {
    pub fn add(&mut self, other: TestCounts) {
        // Sums over many files must not wrap into small, believable numbers.
        self.total = self.total.saturating_add(other.total);
        self.passed = self.passed.saturating_add(other.passed);
        self.failed = self.failed.saturating_add(other.failed);
        self.skipped = self.skipped.saturating_add(other.skipped);
    }

    fn record(&mut self, verdict: Verdict) {
        let one = match verdict {
            Verdict::Passed => TestCounts {
                passed: 1,
                ..TestCounts::default()
            },
            Verdict::Skipped => TestCounts {
                skipped: 1,
                ..TestCounts::default()
            },
            Verdict::Failed => TestCounts {
                failed: 1,
                ..TestCounts::default()
            },
        };
        self.add(TestCounts { total: 1, ..one });
    }
}

/// Ordered so that the worst outcome of a test's parts is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Passed,
    Skipped,
    Failed,
}

/// Where in a report a problem was found. Columns count bytes, so on lines
/// with non-ASCII text they run ahead of an editor's column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: u64,
    pub column: u64,
    /// Offset from the start of the file, when the parser reports one.
    pub byte: Option<u64>,
}

impl Location {
    fn of_offset(file: &[u8], offset: u64) -> Location {
        let end = usize::try_from(offset).map_or(file.len(), |o| o.min(file.len()));
        let before = file.get(..end).unwrap_or(file);
        let newlines = before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p.saturating_add(1));
        Location {
            line: to_u64(newlines).saturating_add(1),
            column: to_u64(end.saturating_sub(line_start)).saturating_add(1),
            byte: Some(offset),
        }
    }

    fn of_json_error(error: &serde_json::Error) -> Location {
        Location {
            line: to_u64(error.line()),
            column: to_u64(error.column()),
            byte: None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)?;
        if let Some(byte) = self.byte {
            write!(f, " (byte {byte})")?;
        }
        Ok(())
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Why a report could not be counted. Each message names the report's
/// `file-format`, because a report read with the wrong format is the most
/// common cause.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{format} report is empty")]
    Empty { format: &'static str },

    #[error(
        "{format} report is encoded as {encoding}; only UTF-8 reports can be read, \
         so configure the test tool to write UTF-8"
    )]
    UnsupportedEncoding {
        format: &'static str,
        encoding: &'static str,
    },

    #[error(
        "{format} report is not XML: expected an element at {at} but found `{found}`; \
         check that the report group's file-format matches the file"
    )]
    NotXml {
        format: &'static str,
        at: Location,
        found: String,
    },

    #[error("{format} report is not well-formed XML at {at}: {error}")]
    MalformedXml {
        format: &'static str,
        at: Location,
        error: quick_xml::Error,
    },

    #[error(
        "{format} report ends at {at} while <{element}> is still open; \
         the file looks truncated"
    )]
    Truncated {
        format: &'static str,
        element: String,
        at: Location,
    },

    #[error("{format} report has no root element; expected {expected}")]
    NoRootElement {
        format: &'static str,
        expected: &'static str,
    },

    #[error(
        "{format} report has root element <{found}> at {at}, but expected {expected}; \
         check that the report group's file-format matches the file"
    )]
    WrongRoot {
        format: &'static str,
        expected: &'static str,
        found: String,
        at: Location,
    },

    #[error(
        "{format} report has content after its root element, at {at}; \
         a report must hold exactly one root element"
    )]
    TrailingContent { format: &'static str, at: Location },

    #[error(
        "{format} report has {attribute}=\"{value}\" on <{element}> at {at}, \
         which is not a whole number"
    )]
    NotANumber {
        format: &'static str,
        element: &'static str,
        attribute: String,
        value: String,
        at: Location,
    },

    #[error(
        "{format} report is not JSON: it starts with `{found}`; \
         check that the report group's file-format matches the file"
    )]
    NotJson { format: &'static str, found: String },

    #[error("{format} report ends before its JSON is complete ({error}); the file looks truncated")]
    TruncatedJson {
        format: &'static str,
        at: Location,
        error: serde_json::Error,
    },

    #[error("{format} report is not valid JSON: {error}")]
    MalformedJson {
        format: &'static str,
        at: Location,
        error: serde_json::Error,
    },

    #[error(
        "{format} report is JSON but not a Cucumber report: {error}; expected an array \
         of features whose `elements` hold scenarios with `steps`"
    )]
    UnexpectedStructure {
        format: &'static str,
        at: Location,
        error: serde_json::Error,
    },
}

/// Counts the `<testcase>` elements of a JUnit XML report.
///
/// # Errors
///
/// When the file is empty, not UTF-8, not well-formed XML, or its root is
/// neither `<testsuites>` nor `<testsuite>`.
pub fn parse_junit_xml(bytes: &[u8]) -> Result<TestCounts, ReportError> {
    let mut counter = JunitCounter::default();
    walk_xml(bytes, &JUNIT_SHAPE, &mut counter)?;
    Ok(counter.counts)
}

/// Counts the scenarios of a Cucumber JSON report.
///
/// # Errors
///
/// When the file is empty, not valid JSON, or not an array of features.
pub fn parse_cucumber_json(bytes: &[u8]) -> Result<TestCounts, ReportError> {
    let body = check_text(bytes, CUCUMBER)?;
    if body.trim_ascii_start().starts_with(b"<") {
        return Err(ReportError::NotJson {
            format: CUCUMBER,
            found: first_line(&String::from_utf8_lossy(body.trim_ascii_start())),
        });
    }
    match serde_json::from_slice::<CucumberReport>(body) {
        Ok(report) => Ok(report.0),
        Err(error) => {
            let at = Location::of_json_error(&error);
            Err(match error.classify() {
                serde_json::error::Category::Data => ReportError::UnexpectedStructure {
                    format: CUCUMBER,
                    at,
                    error,
                },
                serde_json::error::Category::Eof => ReportError::TruncatedJson {
                    format: CUCUMBER,
                    at,
                    error,
                },
                _ => ReportError::MalformedJson {
                    format: CUCUMBER,
                    at,
                    error,
                },
            })
        }
    }
}

/// Counts the `<UnitTestResult>` elements of a Visual Studio TRX report, or
/// takes its summary counters when it lists no results.
///
/// # Errors
///
/// When the file is empty, not UTF-8, not well-formed XML, its root is not
/// `<TestRun>`, or a summary counter is not a number.
pub fn parse_trx(bytes: &[u8]) -> Result<TestCounts, ReportError> {
    let mut counter = TrxCounter::default();
    walk_xml(bytes, &TRX_SHAPE, &mut counter)?;
    match counter.summary {
        Some(summary) if counter.counts.total == 0 => Ok(summary),
        _ => Ok(counter.counts),
    }
}

/// Strips a UTF-8 byte order mark and refuses input no parser here can read.
fn check_text<'a>(bytes: &'a [u8], format: &'static str) -> Result<&'a [u8], ReportError> {
    let encoding = match bytes {
        [0xFF, 0xFE, 0, 0, ..] | [0, 0, 0xFE, 0xFF, ..] => Some("UTF-32"),
        [0xFF, 0xFE, ..]
        | [0xFE, 0xFF, ..]
        | [0, b'<' | b'[' | b'{', ..]
        | [b'<' | b'[' | b'{', 0, ..] => Some("UTF-16"),
        _ => None,
    };
    if let Some(encoding) = encoding {
        return Err(ReportError::UnsupportedEncoding { format, encoding });
    }
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if body.trim_ascii().is_empty() {
        return Err(ReportError::Empty { format });
    }
    Ok(body)
}

/// What a report's XML must look like at the top.
struct XmlShape {
    format: &'static str,
    roots: &'static [&'static [u8]],
    expected: &'static str,
}

const JUNIT_SHAPE: XmlShape = XmlShape {
    format: JUNIT,
    roots: &[b"testsuites", b"testsuite"],
    expected: "<testsuites> or <testsuite>",
};

const TRX_SHAPE: XmlShape = XmlShape {
    format: TRX,
    roots: &[b"TestRun"],
    expected: "<TestRun>",
};

/// A place in the file, turned into a line and column only when an error
/// needs one, since that means scanning everything before it.
#[derive(Clone, Copy)]
struct Spot<'a> {
    file: &'a [u8],
    offset: u64,
    format: &'static str,
}

impl Spot<'_> {
    fn location(self) -> Location {
        Location::of_offset(self.file, self.offset)
    }

    fn malformed(self, error: quick_xml::Error) -> ReportError {
        ReportError::MalformedXml {
            format: self.format,
            at: self.location(),
            error,
        }
    }
}

/// Receives elements from [`walk_xml`]; `depth` is 0 for the root and
/// `name` has no namespace prefix.
trait XmlCounter {
    fn open(
        &mut self,
        depth: usize,
        name: &[u8],
        element: &BytesStart<'_>,
        at: Spot<'_>,
        decoder: Decoder,
    ) -> Result<(), ReportError>;

    fn close(&mut self, depth: usize);
}

fn walk_xml(
    file: &[u8],
    shape: &XmlShape,
    counter: &mut impl XmlCounter,
) -> Result<(), ReportError> {
    let format = shape.format;
    let body = check_text(file, format)?;
    // Offsets from the reader are into `body`; errors should point into the file.
    let skipped = to_u64(file.len().saturating_sub(body.len()));
    let spot = |offset: u64| Spot {
        file,
        offset: skipped.saturating_add(offset),
        format,
    };

    let mut reader = Reader::from_reader(body);
    let mut open = OpenElements::default();
    let mut seen_root = false;
    loop {
        let start = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(error) => return Err(spot(reader.error_position()).malformed(error)),
        };
        match event {
            Event::Start(ref element) | Event::Empty(ref element) => {
                let local = element.local_name();
                let name = local.as_ref();
                if open.is_empty() {
                    if seen_root {
                        return Err(ReportError::TrailingContent {
                            format,
                            at: spot(start).location(),
                        });
                    }
                    if !shape.roots.contains(&name) {
                        return Err(ReportError::WrongRoot {
                            format,
                            expected: shape.expected,
                            found: String::from_utf8_lossy(element.name().as_ref()).into_owned(),
                            at: spot(start).location(),
                        });
                    }
                    seen_root = true;
                }
                let depth = open.len();
                counter.open(depth, name, element, spot(start), reader.decoder())?;
                if matches!(event, Event::Start(_)) {
                    open.push(element.name().as_ref());
                } else {
                    counter.close(depth);
                }
            }
            Event::End(_) => {
                // The reader has already checked that this closes the last open element.
                open.pop();
                counter.close(open.len());
            }
            Event::Text(ref text) if open.is_empty() => {
                if let Some(first) = text.iter().position(|b| !b.is_ascii_whitespace()) {
                    let at = spot(start.saturating_add(to_u64(first)));
                    let rest = String::from_utf8_lossy(text.get(first..).unwrap_or_default());
                    return Err(outside_root(seen_root, at, &rest));
                }
            }
            Event::CData(_) if open.is_empty() => {
                return Err(outside_root(seen_root, spot(start), "<![CDATA["));
            }
            Event::GeneralRef(ref name) if open.is_empty() => {
                let text = format!("&{};", String::from_utf8_lossy(name));
                return Err(outside_root(seen_root, spot(start), &text));
            }
            Event::Eof => {
                if let Some(element) = open.innermost() {
                    return Err(ReportError::Truncated {
                        format,
                        element: String::from_utf8_lossy(element).into_owned(),
                        at: spot(start).location(),
                    });
                }
                if !seen_root {
                    return Err(ReportError::NoRootElement {
                        format,
                        expected: shape.expected,
                    });
                }
                return Ok(());
            }
            _ => {}
        }
    }
}

/// The names of the elements still open, so that a truncated file can say
/// which one it ends in. One shared buffer rather than a `String` per element,
/// as this changes on every tag of a large file.
#[derive(Default)]
struct OpenElements {
    names: Vec<u8>,
    ends: Vec<usize>,
}

impl OpenElements {
    fn push(&mut self, name: &[u8]) {
        self.names.extend_from_slice(name);
        self.ends.push(self.names.len());
    }

    fn pop(&mut self) {
        self.ends.pop();
        self.names.truncate(self.ends.last().copied().unwrap_or(0));
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn innermost(&self) -> Option<&[u8]> {
        let end = *self.ends.last()?;
        let start = self
            .ends
            .len()
            .checked_sub(2)
            .and_then(|i| self.ends.get(i))
            .copied()
            .unwrap_or(0);
        self.names.get(start..end)
    }
}

/// Text outside the root: before it the file is not XML at all (often JSON
/// or a log sent by mistake); after it the file has extra content.
fn outside_root(seen_root: bool, at: Spot<'_>, text: &str) -> ReportError {
    if seen_root {
        return ReportError::TrailingContent {
            format: at.format,
            at: at.location(),
        };
    }
    ReportError::NotXml {
        format: at.format,
        at: at.location(),
        found: first_line(text),
    }
}

/// The start of `text`, short enough to quote in a one-line message.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    match line.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", line.get(..cut).unwrap_or("")),
        None => line.to_owned(),
    }
}

#[derive(Default)]
struct JunitCounter {
    counts: TestCounts,
    case: Option<OpenCase>,
}

struct OpenCase {
    depth: usize,
    verdict: Verdict,
}

impl XmlCounter for JunitCounter {
    fn open(
        &mut self,
        depth: usize,
        name: &[u8],
        _element: &BytesStart<'_>,
        _at: Spot<'_>,
        _decoder: Decoder,
    ) -> Result<(), ReportError> {
        match &mut self.case {
            None if name == b"testcase" => {
                self.case = Some(OpenCase {
                    depth,
                    verdict: Verdict::Passed,
                });
            }
            // Only direct children decide: surefire's <flakyFailure> and
            // <rerunFailure> hold their own nested elements, and a test that
            // passed on a rerun is a passed test.
            Some(case) if depth == case.depth.saturating_add(1) => {
                let verdict = match name {
                    b"failure" | b"error" => Verdict::Failed,
                    b"skipped" | b"ignored" => Verdict::Skipped,
                    _ => return Ok(()),
                };
                case.verdict = case.verdict.max(verdict);
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, depth: usize) {
        if let Some(case) = self.case.take_if(|case| case.depth == depth) {
            self.counts.record(case.verdict);
        }
    }
}

#[derive(Default)]
struct TrxCounter {
    counts: TestCounts,
    /// Depth of the result being read; the rows of a data-driven test are
    /// nested results and already folded into their parent's outcome.
    result_depth: Option<usize>,
    summary: Option<TestCounts>,
}

impl XmlCounter for TrxCounter {
    fn open(
        &mut self,
        depth: usize,
        name: &[u8],
        element: &BytesStart<'_>,
        at: Spot<'_>,
        decoder: Decoder,
    ) -> Result<(), ReportError> {
        if self.result_depth.is_some() {
            return Ok(());
        }
        match name {
            b"UnitTestResult" => {
                self.result_depth = Some(depth);
                let mut verdict = Verdict::Skipped;
                for_each_attribute(element, at, decoder, &["outcome"], |_, value| {
                    verdict = trx_verdict(value);
                    Ok(())
                })?;
                self.counts.record(verdict);
            }
            b"Counters" if self.summary.is_none() => {
                self.summary = Some(trx_counters(element, at, decoder)?);
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, depth: usize) {
        if self.result_depth == Some(depth) {
            self.result_depth = None;
        }
    }
}

fn trx_verdict(outcome: &str) -> Verdict {
    let is = |name: &str| outcome.trim().eq_ignore_ascii_case(name);
    if is("Passed") || is("PassedButRunAborted") {
        Verdict::Passed
    } else if is("Failed") || is("Error") || is("Timeout") || is("Aborted") {
        Verdict::Failed
    } else {
        Verdict::Skipped
    }
}

/// The `<Counters>` attributes that hold outcomes; `executed` overlaps them,
/// and one this list does not know cannot be placed.
const COUNTERS: &[&str] = &[
    "total",
    "passed",
    "passedButRunAborted",
    "failed",
    "error",
    "timeout",
    "aborted",
    "inconclusive",
    "notRunnable",
    "notExecuted",
    "disconnected",
    "warning",
    "completed",
    "inProgress",
    "pending",
];

/// Reads `<Counters>` so that its numbers add up the same way counted
/// results do: every outcome that is neither passed nor failed is skipped.
fn trx_counters(
    element: &BytesStart<'_>,
    at: Spot<'_>,
    decoder: Decoder,
) -> Result<TestCounts, ReportError> {
    let mut total = None;
    let mut passed: u64 = 0;
    let mut failed: u64 = 0;
    let mut other: u64 = 0;
    for_each_attribute(element, at, decoder, COUNTERS, |key, value| {
        let slot = match key {
            "total" => None,
            "passed" | "passedButRunAborted" => Some(&mut passed),
            "failed" | "error" | "timeout" | "aborted" => Some(&mut failed),
            _ => Some(&mut other),
        };
        let number = value
            .trim()
            .parse::<u64>()
            .map_err(|_| ReportError::NotANumber {
                format: at.format,
                element: "Counters",
                attribute: key.to_owned(),
                value: value.to_owned(),
                at: at.location(),
            })?;
        match slot {
            Some(sum) => *sum = sum.saturating_add(number),
            None => total = Some(number),
        }
        Ok(())
    })?;
    let counted = passed.saturating_add(failed);
    let total = total.map_or(counted.saturating_add(other), |t| t.max(counted));
    Ok(TestCounts {
        total,
        passed,
        failed,
        skipped: total.saturating_sub(counted),
    })
}

/// Calls `f` with the local name and unescaped value of each attribute named
/// in `keys`. Other values are left alone, so an odd entity in, say, a test
/// name cannot make the whole report unreadable.
fn for_each_attribute(
    element: &BytesStart<'_>,
    at: Spot<'_>,
    decoder: Decoder,
    keys: &[&str],
    mut f: impl FnMut(&str, &str) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    for attribute in element.attributes() {
        let attribute = attribute.map_err(|error| at.malformed(error.into()))?;
        let local = attribute.key.local_name();
        let Some(key) = keys.iter().find(|key| key.as_bytes() == local.as_ref()) else {
            continue;
        };
        let value = attribute
            .decode_and_unescape_value(decoder)
            .map_err(|error| at.malformed(error))?;
        f(key, &value)?;
    }
    Ok(())
}

/// A whole Cucumber report, read as a fold over its features so that only
/// one scenario is ever held in memory.
struct CucumberReport(TestCounts);

impl<'de> Deserialize<'de> for CucumberReport {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Features;
        impl<'de> Visitor<'de> for Features {
            type Value = TestCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of features")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TestCounts, A::Error> {
                let mut counts = TestCounts::default();
                while let Some(feature) = seq.next_element::<Feature>()? {
                    if let Some(scenarios) = feature.elements {
                        counts.add(scenarios.0);
                    }
                }
                Ok(counts)
            }
        }
        deserializer.deserialize_seq(Features).map(CucumberReport)
    }
}

#[derive(serde::Deserialize)]
#[serde(expecting = "a feature object")]
struct Feature {
    #[serde(default)]
    elements: Option<Scenarios>,
}

/// A feature's `elements`, counted as they are read.
struct Scenarios(TestCounts);

impl<'de> Deserialize<'de> for Scenarios {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Elements;
        impl<'de> Visitor<'de> for Elements {
            type Value = TestCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of scenarios")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TestCounts, A::Error> {
                let mut counts = TestCounts::default();
                // Cucumber-JVM and Cucumber-Ruby write the background as its
                // own element before each scenario. When a background step
                // fails the scenario's own steps are only "skipped", so the
                // background's outcome has to be carried into the scenario
                // that follows it.
                let mut background: Option<Verdict> = None;
                while let Some(element) = seq.next_element::<Element>()? {
                    let verdict = element.verdict();
                    if element.kind.is_some_and(|kind| kind.0) {
                        background = Some(background.map_or(verdict, |b| b.max(verdict)));
                    } else {
                        counts.record(background.take().map_or(verdict, |b| b.max(verdict)));
                    }
                }
                Ok(counts)
            }
        }
        deserializer.deserialize_seq(Elements).map(Scenarios)
    }
}

#[derive(serde::Deserialize)]
#[serde(expecting = "a scenario object")]
struct Element {
    #[serde(default, rename = "type")]
    kind: Option<IsBackground>,
    #[serde(default)]
    steps: Option<Worst<Step>>,
    #[serde(default)]
    before: Option<Worst<Hook>>,
    #[serde(default)]
    after: Option<Worst<Hook>>,
}

impl Element {
    fn verdict(&self) -> Verdict {
        let steps = self.steps.as_ref().map(|w| w.verdict);
        let before = self.before.as_ref().map(|w| w.verdict);
        let after = self.after.as_ref().map(|w| w.verdict);
        [steps, before, after]
            .into_iter()
            .flatten()
            .fold(Verdict::Passed, Verdict::max)
    }
}

#[derive(serde::Deserialize)]
#[serde(expecting = "a step object")]
struct Step {
    #[serde(default)]
    result: Option<StepResult>,
    // Cucumber-JVM attaches AfterStep and BeforeStep hooks to the step.
    #[serde(default)]
    before: Option<Worst<Hook>>,
    #[serde(default)]
    after: Option<Worst<Hook>>,
}

#[derive(serde::Deserialize)]
#[serde(expecting = "a hook object")]
struct Hook {
    #[serde(default)]
    result: Option<StepResult>,
}

#[derive(serde::Deserialize)]
#[serde(expecting = "a result object")]
struct StepResult {
    #[serde(default)]
    status: Option<Status>,
}

trait Judged {
    fn verdict(&self) -> Verdict;
}

impl Judged for Step {
    fn verdict(&self) -> Verdict {
        // A step with no result never ran.
        let own = self
            .result
            .as_ref()
            .and_then(|r| r.status)
            .map_or(Verdict::Skipped, |s| s.0);
        [&self.before, &self.after]
            .into_iter()
            .flatten()
            .map(|w| w.verdict)
            .fold(own, Verdict::max)
    }
}

impl Judged for Hook {
    /// A hook can only fail a scenario: hooks are reported as skipped when
    /// the scenario was, and that verdict comes from its steps already.
    fn verdict(&self) -> Verdict {
        match self.result.as_ref().and_then(|r| r.status) {
            Some(Status(Verdict::Failed)) => Verdict::Failed,
            _ => Verdict::Passed,
        }
    }
}

/// The worst verdict of a JSON array's items, read one item at a time.
struct Worst<T> {
    verdict: Verdict,
    items: PhantomData<T>,
}

impl<'de, T: Deserialize<'de> + Judged> Deserialize<'de> for Worst<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Judged> Visitor<'de> for Items<T> {
            type Value = Verdict;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of steps or hooks")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Verdict, A::Error> {
                let mut worst = Verdict::Passed;
                while let Some(item) = seq.next_element::<T>()? {
                    worst = worst.max(item.verdict());
                }
                Ok(worst)
            }
        }
        deserializer
            .deserialize_seq(Items::<T>(PhantomData))
            .map(|verdict| Worst {
                verdict,
                items: PhantomData,
            })
    }
}

/// A step's `result.status`.
#[derive(Clone, Copy)]
struct Status(Verdict);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor(|status: &str| {
            let is = |name: &str| status.eq_ignore_ascii_case(name);
            Status(if is("passed") {
                Verdict::Passed
            } else if is("failed") || is("ambiguous") {
                Verdict::Failed
            } else {
                // skipped, pending, undefined, and anything a newer Cucumber
                // invents: the step did not pass, but nothing says it failed.
                Verdict::Skipped
            })
        }))
    }
}

/// An element's `type`: only backgrounds matter, every other kind is a
/// scenario (older Cucumber-Ruby also wrote `scenario_outline`).
struct IsBackground(bool);

impl<'de> Deserialize<'de> for IsBackground {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor(|kind: &str| {
            IsBackground(kind.eq_ignore_ascii_case("background"))
        }))
    }
}

/// Classifies a JSON string where it lies, without copying it.
struct StrVisitor<F>(F);

impl<T, F: FnOnce(&str) -> T> Visitor<'_> for StrVisitor<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<T, E> {
        Ok((self.0)(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: u64, passed: u64, failed: u64, skipped: u64) -> TestCounts {
        TestCounts {
            total,
            passed,
            failed,
            skipped,
        }
    }

    const PYTEST: &[u8] = include_bytes!("testdata/junit-pytest.xml");
    const SUREFIRE: &[u8] = include_bytes!("testdata/junit-surefire.xml");
    const JEST: &[u8] = include_bytes!("testdata/junit-jest.xml");
    const GO: &[u8] = include_bytes!("testdata/junit-go.xml");
    const GRADLE: &[u8] = include_bytes!("testdata/junit-gradle.xml");
    const CUCUMBER_JS: &[u8] = include_bytes!("testdata/cucumber-js.json");
    const CUCUMBER_JVM: &[u8] = include_bytes!("testdata/cucumber-jvm.json");
    const XUNIT_TRX: &[u8] = include_bytes!("testdata/dotnet-xunit.trx");
    const MSTEST_TRX: &[u8] = include_bytes!("testdata/mstest-datarow.trx");

    #[test]
    fn junit_pytest() {
        // Setup errors are failures; xfail is reported as skipped.
        assert_eq!(parse_junit_xml(PYTEST).unwrap(), counts(6, 2, 2, 2));
    }

    #[test]
    fn junit_surefire() {
        // The flaky test passed on its rerun.
        assert_eq!(parse_junit_xml(SUREFIRE).unwrap(), counts(5, 2, 2, 1));
    }

    #[test]
    fn junit_jest() {
        assert_eq!(parse_junit_xml(JEST).unwrap(), counts(5, 2, 1, 2));
    }

    #[test]
    fn junit_go() {
        // Includes a subtest and a package that failed to build.
        assert_eq!(parse_junit_xml(GO).unwrap(), counts(5, 2, 2, 1));
    }

    #[test]
    fn junit_gradle_with_bom() {
        assert!(GRADLE.starts_with(UTF8_BOM));
        assert_eq!(parse_junit_xml(GRADLE).unwrap(), counts(4, 2, 1, 1));
    }

    #[test]
    fn junit_ignores_summary_attributes() {
        let xml = br#"<testsuite tests="99" failures="42" skipped="7">
            <testcase name="a"/><testcase name="b"><failure/></testcase>
        </testsuite>"#;
        assert_eq!(parse_junit_xml(xml).unwrap(), counts(2, 1, 1, 0));
    }

    #[test]
    fn junit_empty_testsuites_is_zero_tests() {
        assert_eq!(
            parse_junit_xml(b"<testsuites/>").unwrap(),
            TestCounts::default()
        );
        assert_eq!(
            parse_junit_xml(b"<?xml version=\"1.0\"?>\n<testsuites>\n</testsuites>\n").unwrap(),
            TestCounts::default()
        );
        assert_eq!(
            parse_junit_xml(b"<testsuite name=\"x\" tests=\"0\"></testsuite>").unwrap(),
            TestCounts::default()
        );
    }

    #[test]
    fn junit_nested_testsuites() {
        let xml = br#"<testsuites>
          <testsuite name="outer">
            <testsuite name="inner-1"><testcase name="a"/><testcase name="b"><skipped/></testcase></testsuite>
            <testsuite name="inner-2">
              <testsuite name="deepest"><testcase name="c"><error type="Boom"/></testcase></testsuite>
            </testsuite>
            <testcase name="d"/>
          </testsuite>
        </testsuites>"#;
        assert_eq!(parse_junit_xml(xml).unwrap(), counts(4, 2, 1, 1));
    }

    #[test]
    fn junit_outcome_markers() {
        let xml = br#"<testsuite>
          <testcase name="ignored"><ignored/></testcase>
          <testcase name="failed and skipped"><skipped/><failure/></testcase>
          <testcase name="two failures"><failure/><error/></testcase>
          <testcase name="failure only in output"><system-out>&lt;failure/&gt;</system-out></testcase>
          <testcase name="nested marker"><properties><failure/></properties></testcase>
          <testcase name="rerun"><rerunFailure/><failure/></testcase>
        </testsuite>"#;
        assert_eq!(parse_junit_xml(xml).unwrap(), counts(6, 2, 3, 1));
    }

    #[test]
    fn junit_namespace_prefixes_are_accepted() {
        let xml = br#"<j:testsuite xmlns:j="urn:junit"><j:testcase name="a"><j:failure/></j:testcase></j:testsuite>"#;
        assert_eq!(parse_junit_xml(xml).unwrap(), counts(1, 0, 1, 0));
    }

    #[test]
    fn junit_truncated() {
        let cut = PYTEST.len() / 2;
        let err = parse_junit_xml(&PYTEST[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                ReportError::Truncated { .. } | ReportError::MalformedXml { .. }
            ),
            "{err}"
        );

        let err = parse_junit_xml(b"<testsuites><testsuite><testcase name=\"a\"/>").unwrap_err();
        let ReportError::Truncated { element, at, .. } = &err else {
            panic!("expected Truncated, got {err:?}");
        };
        assert_eq!(element, "testsuite");
        assert_eq!(at.byte, Some(43));
        assert!(err.to_string().contains("JUNITXML"), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn junit_truncated_inside_a_tag() {
        let err = parse_junit_xml(b"<testsuite><testcase name=\"a").unwrap_err();
        assert!(matches!(err, ReportError::MalformedXml { .. }), "{err:?}");
    }

    #[test]
    fn junit_mismatched_tags_report_line_and_column() {
        let xml = b"<testsuite>\n  <testcase>\n  </testsuite>\n";
        let err = parse_junit_xml(xml).unwrap_err();
        let ReportError::MalformedXml { at, .. } = &err else {
            panic!("expected MalformedXml, got {err:?}");
        };
        assert_eq!((at.line, at.column), (3, 3));
        let message = err.to_string();
        assert!(message.contains("line 3, column 3"), "{message}");
        assert!(message.contains("</testcase>"), "{message}");
    }

    #[test]
    fn junit_not_xml() {
        let err = parse_junit_xml(b"{\"tests\": 3}").unwrap_err();
        let ReportError::NotXml { found, at, .. } = &err else {
            panic!("expected NotXml, got {err:?}");
        };
        assert_eq!(found, "{\"tests\": 3}");
        assert_eq!(at.byte, Some(0));

        let err = parse_junit_xml(b"\n\n   PASS src/cart.test.js\n").unwrap_err();
        let ReportError::NotXml { found, at, .. } = &err else {
            panic!("expected NotXml, got {err:?}");
        };
        assert_eq!(found, "PASS src/cart.test.js");
        assert_eq!((at.line, at.column), (3, 4));

        let long = "x".repeat(500);
        let err = parse_junit_xml(long.as_bytes()).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn junit_wrong_root() {
        let err = parse_junit_xml(b"<?xml version=\"1.0\"?><html><body/></html>").unwrap_err();
        let ReportError::WrongRoot { found, .. } = &err else {
            panic!("expected WrongRoot, got {err:?}");
        };
        assert_eq!(found, "html");
        assert!(err.to_string().contains("<testsuites> or <testsuite>"));

        // A TRX file given as JUnit names the root it found.
        let err = parse_junit_xml(XUNIT_TRX).unwrap_err();
        assert!(
            matches!(&err, ReportError::WrongRoot { found, .. } if found == "TestRun"),
            "{err:?}"
        );
    }

    #[test]
    fn junit_no_root_element() {
        let err = parse_junit_xml(b"<?xml version=\"1.0\"?>\n<!-- no tests ran -->\n").unwrap_err();
        assert!(matches!(err, ReportError::NoRootElement { .. }), "{err:?}");
    }

    #[test]
    fn junit_content_after_root() {
        for xml in [
            &b"<testsuite/><testsuite/>"[..],
            b"<testsuite></testsuite>\ngarbage",
            b"<testsuite></testsuite><![CDATA[x]]>",
        ] {
            let err = parse_junit_xml(xml).unwrap_err();
            assert!(
                matches!(err, ReportError::TrailingContent { .. }),
                "{err:?}"
            );
        }
        // Comments and whitespace after the root are allowed.
        assert_eq!(
            parse_junit_xml(b"<testsuite><testcase/></testsuite>\n<!-- done -->\n").unwrap(),
            counts(1, 1, 0, 0)
        );
    }

    #[test]
    fn junit_empty_inputs() {
        for input in [&b""[..], b"   \n\t ", UTF8_BOM, b"\xEF\xBB\xBF\n"] {
            let err = parse_junit_xml(input).unwrap_err();
            assert!(matches!(err, ReportError::Empty { .. }), "{err:?}");
            assert_eq!(err.to_string(), "JUNITXML report is empty");
        }
    }

    #[test]
    fn junit_utf16_is_refused_with_a_reason() {
        let utf16: Vec<u8> = "\u{feff}<testsuites/>"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let err = parse_junit_xml(&utf16).unwrap_err();
        assert!(
            matches!(
                err,
                ReportError::UnsupportedEncoding {
                    encoding: "UTF-16",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_matter_only_where_they_are_read() {
        // Test output in a legacy encoding must not hide the counts.
        let xml = b"<testsuite><testcase name=\"caf\xE9\"><system-out>\xFF\xFE</system-out></testcase></testsuite>";
        assert_eq!(parse_junit_xml(xml).unwrap(), counts(1, 1, 0, 0));

        let xml = b"<TestRun>\n<UnitTestResult outcome=\"Pass\xE9d\"/></TestRun>";
        let err = parse_trx(xml).unwrap_err();
        let ReportError::MalformedXml { at, .. } = &err else {
            panic!("expected MalformedXml, got {err:?}");
        };
        assert_eq!((at.line, at.column), (2, 1));
    }

    #[test]
    fn xml_error_offsets_count_the_bom() {
        let err = parse_junit_xml(b"\xEF\xBB\xBF<testsuite></testcase>").unwrap_err();
        let ReportError::MalformedXml { at, .. } = &err else {
            panic!("expected MalformedXml, got {err:?}");
        };
        assert_eq!(at.byte, Some(14));
    }

    #[test]
    fn cucumber_js() {
        // Hooks appear as hidden steps; a failing After hook fails its scenario.
        assert_eq!(
            parse_cucumber_json(CUCUMBER_JS).unwrap(),
            counts(7, 2, 3, 2)
        );
    }

    #[test]
    fn cucumber_jvm() {
        // Backgrounds are not counted, but a failed one fails its scenario.
        assert_eq!(
            parse_cucumber_json(CUCUMBER_JVM).unwrap(),
            counts(5, 2, 2, 1)
        );
    }

    #[test]
    fn cucumber_statuses() {
        let json = br#"[{"elements": [
            {"type": "scenario", "steps": [{"result": {"status": "passed"}}]},
            {"type": "scenario", "steps": [{"result": {"status": "passed"}}, {"result": {"status": "failed"}}, {"result": {"status": "skipped"}}]},
            {"type": "scenario", "steps": [{"result": {"status": "undefined"}}, {"result": {"status": "skipped"}}]},
            {"type": "scenario", "steps": [{"result": {"status": "pending"}}]},
            {"type": "scenario", "steps": [{"result": {"status": "ambiguous"}}]},
            {"type": "scenario", "steps": [{"result": {"status": "skipped"}}, {"result": {"status": "failed"}}]},
            {"type": "scenario", "steps": [{"name": "never ran"}]},
            {"type": "scenario", "steps": []},
            {"type": "scenario", "steps": [{"result": {"status": "PASSED"}}], "after": [{"result": {"status": "failed"}}]},
            {"type": "scenario", "steps": [{"result": {"status": "passed"}}], "before": [{"result": {"status": "skipped"}}]},
            {"type": "scenario", "steps": [{"result": {"status": "passed", "after": []}, "after": [{"result": {"status": "failed"}}]}]}
        ]}]"#;
        assert_eq!(parse_cucumber_json(json).unwrap(), counts(11, 3, 5, 3));
    }

    #[test]
    fn cucumber_background_applies_to_next_scenario_only() {
        let json = br#"[{"elements": [
            {"type": "background", "steps": [{"result": {"status": "failed"}}]},
            {"type": "scenario", "steps": [{"result": {"status": "skipped"}}]},
            {"type": "scenario", "steps": [{"result": {"status": "passed"}}]},
            {"type": "background", "steps": [{"result": {"status": "passed"}}]}
        ]}]"#;
        assert_eq!(parse_cucumber_json(json).unwrap(), counts(2, 1, 1, 0));
    }

    #[test]
    fn cucumber_tolerates_missing_and_null_fields() {
        let json = br#"[
            {"name": "no elements"},
            {"elements": null},
            {"elements": [{"steps": null, "before": null}, {}, {"type": null}]},
            {"elements": [{"steps": [{"result": null}, {"result": {"status": null}}]}]}
        ]"#;
        assert_eq!(parse_cucumber_json(json).unwrap(), counts(4, 3, 0, 1));
    }

    #[test]
    fn cucumber_empty_array_is_zero_tests() {
        assert_eq!(parse_cucumber_json(b"[]").unwrap(), TestCounts::default());
        assert_eq!(
            parse_cucumber_json(b"\xEF\xBB\xBF [ ] \n").unwrap(),
            TestCounts::default()
        );
    }

    #[test]
    fn cucumber_empty_inputs() {
        for input in [&b""[..], b" \n", UTF8_BOM] {
            let err = parse_cucumber_json(input).unwrap_err();
            assert!(matches!(err, ReportError::Empty { .. }), "{err:?}");
            assert_eq!(err.to_string(), "CUCUMBERJSON report is empty");
        }
    }

    #[test]
    fn cucumber_malformed_json() {
        let err = parse_cucumber_json(b"[{\"elements\": [\n  {\"steps\": [}\n]}]").unwrap_err();
        let ReportError::MalformedJson { at, .. } = &err else {
            panic!("expected MalformedJson, got {err:?}");
        };
        assert_eq!(at.line, 2);
        assert!(err.to_string().contains("line 2"), "{err}");

        let err = parse_cucumber_json(b"[] []").unwrap_err();
        assert!(matches!(err, ReportError::MalformedJson { .. }), "{err:?}");

        let err = parse_cucumber_json(b"PASS features/checkout.feature").unwrap_err();
        assert!(matches!(err, ReportError::MalformedJson { .. }), "{err:?}");
    }

    #[test]
    fn cucumber_truncated() {
        let cut = CUCUMBER_JS.len() / 2;
        let err = parse_cucumber_json(&CUCUMBER_JS[..cut]).unwrap_err();
        assert!(matches!(err, ReportError::TruncatedJson { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn cucumber_given_xml() {
        let err = parse_cucumber_json(GO).unwrap_err();
        let ReportError::NotJson { found, .. } = &err else {
            panic!("expected NotJson, got {err:?}");
        };
        assert_eq!(found, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        assert!(err.to_string().contains("file-format"), "{err}");
    }

    #[test]
    fn cucumber_unexpected_structure() {
        for json in [
            &b"{\"features\": []}"[..],
            b"[\"checkout.feature\"]",
            b"[{\"elements\": {\"name\": \"x\"}}]",
            b"[{\"elements\": [{\"steps\": [{\"result\": {\"status\": 3}}]}]}]",
            b"[{\"elements\": [{\"type\": [\"scenario\"]}]}]",
            b"null",
        ] {
            let err = parse_cucumber_json(json).unwrap_err();
            assert!(
                matches!(err, ReportError::UnexpectedStructure { .. }),
                "{}: {err:?}",
                String::from_utf8_lossy(json)
            );
            assert!(err.to_string().contains("not a Cucumber report"), "{err}");
        }
    }

    #[test]
    fn trx_xunit() {
        assert!(XUNIT_TRX.starts_with(UTF8_BOM));
        assert_eq!(parse_trx(XUNIT_TRX).unwrap(), counts(4, 2, 1, 1));
    }

    #[test]
    fn trx_mstest_data_rows_count_once() {
        // The data-driven parent carries its rows' outcome; Timeout fails,
        // Inconclusive is skipped.
        assert_eq!(parse_trx(MSTEST_TRX).unwrap(), counts(4, 1, 2, 1));
    }

    #[test]
    fn trx_outcomes() {
        let outcomes = [
            ("Passed", Verdict::Passed),
            ("PassedButRunAborted", Verdict::Passed),
            ("Failed", Verdict::Failed),
            ("Error", Verdict::Failed),
            ("Timeout", Verdict::Failed),
            ("Aborted", Verdict::Failed),
            ("NotExecuted", Verdict::Skipped),
            ("Inconclusive", Verdict::Skipped),
            ("Pending", Verdict::Skipped),
            ("NotRunnable", Verdict::Skipped),
            ("Something new", Verdict::Skipped),
            ("failed", Verdict::Failed),
        ];
        for (outcome, verdict) in outcomes {
            assert_eq!(trx_verdict(outcome), verdict, "{outcome}");
        }
        let xml =
            br#"<TestRun><Results><UnitTestResult testName="no outcome"/></Results></TestRun>"#;
        assert_eq!(parse_trx(xml).unwrap(), counts(1, 0, 0, 1));
    }

    #[test]
    fn trx_results_win_over_counters() {
        let xml = br#"<TestRun xmlns="http://microsoft.com/schemas/VisualStudio/TeamTest/2010">
          <Results><UnitTestResult outcome="Passed"/><UnitTestResult outcome="Failed"></UnitTestResult></Results>
          <ResultSummary outcome="Failed"><Counters total="10" passed="9" failed="1"/></ResultSummary>
        </TestRun>"#;
        assert_eq!(parse_trx(xml).unwrap(), counts(2, 1, 1, 0));
    }

    #[test]
    fn trx_counters_fallback() {
        let xml = br#"<TestRun xmlns="http://microsoft.com/schemas/VisualStudio/TeamTest/2010">
          <ResultSummary outcome="Failed">
            <Counters total="10" executed="9" passed="6" failed="1" error="1" timeout="0" aborted="0" inconclusive="1" passedButRunAborted="0" notRunnable="0" notExecuted="1" disconnected="0" warning="0" completed="0" inProgress="0" pending="0"/>
          </ResultSummary>
        </TestRun>"#;
        assert_eq!(parse_trx(xml).unwrap(), counts(10, 6, 2, 2));

        // Without `total`, the parts are summed.
        let xml = br#"<TestRun><ResultSummary><Counters passed="3" failed="1" notExecuted="2"/></ResultSummary></TestRun>"#;
        assert_eq!(parse_trx(xml).unwrap(), counts(6, 3, 1, 2));

        // A `total` too small for its parts is raised rather than trusted.
        let xml = br#"<TestRun><ResultSummary><Counters total="1" passed="3" failed="1"/></ResultSummary></TestRun>"#;
        assert_eq!(parse_trx(xml).unwrap(), counts(4, 3, 1, 0));
    }

    #[test]
    fn trx_bad_counter() {
        let xml = br#"<TestRun><ResultSummary><Counters total="many" passed="3"/></ResultSummary></TestRun>"#;
        let err = parse_trx(xml).unwrap_err();
        let ReportError::NotANumber {
            attribute, value, ..
        } = &err
        else {
            panic!("expected NotANumber, got {err:?}");
        };
        assert_eq!((attribute.as_str(), value.as_str()), ("total", "many"));
    }

    #[test]
    fn trx_bad_attribute_syntax() {
        let xml = br#"<TestRun><Results><UnitTestResult outcome="Passed" outcome="Failed"/></Results></TestRun>"#;
        let err = parse_trx(xml).unwrap_err();
        assert!(matches!(err, ReportError::MalformedXml { .. }), "{err:?}");
        let xml = br#"<TestRun><Results><UnitTestResult outcome=Passed/></Results></TestRun>"#;
        let err = parse_trx(xml).unwrap_err();
        assert!(matches!(err, ReportError::MalformedXml { .. }), "{err:?}");
        let xml = br#"<TestRun><Results><UnitTestResult outcome="&bogus;"/></Results></TestRun>"#;
        let err = parse_trx(xml).unwrap_err();
        assert!(matches!(err, ReportError::MalformedXml { .. }), "{err:?}");
        // An attribute nothing reads may hold anything.
        let xml = br#"<TestRun><Results><UnitTestResult testName="&nbsp;" outcome="Passed"/></Results></TestRun>"#;
        assert_eq!(parse_trx(xml).unwrap(), counts(1, 1, 0, 0));
    }

    #[test]
    fn trx_empty_run_is_zero_tests() {
        let xml = br#"<TestRun xmlns="http://microsoft.com/schemas/VisualStudio/TeamTest/2010"/>"#;
        assert_eq!(parse_trx(xml).unwrap(), TestCounts::default());
    }

    #[test]
    fn trx_malformed() {
        let cut = XUNIT_TRX.len() * 2 / 3;
        let err = parse_trx(&XUNIT_TRX[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                ReportError::Truncated { .. } | ReportError::MalformedXml { .. }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("VISUALSTUDIOTRX report"),
            "{err}"
        );

        let err = parse_trx(PYTEST).unwrap_err();
        assert!(
            matches!(&err, ReportError::WrongRoot { found, .. } if found == "testsuites"),
            "{err:?}"
        );

        let err = parse_trx(CUCUMBER_JS).unwrap_err();
        assert!(matches!(err, ReportError::NotXml { .. }), "{err:?}");

        for input in [&b""[..], b"\r\n"] {
            let err = parse_trx(input).unwrap_err();
            assert!(matches!(err, ReportError::Empty { .. }), "{err:?}");
        }
    }

    #[test]
    fn deep_nesting_is_handled_without_recursion() {
        let depth = 100_000;
        let mut xml = b"<testsuite><testcase>".to_vec();
        xml.extend(b"<a>".repeat(depth));
        xml.extend(b"<failure/>");
        xml.extend(b"</a>".repeat(depth));
        xml.extend(b"</testcase></testsuite>");
        assert_eq!(parse_junit_xml(&xml).unwrap(), counts(1, 1, 0, 0));

        let mut truncated = b"<testsuite>".to_vec();
        truncated.extend(b"<deep>".repeat(depth));
        let err = parse_junit_xml(&truncated).unwrap_err();
        assert!(
            matches!(&err, ReportError::Truncated { element, .. } if element == "deep"),
            "{err:?}"
        );

        let json = format!(
            "[{{\"x\": {}{}, \"elements\": [{{}}]}}]",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(
            parse_cucumber_json(json.as_bytes()).unwrap(),
            counts(1, 1, 0, 0)
        );
        let json = format!("[{{\"x\": {}", "[".repeat(depth));
        let err = parse_cucumber_json(json.as_bytes()).unwrap_err();
        assert!(matches!(err, ReportError::TruncatedJson { .. }), "{err:?}");
    }

    #[test]
    fn counts_add_up() {
        let mut sum = counts(3, 1, 1, 1);
        sum.add(counts(2, 2, 0, 0));
        assert_eq!(sum, counts(5, 3, 1, 1));
        sum.add(counts(u64::MAX, 0, 0, u64::MAX));
        assert_eq!(sum.total, u64::MAX);
    }

    #[test]
    fn counts_serialize_as_plain_numbers() {
        let json = serde_json::to_string(&counts(4, 2, 1, 1)).unwrap();
        assert_eq!(json, r#"{"total":4,"passed":2,"failed":1,"skipped":1}"#);
    }

    #[test]
    fn location_of_offset() {
        let file = b"ab\ncd\n\nef";
        let at = |offset| {
            let l = Location::of_offset(file, offset);
            (l.line, l.column)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(2), (1, 3));
        assert_eq!(at(3), (2, 1));
        assert_eq!(at(7), (4, 1));
        assert_eq!(at(1_000), (4, 3));
    }

    /// A small deterministic generator, so a failing input can be reproduced.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const FRAGMENTS: &[&str] = &[
        "<",
        ">",
        "/>",
        "</",
        "<?xml version=\"1.0\"?>",
        "<!--",
        "-->",
        "<![CDATA[",
        "]]>",
        "<testsuites>",
        "</testsuites>",
        "<testsuite>",
        "</testsuite>",
        "<testcase",
        "</testcase>",
        "<failure/>",
        "<error>",
        "<skipped/>",
        " name=\"a\"",
        "=",
        "\"",
        "'",
        "&amp;",
        "&",
        ";",
        "<TestRun>",
        "</TestRun>",
        "<UnitTestResult outcome=\"",
        "Passed",
        "Failed",
        "<Counters total=\"",
        "9\"",
        "\"/>",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "\"elements\"",
        "\"steps\"",
        "\"result\"",
        "\"status\"",
        "\"failed\"",
        "\"type\"",
        "\"background\"",
        "null",
        "true",
        "1e999",
        " ",
        "\n",
        "\u{feff}",
        "\u{0}",
    ];

    /// Random bytes, random fragments of report syntax, and damaged samples,
    /// since pure noise rarely gets past a parser's first check.
    fn random_inputs(seed: u64, samples: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut rng = XorShift(seed);
        (0..1_000)
            .map(|i| match i % 3 {
                0 => {
                    let len = rng.below(256);
                    (0..len).map(|_| rng.next() as u8).collect()
                }
                1 => {
                    let mut out = Vec::new();
                    for _ in 0..rng.below(64) {
                        out.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes());
                    }
                    out
                }
                _ => {
                    let sample = samples[rng.below(samples.len())];
                    let mut out = sample[..rng.below(sample.len() + 1)].to_vec();
                    for _ in 0..rng.below(8) {
                        if !out.is_empty() {
                            let at = rng.below(out.len());
                            out[at] = rng.next() as u8;
                        }
                    }
                    out
                }
            })
            .collect()
    }

    fn assert_never_panics(parse: fn(&[u8]) -> Result<TestCounts, ReportError>, seed: u64) {
        let samples: &[&[u8]] = &[
            PYTEST,
            SUREFIRE,
            JEST,
            GO,
            GRADLE,
            CUCUMBER_JS,
            CUCUMBER_JVM,
            XUNIT_TRX,
            MSTEST_TRX,
        ];
        let inputs = random_inputs(seed, samples);
        assert_eq!(inputs.len(), 1_000);
        for input in &inputs {
            if let Ok(c) = parse(input) {
                assert_eq!(c.total, c.passed + c.failed + c.skipped);
            }
        }
    }

    #[test]
    fn random_input_never_panics_junit() {
        assert_never_panics(parse_junit_xml, 0x9E37_79B9_7F4A_7C15);
    }

    #[test]
    fn random_input_never_panics_cucumber() {
        assert_never_panics(parse_cucumber_json, 0xD1B5_4A32_D192_ED03);
    }

    #[test]
    fn random_input_never_panics_trx() {
        assert_never_panics(parse_trx, 0x2545_F491_4F6C_DD1D);
    }
}
