//! `SqsSource` against a real (moto) SQS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use std::time::{Duration, Instant};

mod common;

use agent::daemon::result::{JobResult, JobStatus};
use agent::daemon::source::{Delivery, JobSource, SourceError};
use agent::daemon::sqs::{SqsOptions, SqsSource};
use aws_sdk_sqs::types::QueueAttributeName;
use common::moto;

async fn config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "AKIAAGENTTESTSQS0001",
            "sqs-test-secret",
            None,
            None,
            "test",
        ))
        .load()
        .await
}

async fn client() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&config().await)
}

async fn create_queue(name: &str) -> String {
    client()
        .await
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

async fn send(queue_url: &str, body: &str) {
    client()
        .await
        .send_message()
        .queue_url(queue_url)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

/// Messages in the queue, visible or not: what is really gone is gone from here.
async fn message_count(queue_url: &str) -> u64 {
    let attributes = client()
        .await
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|k| attributes[k].parse::<u64>().unwrap())
    .sum()
}

fn options(queue_url: &str, visibility_secs: u64, wait_secs: u64) -> SqsOptions {
    SqsOptions {
        queue_url: queue_url.to_string(),
        visibility_timeout: Duration::from_secs(visibility_secs),
        wait_time: Duration::from_secs(wait_secs),
        max_receive_count: 3,
        dead_letter_queue_url: None,
    }
}

async fn source(options: SqsOptions) -> SqsSource {
    SqsSource::new(&config().await, options).await.unwrap()
}

fn rejection(message: &str) -> JobResult {
    JobResult {
        job_id: "job-1".to_string(),
        kind: None,
        status: JobStatus::Rejected,
        message: Some(message.to_string()),
        agent: "test-agent".to_string(),
        agent_labels: Default::default(),
        labels: Default::default(),
        source: "sqs:test".to_string(),
        received_at: "2025-01-01T00:00:00Z".to_string(),
        finished_at: "2025-01-01T00:00:00Z".to_string(),
        duration_ms: 0,
        attempts: 1,
        log: None,
        artifacts: Vec::new(),
        exported_variables: Default::default(),
        summary: serde_json::Value::Null,
    }
}

async fn receive(source: &SqsSource) -> Delivery {
    source
        .next()
        .await
        .unwrap()
        .expect("a message in the queue")
}

#[tokio::test(flavor = "multi_thread")]
async fn receive_and_complete() {
    let url = create_queue("receive-complete").await;
    send(&url, r#"{"job":"one"}"#).await;
    let source = source(options(&url, 1, 1)).await;
    assert_eq!(source.name(), "sqs:receive-complete");
    assert_eq!(source.heartbeat(), Some(Duration::from_secs(1)));

    let delivery = receive(&source).await;
    assert_eq!(delivery.body, br#"{"job":"one"}"#);
    assert_eq!(delivery.receive_count, 1);
    assert!(!source.is_poison(&delivery));
    let (message_id, receipt) = delivery.handle.split_once('\n').unwrap();
    assert!(!message_id.is_empty() && !receipt.is_empty());

    source
        .complete(&delivery, &rejection("unused"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(source.next().await.unwrap().is_none());
    assert_eq!(message_count(&url).await, 0);

    // Settling twice (a retried complete) is not an error.
    source
        .complete(&delivery, &rejection("unused"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn extend_keeps_the_message_hidden() {
    let url = create_queue("extend").await;
    send(&url, "long job").await;
    let source = source(options(&url, 2, 1)).await;
    let other = self::source(options(&url, 2, 1)).await;

    let start = Instant::now();
    let delivery = receive(&source).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    source.extend(&delivery).await.unwrap(); // hidden until ~3 s
    tokio::time::sleep_until((start + Duration::from_millis(2500)).into()).await;
    // Past the original 2 s lease; the other agent polls for 1 s.
    assert!(other.next().await.unwrap().is_none());
    source.extend(&delivery).await.unwrap(); // hidden until ~5.5 s
    assert!(other.next().await.unwrap().is_none());
    assert!(start.elapsed() >= Duration::from_millis(4400));

    source
        .complete(&delivery, &rejection("unused"))
        .await
        .unwrap();
    assert_eq!(message_count(&url).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn release_makes_it_visible_at_once() {
    let url = create_queue("release").await;
    send(&url, "give back").await;
    // A long lease: only the release can make the message come back within the test.
    let source = source(options(&url, 300, 1)).await;
    let first = receive(&source).await;
    assert_eq!(first.receive_count, 1);
    source.release(&first).await.unwrap();

    let start = Instant::now();
    let second = receive(&source).await;
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(second.body, b"give back");
    assert_eq!(second.receive_count, 2);
    assert_eq!(
        first.handle.split_once('\n').unwrap().0,
        second.handle.split_once('\n').unwrap().0,
        "same message id"
    );
    source
        .complete(&second, &rejection("unused"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_after_max_receive_count_and_rejected_to_the_dead_letter_queue() {
    let url = create_queue("poison").await;
    let dlq = create_queue("poison-dlq").await;
    send(&url, "crashes the agent").await;
    let source = source(SqsOptions {
        max_receive_count: 2,
        dead_letter_queue_url: Some(dlq.clone()),
        ..options(&url, 300, 1)
    })
    .await;

    for count in 1..=2 {
        let delivery = receive(&source).await;
        assert_eq!(delivery.receive_count, count);
        assert!(!source.is_poison(&delivery));
        source.release(&delivery).await.unwrap();
    }
    let poison = receive(&source).await;
    assert_eq!(poison.receive_count, 3);
    assert!(source.is_poison(&poison));

    source
        .reject(&poison, &rejection("delivered 3 times, more than 2"))
        .await
        .unwrap();
    assert_eq!(message_count(&url).await, 0);
    assert_eq!(message_count(&dlq).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_with_a_dead_letter_queue_moves_body_and_reason() {
    let url = create_queue("reject-dlq").await;
    let dlq = create_queue("reject-dlq-dead").await;
    send(&url, "not a jobspec").await;
    let source = source(SqsOptions {
        dead_letter_queue_url: Some(dlq.clone()),
        ..options(&url, 1, 1)
    })
    .await;

    let delivery = receive(&source).await;
    let message_id = delivery.handle.split_once('\n').unwrap().0.to_string();
    let reason = format!("not a JobSpec: {}", "x".repeat(400));
    source.reject(&delivery, &rejection(&reason)).await.unwrap();

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(source.next().await.unwrap().is_none());
    assert_eq!(message_count(&url).await, 0);

    let moved = client()
        .await
        .receive_message()
        .queue_url(&dlq)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].body(), Some("not a jobspec"));
    let attributes = moved[0].message_attributes().unwrap();
    let value = |name: &str| attributes[name].string_value().unwrap().to_string();
    let moved_reason = value("agent-reject-reason");
    assert_eq!(moved_reason.chars().count(), 256);
    assert!(reason.starts_with(&moved_reason));
    assert_eq!(value("agent-source-queue"), url);
    assert_eq!(value("agent-source-message-id"), message_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_without_a_dead_letter_queue_deletes() {
    let url = create_queue("reject-plain").await;
    send(&url, "not a jobspec either").await;
    let source = source(options(&url, 1, 1)).await;
    let delivery = receive(&source).await;
    source
        .reject(&delivery, &rejection("not a JobSpec"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(source.next().await.unwrap().is_none());
    assert_eq!(message_count(&url).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_queue_waits_then_returns_none() {
    let url = create_queue("empty").await;
    let source = source(options(&url, 30, 2)).await;
    let start = Instant::now();
    assert!(source.next().await.unwrap().is_none());
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_queue_is_fatal() {
    let url = format!("{}/123456789012/no-such-queue", moto());
    let error = match SqsSource::new(&config().await, options(&url, 30, 1)).await {
        Ok(_) => panic!("a source for a missing queue"),
        Err(e) => e,
    };
    let SourceError::Fatal(message) = error else {
        panic!("not fatal: {error:?}");
    };
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("NonExistentQueue"), "{message}");

    // A missing dead-letter queue is caught just as early.
    let real = create_queue("has-no-dlq").await;
    let error = SqsSource::new(
        &config().await,
        SqsOptions {
            dead_letter_queue_url: Some(url.clone()),
            ..options(&real, 30, 1)
        },
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(&error, SourceError::Fatal(m) if m.contains(&url)),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_sqs_is_transient() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (url, error) = new_against(&format!("http://127.0.0.1:{port}")).await;
    assert!(
        matches!(&error, SourceError::Transient(m) if m.contains(&url)),
        "{error:?}"
    );
}

/// A loopback HTTP server that answers every request with `status`, `headers` and `body`,
/// standing in for SQS failures moto does not produce. Its thread ends with the process.
fn failing_endpoint(status: &'static str, headers: &'static str, body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut client) = stream else { continue };
            let mut head = [0u8; 8192];
            let _ = client.read(&mut head);
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\n{headers}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes());
        }
    });
    url
}

async fn new_against(endpoint: &str) -> (String, SourceError) {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "AKIAAGENTTESTSQS0001",
            "sqs-test-secret",
            None,
            None,
            "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let url = format!("{endpoint}/123456789012/jobs");
    let error = SqsSource::new(&config, options(&url, 30, 1))
        .await
        .err()
        .unwrap();
    (url, error)
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_and_throttling_are_transient() {
    let endpoint = failing_endpoint(
        "500 Internal Server Error",
        "",
        r#"{"__type":"com.amazonaws.sqs#InternalError","message":"We encountered an internal error."}"#,
    );
    let (url, error) = new_against(&endpoint).await;
    assert!(
        matches!(&error, SourceError::Transient(m) if m.contains(&url) && m.contains("InternalError")),
        "{error:?}"
    );

    let endpoint = failing_endpoint(
        "400 Bad Request",
        "x-amzn-query-error: RequestThrottled;Sender\r\n",
        r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Rate exceeded"}"#,
    );
    let (_, error) = new_against(&endpoint).await;
    assert!(
        matches!(&error, SourceError::Transient(m) if m.contains("RequestThrottled")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_and_bad_credentials_are_fatal() {
    let endpoint = failing_endpoint(
        "400 Bad Request",
        "x-amzn-query-error: AccessDenied;Sender\r\n",
        r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"not authorized to perform: sqs:getqueueattributes"}"#,
    );
    let (url, error) = new_against(&endpoint).await;
    assert!(
        matches!(&error, SourceError::Fatal(m) if m.contains(&url) && m.contains("AccessDenied") && m.contains("denied")),
        "{error:?}"
    );

    let endpoint = failing_endpoint(
        "403 Forbidden",
        "x-amzn-query-error: InvalidClientTokenId;Sender\r\n",
        r#"{"__type":"com.amazon.coral.service#UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
    );
    let (_, error) = new_against(&endpoint).await;
    assert!(
        matches!(&error, SourceError::Fatal(m) if m.contains("InvalidClientTokenId") && m.contains("credentials")),
        "{error:?}"
    );
}
