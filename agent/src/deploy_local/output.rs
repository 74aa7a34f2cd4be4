//! What `agent deploy-local` prints: each event as it runs, the scripts' output, and a
//! table of results with the failure's details.

use std::io::Write;

use crate::deploy::Observer;
use crate::deploy::hooks::Stream;
use crate::deploy::summary::{DeployStatus, DeploySummary, EventResult, EventStatus};

pub struct Terminal {
    pub quiet: bool,
}

impl Observer for Terminal {
    fn event_started(&mut self, event: &str, revision: Option<&str>) {
        if self.quiet {
            return;
        }
        match revision {
            Some(r) => println!("==> {event} (revision {r})"),
            None => println!("==> {event}"),
        }
    }

    fn line(&mut self, _event: &str, stream: Stream, line: &str) {
        if self.quiet {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = match stream {
            Stream::Stdout => writeln!(out, "    {line}"),
            Stream::Stderr => writeln!(out, "    [stderr] {line}"),
        };
    }

    fn event_finished(&mut self, result: &EventResult) {
        if self.quiet || result.status == EventStatus::Skipped {
            return;
        }
        println!(
            "<== {} {:?} in {}",
            result.event,
            result.status,
            seconds(result.duration_ms)
        );
    }

    fn note(&mut self, text: &str) {
        println!("note: {text}");
    }
}

fn seconds(ms: u64) -> String {
    format!("{}.{:02}s", ms / 1000, (ms % 1000) / 10)
}

/// The closing report, for the deployment and its rollback.
pub fn report(summary: &DeploySummary) -> String {
    let mut out = String::new();
    let what = if summary.creator == "rollback" {
        format!(
            "Rollback {} of {}",
            summary.deployment_id,
            summary.rollback_of.as_deref().unwrap_or("?")
        )
    } else {
        format!("Deployment {}", summary.deployment_id)
    };
    out.push_str(&format!(
        "\n{what} ({} / {}): {:?} in {}\n",
        summary.application_name,
        summary.deployment_group_name,
        summary.status,
        seconds(summary.duration_ms)
    ));
    let width = summary
        .events
        .iter()
        .map(|e| e.event.len())
        .max()
        .unwrap_or(0);
    for event in &summary.events {
        let detail = match (&event.status, &event.message) {
            (EventStatus::Succeeded, _) => seconds(event.duration_ms),
            (_, Some(message)) => first_line(message),
            (_, None) => String::new(),
        };
        let ignored = if event.ignored { " (ignored)" } else { "" };
        out.push_str(&format!(
            "  {:width$}  {:<9}{ignored}  {detail}\n",
            event.event,
            format!("{:?}", event.status),
        ));
    }
    if let Some(failed) = summary
        .events
        .iter()
        .find(|e| e.status == EventStatus::Failed)
    {
        out.push_str(&format!("\n{} failed", failed.event));
        if let Some(code) = failed.error_code {
            out.push_str(&format!(" ({code})"));
        }
        if let Some(script) = &failed.script_name {
            out.push_str(&format!(" in {script}"));
        }
        out.push_str(":\n");
        if let Some(message) = &failed.message {
            for line in message.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        if !failed.log.is_empty() {
            out.push_str("  last output:\n");
            for line in failed.log.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    if summary.status.halted()
        && let Some(message) = &summary.message
    {
        // A halt between events names no failed event; this line is all that says why.
        out.push_str(&format!("{:?}: {message}\n", summary.status));
    }
    for note in &summary.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out.push_str(&format!("revision kept in {}\n", summary.directory));
    if let Some(rollback) = &summary.rollback {
        out.push_str(&report(rollback));
        if rollback.status == DeployStatus::Succeeded {
            out.push_str("the last successful revision is back in place\n");
        }
    }
    out
}

fn first_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").to_string();
    if lines.next().is_some() {
        format!("{first} …")
    } else {
        first
    }
}
