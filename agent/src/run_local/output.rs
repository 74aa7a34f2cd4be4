//! What run-local prints at the end: a table of phases and the result.

use std::io::IsTerminal;
use std::path::Path;

use crate::build::Summary;

pub fn color_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

pub fn print_summary(summary: &Summary, log_path: &Path, quiet: bool) {
    let mut out = String::new();
    out.push('\n');
    if summary.builds.is_empty() {
        out.push_str(&format!(
            "{:<18} {:<10} {:>10}\n",
            "PHASE", "STATUS", "DURATION"
        ));
        for phase in &summary.phases {
            out.push_str(&format!(
                "{:<18} {:<10} {:>10}\n",
                phase.phase,
                phase.status.as_str(),
                format_ms(phase.duration_ms)
            ));
        }
    } else {
        out.push_str(&format!(
            "{:<24} {:<10} {:>10}  NOTE\n",
            "BUILD", "STATUS", "DURATION"
        ));
        for member in &summary.builds {
            let ms: u64 = member
                .build
                .as_ref()
                .map_or(0, |b| b.phases.iter().map(|p| p.duration_ms).sum());
            out.push_str(&format!(
                "{:<24} {:<10} {:>10}  {}\n",
                member.identifier,
                member.status.as_str(),
                format_ms(ms),
                member.message.as_deref().unwrap_or("")
            ));
        }
    }
    for report in &summary.reports {
        out.push_str(&format!(
            "tests {}: {} total, {} passed, {} failed, {} skipped\n",
            report.group, report.total, report.passed, report.failed, report.skipped
        ));
    }
    for artifact in &summary.artifacts {
        out.push_str(&format!(
            "artifacts {}: {} files in {}\n",
            artifact.identifier,
            artifact.files.len(),
            artifact.location
        ));
    }
    for (name, value) in &summary.exported_variables {
        out.push_str(&format!("exported {name}={value}\n"));
    }
    out.push_str(&format!(
        "\nBuild {} {}\n",
        summary.build_id,
        summary.status.as_str()
    ));
    if !quiet {
        out.push_str(&format!("Log: {}\n", log_path.display()));
    }
    eprint!("{out}");
}

fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}
