//! Jobs from an Amazon SQS queue.
//!
//! One message is one JobSpec. A received message stays invisible to other agents for the
//! visibility timeout, which [`JobSource::extend`] keeps pushing forward while the job runs;
//! if the agent dies, the message simply reappears and another agent runs it (the daemon's
//! result store makes the second run's result the same job's).
//!
//! [`Delivery::handle`] is `<message-id>\n<receipt-handle>`: SQS settles a message by its
//! receipt handle, but logs and the dead-letter queue want the stable message id, and keeping
//! both in the handle needs no shared state between receiving and settling.
//!
//! Poison messages: a message that keeps coming back (the agent crashing on it, or a job that
//! never finishes within its lease) is delivered with a growing `receive_count`. `next` still
//! hands it over, because the daemon has to store a result for it; before running anything
//! the daemon compares the count with `max_receive_count` (the rule of
//! [`SqsSource::is_poison`]) and, for a poison delivery, stores a `FAILED` result and calls [`JobSource::reject`], which moves the message to
//! the dead-letter queue when one is configured and deletes it in every case.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use futures_util::future::BoxFuture;

use super::result::JobResult;
use super::source::{Delivery, JobSource, Lease, SourceError};
use crate::aws::error_text;

/// SQS's own limits: long polls of at most 20 s, visibility of at most 12 h.
const MAX_WAIT: Duration = Duration::from_secs(20);
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// A reason on the dead-letter queue is a line for a human; anything longer is a dump that
/// belongs in the stored result.
const REASON_CHARS: usize = 256;

/// Message attributes on a message moved to the dead-letter queue.
pub const REASON_ATTRIBUTE: &str = "agent-reject-reason";
pub const SOURCE_QUEUE_ATTRIBUTE: &str = "agent-source-queue";
pub const SOURCE_MESSAGE_ID_ATTRIBUTE: &str = "agent-source-message-id";

#[derive(Debug, Clone)]
pub struct SqsOptions {
    pub queue_url: String,
    /// How long a received message stays hidden from other agents without an `extend`.
    pub visibility_timeout: Duration,
    /// The long-poll window of one `next` (at most 20 s).
    pub wait_time: Duration,
    /// Deliveries beyond this many are poison (see [`SqsSource::is_poison`]).
    pub max_receive_count: u32,
    /// Where rejected messages go, with the reason; without one they are only deleted.
    pub dead_letter_queue_url: Option<String>,
}

pub struct SqsSource {
    client: Client,
    options: SqsOptions,
    name: String,
}

impl SqsSource {
    /// Checks the options and that the queue (and the dead-letter queue) exist and can be
    /// read with these credentials, so a wrong URL fails at start-up rather than on the first
    /// poll.
    ///
    /// The client takes its endpoint, region and credentials from `config`, so an endpoint
    /// override (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS`) applies. An operation timeout in
    /// `config` must leave room for the long poll of `wait_time`.
    pub async fn new(
        config: &aws_config::SdkConfig,
        options: SqsOptions,
    ) -> Result<Self, SourceError> {
        check_options(&options)?;
        let source = SqsSource {
            client: Client::new(config),
            name: format!("sqs:{}", queue_name(&options.queue_url)),
            options,
        };
        source.check_queue(&source.options.queue_url).await?;
        if let Some(dlq) = &source.options.dead_letter_queue_url {
            source.check_queue(dlq).await?;
        }
        Ok(source)
    }

    /// Whether this delivery came back more often than `max_receive_count` allows: the daemon
    /// must not run it, but store a rejection and call [`JobSource::reject`].
    pub fn is_poison(&self, delivery: &Delivery) -> bool {
        delivery.receive_count > self.options.max_receive_count
    }

    pub fn options(&self) -> &SqsOptions {
        &self.options
    }

    async fn check_queue(&self, queue_url: &str) -> Result<(), SourceError> {
        self.client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| describe("GetQueueAttributes", queue_url, e).into_error())?;
        Ok(())
    }

    async fn receive(&self) -> Result<Option<Delivery>, SourceError> {
        let url = &self.options.queue_url;
        let output = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(1)
            .wait_time_seconds(seconds(self.options.wait_time))
            .visibility_timeout(seconds(self.options.visibility_timeout))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| describe("ReceiveMessage", url, e).into_error())?;
        let Some(message) = output.messages.unwrap_or_default().into_iter().next() else {
            return Ok(None);
        };
        let message_id = message.message_id.unwrap_or_default();
        let Some(receipt) = message.receipt_handle else {
            // Cannot happen with SQS; without a handle the message could never be settled,
            // and it reappears after the visibility timeout anyway.
            return Err(SourceError::Transient(format!(
                "SQS ReceiveMessage on {url}: message {message_id} came without a receipt handle"
            )));
        };
        let receive_count = message
            .attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(1)
            .max(1);
        tracing::debug!(queue = %url, message_id, receive_count, "received a message");
        Ok(Some(Delivery {
            handle: format!("{message_id}\n{receipt}"),
            body: message.body.unwrap_or_default().into_bytes(),
            receive_count,
            attachments: None,
            refused: None,
        }))
    }

    async fn change_visibility(
        &self,
        delivery: &Delivery,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let (_, receipt) = split_handle(&delivery.handle);
        self.client
            .change_message_visibility()
            .queue_url(&self.options.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds(timeout))
            .send()
            .await
            .map_err(|e| describe("ChangeMessageVisibility", &self.options.queue_url, e))?;
        Ok(())
    }

    /// Deletes the message; a receipt handle SQS no longer knows means the message is gone
    /// already or went back to the queue, and either way the stored result makes a later
    /// delivery harmless, so that is only worth a warning.
    async fn delete(&self, delivery: &Delivery) -> Result<(), SourceError> {
        let url = &self.options.queue_url;
        let (message_id, receipt) = split_handle(&delivery.handle);
        match self
            .client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = describe("DeleteMessage", url, e);
                if failure.handle_expired() {
                    tracing::warn!(
                        queue = %url, message_id, code = %failure.code,
                        "message not deleted: its receipt handle expired; it may be delivered again"
                    );
                    Ok(())
                } else {
                    Err(failure.into_error())
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        dlq: &str,
        delivery: &Delivery,
        result: &JobResult,
    ) -> Result<(), SourceError> {
        let (message_id, _) = split_handle(&delivery.handle);
        let reason = reject_reason(result);
        let mut send = self
            .client
            .send_message()
            .queue_url(dlq)
            .message_body(String::from_utf8_lossy(&delivery.body))
            .message_attributes(REASON_ATTRIBUTE, string_attribute(&reason)?)
            .message_attributes(
                SOURCE_QUEUE_ATTRIBUTE,
                string_attribute(&self.options.queue_url)?,
            );
        if !message_id.is_empty() {
            send =
                send.message_attributes(SOURCE_MESSAGE_ID_ATTRIBUTE, string_attribute(message_id)?);
        }
        if dlq.ends_with(".fifo") {
            // A FIFO queue refuses messages without a group; the message id as deduplication
            // id keeps a retried reject (delete failed the first time) from landing twice.
            send = send.message_group_id("agent-rejected");
            if !message_id.is_empty() {
                send = send.message_deduplication_id(message_id);
            }
        }
        send.send()
            .await
            .map_err(|e| describe("SendMessage", dlq, e).into_error())?;
        tracing::info!(
            queue = %self.options.queue_url, dead_letter_queue = %dlq, message_id, %reason,
            "moved a rejected message to the dead-letter queue"
        );
        Ok(())
    }
}

impl JobSource for SqsSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next(&self) -> BoxFuture<'_, Result<Option<Delivery>, SourceError>> {
        // Dropping this mid-poll (shutdown) loses nothing: a message SQS handed out without
        // the answer arriving reappears after the visibility timeout.
        Box::pin(self.receive())
    }

    fn heartbeat(&self) -> Option<Duration> {
        // Three chances to extend before the lease runs out absorb a slow or failed call.
        Some((self.options.visibility_timeout / 3).max(Duration::from_secs(1)))
    }

    fn extend<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<Lease, SourceError>> {
        // SQS has no way to call a message off: a lost lease is not a cancellation (the
        // job may simply run twice, which the result store tolerates).
        Box::pin(async move {
            match self
                .change_visibility(delivery, self.options.visibility_timeout)
                .await
            {
                Ok(()) => Ok(Lease::Held),
                // The lease is lost (expired, or past SQS's 12 h limit since the first
                // receive), not the source broken: the job may run twice, which the result
                // store tolerates, so the daemon should carry on rather than stop polling.
                Err(f) if f.handle_expired() || f.norm_code() == "InvalidParameterValue" => {
                    let (message_id, _) = split_handle(&delivery.handle);
                    Err(SourceError::Transient(format!(
                        "lease on message {message_id} of SQS queue {} lost; another agent may \
                         run it too ({}): {}",
                        self.options.queue_url, f.code, f.detail
                    )))
                }
                Err(f) => Err(f.into_error()),
            }
        })
    }

    fn complete<'a>(
        &'a self,
        delivery: &'a Delivery,
        _result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        // SQS has nowhere to report a result; the daemon has stored it already.
        Box::pin(self.delete(delivery))
    }

    fn release<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            match self.change_visibility(delivery, Duration::ZERO).await {
                Ok(()) => Ok(()),
                // Already visible again (or gone): exactly what releasing asks for.
                Err(f) if f.handle_expired() => {
                    let (message_id, _) = split_handle(&delivery.handle);
                    tracing::warn!(
                        queue = %self.options.queue_url, message_id, code = %f.code,
                        "release: the lease had already expired"
                    );
                    Ok(())
                }
                Err(f) => Err(f.into_error()),
            }
        })
    }

    fn reject<'a>(
        &'a self,
        delivery: &'a Delivery,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            // Copy before delete: if the copy fails the message stays, and comes back to be
            // rejected again, rather than vanishing.
            if let Some(dlq) = &self.options.dead_letter_queue_url {
                self.dead_letter(dlq, delivery, result).await?;
            }
            self.delete(delivery).await
        })
    }
}

fn check_options(options: &SqsOptions) -> Result<(), SourceError> {
    let url = &options.queue_url;
    let bad = |why: String| Err(SourceError::Fatal(format!("SQS queue {url}: {why}")));
    if url.is_empty() {
        return Err(SourceError::Fatal("SQS queue URL is empty".to_string()));
    }
    if seconds(options.wait_time) > seconds(MAX_WAIT) {
        return bad(format!(
            "wait time {:?} is longer than SQS's 20 s long-poll limit",
            options.wait_time
        ));
    }
    if options.visibility_timeout < Duration::from_secs(1)
        || seconds(options.visibility_timeout) > seconds(MAX_VISIBILITY)
    {
        return bad(format!(
            "visibility timeout {:?} must be between 1 s and 12 h",
            options.visibility_timeout
        ));
    }
    if options.max_receive_count == 0 {
        return bad("max receive count must be at least 1".to_string());
    }
    Ok(())
}

/// Whole seconds for SQS, rounded up so a lease is never shorter than asked.
fn seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// The queue's name: the last segment of its URL.
fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// `(message id, receipt handle)`; a handle without the message id (not made by this
/// source) is taken as a bare receipt handle.
fn split_handle(handle: &str) -> (&str, &str) {
    handle.split_once('\n').unwrap_or(("", handle))
}

fn reject_reason(result: &JobResult) -> String {
    let reason = result
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .unwrap_or(result.status.as_str());
    // SQS refuses attribute values with characters outside XML's set; a refused reason
    // would keep the poison message in the queue.
    reason
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => '?',
            c => c,
        })
        .take(REASON_CHARS)
        .collect()
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, SourceError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| SourceError::Fatal(format!("SQS message attribute: {e}")))
}

/// What went wrong with one SQS call, kept apart from [`SourceError`] so each operation can
/// decide about the codes that mean "this delivery", not "this source".
struct Failure {
    operation: &'static str,
    queue_url: String,
    /// The AWS error code as sent (`AWS.SimpleQueueService.NonExistentQueue`), empty when
    /// SQS was not reached.
    code: String,
    detail: String,
    transient: bool,
}

const NO_QUEUE_CODES: &[&str] = &["NonExistentQueue", "QueueDoesNotExist"];

const DENIED_CODES: &[&str] = &["AccessDenied", "AccessDeniedException", "KmsAccessDenied"];

const CREDENTIAL_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId",
    "MissingAuthenticationToken",
    "InvalidSecurity",
    "ExpiredToken",
    "ExpiredTokenException",
];

/// The receipt handle no longer designates an in-flight message.
const EXPIRED_HANDLE_CODES: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "InvalidIdFormat",
    "MessageNotInflight",
];

impl Failure {
    /// The code without the `AWS.SimpleQueueService.` prefix that SQS's query-compatible
    /// errors carry, so both spellings of a code match.
    fn norm_code(&self) -> &str {
        self.code
            .strip_prefix("AWS.SimpleQueueService.")
            .unwrap_or(&self.code)
    }

    fn handle_expired(&self) -> bool {
        EXPIRED_HANDLE_CODES.contains(&self.norm_code())
    }

    fn into_error(self) -> SourceError {
        let Failure {
            operation,
            queue_url: url,
            code,
            detail,
            transient,
        } = &self;
        let norm = self.norm_code();
        if code.is_empty() {
            let text = format!("SQS {operation} on queue {url} failed: {detail}");
            return if *transient {
                SourceError::Transient(text)
            } else {
                SourceError::Fatal(text)
            };
        }
        if *transient {
            SourceError::Transient(format!(
                "SQS {operation} on queue {url} failed ({code}): {detail}"
            ))
        } else if NO_QUEUE_CODES.contains(&norm) {
            SourceError::Fatal(format!(
                "SQS queue {url} does not exist ({code}): check the queue URL, the region \
                 and the account"
            ))
        } else if DENIED_CODES.contains(&norm) {
            SourceError::Fatal(format!(
                "SQS {operation} on queue {url} denied ({code}): {detail}"
            ))
        } else if CREDENTIAL_CODES.contains(&norm) {
            SourceError::Fatal(format!(
                "SQS {operation} on queue {url}: AWS refused the agent's credentials \
                 ({code}): {detail}"
            ))
        } else {
            SourceError::Fatal(format!(
                "SQS {operation} on queue {url} failed ({code}): {detail}"
            ))
        }
    }
}

fn describe<E>(
    operation: &'static str,
    queue_url: &str,
    error: SdkError<E, HttpResponse>,
) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = error.code().unwrap_or_default().to_string();
    let norm = code
        .strip_prefix("AWS.SimpleQueueService.")
        .unwrap_or(&code);
    let transient = crate::aws::transient::is_transient(&error, norm);
    let detail = match &error {
        SdkError::ServiceError(_) => error
            .message()
            .map_or_else(|| error_text(&error), str::to_string),
        // Network trouble, timeouts and answers that are not SQS's (a proxy's error page);
        // credentials that cannot be loaded right now (instance metadata) land here too.
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            format!("SQS not reached: {}", error_text(&error))
        }
        // The request could not even be built (no region, an invalid endpoint).
        _ => error_text(&error),
    };
    Failure {
        operation,
        queue_url: queue_url.to_string(),
        code,
        detail,
        transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::result::JobStatus;

    fn options() -> SqsOptions {
        SqsOptions {
            queue_url: "https://sqs.us-east-1.amazonaws.com/123456789012/jobs".to_string(),
            visibility_timeout: Duration::from_secs(60),
            wait_time: Duration::from_secs(20),
            max_receive_count: 3,
            dead_letter_queue_url: None,
        }
    }

    #[test]
    fn handle_carries_message_id_and_receipt() {
        assert_eq!(split_handle("id-1\nAQEB+x/=="), ("id-1", "AQEB+x/=="));
        assert_eq!(split_handle("AQEB+x/=="), ("", "AQEB+x/=="));
    }

    #[test]
    fn queue_name_is_the_last_segment() {
        assert_eq!(queue_name(&options().queue_url), "jobs");
        assert_eq!(queue_name("http://127.0.0.1:5000/123/q.fifo/"), "q.fifo");
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds(Duration::from_millis(1500)), 2);
        assert_eq!(seconds(Duration::from_secs(20)), 20);
        assert_eq!(seconds(Duration::ZERO), 0);
        assert_eq!(seconds(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    #[test]
    fn options_within_sqs_limits() {
        assert!(check_options(&options()).is_ok());
        let mut o = options();
        o.wait_time = Duration::from_millis(20_001);
        assert!(matches!(check_options(&o), Err(SourceError::Fatal(m)) if m.contains("20 s")));
        let mut o = options();
        o.visibility_timeout = Duration::from_millis(500);
        assert!(check_options(&o).is_err());
        let mut o = options();
        o.visibility_timeout = Duration::from_secs(12 * 3600 + 1);
        assert!(check_options(&o).is_err());
        let mut o = options();
        o.max_receive_count = 0;
        assert!(check_options(&o).is_err());
    }

    fn result(message: Option<&str>) -> JobResult {
        JobResult {
            job_id: "j".to_string(),
            kind: None,
            status: JobStatus::Rejected,
            message: message.map(str::to_string),
            agent: "a".to_string(),
            agent_labels: Default::default(),
            labels: Default::default(),
            source: "sqs:jobs".to_string(),
            received_at: String::new(),
            finished_at: String::new(),
            duration_ms: 0,
            attempts: 1,
            log: None,
            artifacts: Vec::new(),
            exported_variables: Default::default(),
            summary: serde_json::Value::Null,
        }
    }

    #[test]
    fn reject_reason_is_one_short_line() {
        assert_eq!(reject_reason(&result(None)), "REJECTED");
        assert_eq!(reject_reason(&result(Some("  "))), "REJECTED");
        assert_eq!(reject_reason(&result(Some("a\nb\u{1}"))), "a b?");
        let long = "é".repeat(300);
        assert_eq!(reject_reason(&result(Some(&long))).chars().count(), 256);
    }

    #[test]
    fn heartbeat_is_a_third_of_the_lease() {
        let source = |visibility| SqsSource {
            client: Client::from_conf(
                aws_sdk_sqs::Config::builder()
                    .behavior_version(aws_config::BehaviorVersion::latest())
                    .build(),
            ),
            options: SqsOptions {
                visibility_timeout: visibility,
                ..options()
            },
            name: "sqs:jobs".to_string(),
        };
        assert_eq!(
            source(Duration::from_secs(90)).heartbeat(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            source(Duration::from_secs(2)).heartbeat(),
            Some(Duration::from_secs(1))
        );
    }
}
