//! Where jobs come from: one trait for the spool directory, SQS and CodePipeline.
//!
//! A source hands over a [`Delivery`] (the JobSpec bytes and what the source needs to settle
//! it later). The daemon runs the job while extending the lease, stores the result under the
//! job id, and only then settles the delivery: [`JobSource::complete`] after a result,
//! [`JobSource::release`] to give it back (drain), [`JobSource::reject`] for a message that
//! is not a job at all. At-least-once delivery, exactly-once results.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::result::JobResult;

/// One job as a source delivered it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The source's handle for this delivery (a file name, an SQS message id and receipt
    /// handle, a CodePipeline job id); opaque to the daemon, except that its first line
    /// names the delivery for people.
    pub handle: String,
    /// The JobSpec JSON.
    pub body: Vec<u8>,
    /// How many times this message was delivered, this time included (1 when unknown).
    pub receive_count: u32,
    /// Where the source keeps extra facts the job needs (CodePipeline: the input
    /// artifacts already fetched), as a local directory; `None` for most sources.
    pub attachments: Option<std::path::PathBuf>,
    /// Why the source refused the message without reading it whole (a spool file that is
    /// a FIFO, a device, a symlink, or larger than a JobSpec may be): the job is rejected
    /// with this reason and never parsed.
    pub refused: Option<String>,
}

impl Delivery {
    /// What names this delivery in messages and for a result without a job id.
    pub fn name(&self) -> &str {
        self.handle.lines().next().unwrap_or("")
    }
}

/// What a heartbeat learnt about a running job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// The job is still this agent's to run.
    Held,
    /// Whoever dispatched the job called it off, or it ended at the source (a pipeline
    /// stopped): the job is stopped as a drain stops it, and its result says why.
    Cancelled(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Worth retrying after a pause (network, throttling, the service answering 5xx).
    #[error("{0}")]
    Transient(String),
    /// Retrying will not help (no such queue, access denied); the source needs fixing.
    #[error("{0}")]
    Fatal(String),
}

pub trait JobSource: Send + Sync {
    /// A short name for logs and metrics: `spool:/var/lib/agent/spool`, `sqs:jobs`.
    fn name(&self) -> &str;

    /// Waits for the next job, up to the source's poll window; `None` when none arrived.
    fn next(&self) -> BoxFuture<'_, Result<Option<Delivery>, SourceError>>;

    /// How often [`JobSource::extend`] must be called while a job runs (the first call
    /// comes as the job starts); `None` when the source neither leases jobs nor can call
    /// one off.
    fn heartbeat(&self) -> Option<Duration>;

    /// Keeps the lease on a running job, and says whether the job is still wanted.
    fn extend<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<Lease, SourceError>>;

    /// The job's result is stored: report it where the source has a place for it and make
    /// sure the job is not delivered again.
    fn complete<'a>(
        &'a self,
        delivery: &'a Delivery,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SourceError>>;

    /// Gives the job back, unfinished, for this or another agent to run (drain, shutdown).
    fn release<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), SourceError>>;

    /// Whether `complete` takes the job's local artifacts away (CodePipeline uploads them as
    /// the action's outputs), so that the agent need not keep them once it succeeded.
    fn takes_artifacts(&self) -> bool {
        false
    }

    /// Whether a released delivery comes again (a spool file, a queue message), rather than
    /// ending at its source (a CodePipeline job is failed when it is given back).
    fn redelivers(&self) -> bool {
        true
    }

    /// The delivery is not a runnable job (not a JobSpec, or delivered too often without a
    /// result): report why and make sure it is never delivered again. A job the config
    /// refuses is a job with a result (REJECTED) and is completed, not rejected.
    fn reject<'a>(
        &'a self,
        delivery: &'a Delivery,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SourceError>>;
}
