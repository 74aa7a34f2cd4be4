//! Test reports: the files a `reports` group names are copied beside the artifacts and, for
//! test formats, counted as CodeBuild's report groups count them.

pub mod formats;

use std::path::{Path, PathBuf};

use buildspec::buildspec::ReportFormat;

use super::artifacts::{ArtifactSpec, copy_into, select};
use super::summary::ReportRecord;
use formats::TestCounts;

/// One report group with its values expanded by the build shell.
pub struct Group<'a> {
    pub name: &'a str,
    pub files: &'a [String],
    /// A host path, or relative to the source root.
    pub base_directory: Option<&'a str>,
    pub discard_paths: bool,
    pub format: ReportFormat,
}

/// Copies the group's files to `dest/<group>/` and counts its tests. Files that cannot be
/// parsed are listed in the second value and left out of the counts.
pub fn process(
    group: &Group<'_>,
    source_root: &Path,
    roots: &[PathBuf],
    dest: &Path,
) -> Result<(ReportRecord, Vec<String>), String> {
    let spec = ArtifactSpec {
        files: group.files,
        base_directory: group.base_directory,
        discard_paths: group.discard_paths,
        exclude_paths: &[],
        enable_symlinks: false,
    };
    let selected = select(source_root, roots, &spec).map_err(|e| e.to_string())?;
    let target = dest.join(dir_name(group.name));
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .map_err(|e| format!("cannot clear {}: {e}", target.display()))?;
    }
    copy_into(&selected, &target).map_err(|e| e.to_string())?;
    let mut counts = TestCounts::default();
    let mut problems = Vec::new();
    if !group.format.is_coverage() {
        for file in &selected {
            let bytes = match std::fs::read(&file.source) {
                Ok(bytes) => bytes,
                Err(e) => {
                    problems.push(format!("{}: {e}", file.relative));
                    continue;
                }
            };
            let parsed = match group.format {
                ReportFormat::CucumberJson => formats::parse_cucumber_json(&bytes),
                ReportFormat::VisualStudioTrx => formats::parse_trx(&bytes),
                _ => formats::parse_junit_xml(&bytes),
            };
            match parsed {
                Ok(c) => counts.add(c),
                Err(e) => problems.push(format!("{}: {e}", file.relative)),
            }
        }
    }
    let record = ReportRecord {
        group: group.name.to_string(),
        format: format_name(group.format).to_string(),
        total: counts.total,
        passed: counts.passed,
        failed: counts.failed,
        skipped: counts.skipped,
    };
    Ok((record, problems))
}

/// A report group may be named by an ARN; its directory is the group's own name.
fn dir_name(group: &str) -> String {
    let last = group.rsplit('/').next().unwrap_or(group);
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "report".to_string(),
        _ => cleaned,
    }
}

fn format_name(format: ReportFormat) -> &'static str {
    ReportFormat::ALL
        .iter()
        .find(|(_, f)| *f == format)
        .map_or("JUNITXML", |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_counted_and_copied() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("reports")).unwrap();
        std::fs::write(
            src.join("reports/a.xml"),
            "<testsuite><testcase name=\"a\"/><testcase name=\"b\"><failure/></testcase><testcase name=\"c\"><skipped/></testcase></testsuite>",
        )
        .unwrap();
        std::fs::write(src.join("reports/broken.xml"), "<testsuite>").unwrap();
        let files = vec!["reports/*.xml".to_string()];
        let group = Group {
            name: "arn:aws:codebuild:us-east-1:123456789012:report-group/unit tests",
            files: &files,
            base_directory: None,
            discard_paths: false,
            format: ReportFormat::JunitXml,
        };
        let dest = dir.path().join("out");
        let (record, problems) = process(&group, &src, std::slice::from_ref(&src), &dest).unwrap();
        assert_eq!(
            (record.total, record.passed, record.failed, record.skipped),
            (3, 1, 1, 1)
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(dest.join("unit_tests/reports/a.xml").is_file());
        assert!(dest.join("unit_tests/reports/broken.xml").is_file());
    }
}
