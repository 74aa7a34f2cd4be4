//! `CodePipelineSource` against the CodePipeline fake, with moto's S3 behind it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::daemon::codepipeline::{
    CodePipelineOptions, CodePipelineSource, PLACEHOLDER_FILE, RELEASE_MESSAGE,
};
use agent::daemon::result::{JobResult, JobStatus};
use agent::daemon::source::{Delivery, JobSource, Lease, SourceError};
use agent_config::config::ActionCategory;
use common::codepipeline_fake::{ActionType, ArtifactAt, Fake, NewJob};

const KEY_ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// The worker's own access key (see [`start`]): it must never reach the artifact store.
const WORKER_KEY: &str = "AKIAAGENTWORKER00001";

fn action() -> ActionType {
    ActionType::new("Build", "AgentBuild", "1")
}

/// The fake in front of moto, and the agent's AWS setup pointing at it.
async fn start(max_attempts: u32) -> (Fake, aws_config::SdkConfig) {
    let moto = tokio::task::spawn_blocking(common::moto).await.unwrap();
    let fake = Fake::start(Some(moto)).await;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(fake.url())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            WORKER_KEY,
            "worker-secret",
            None,
            None,
            "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts))
        .load()
        .await;
    (fake, config)
}

fn source(
    config: &aws_config::SdkConfig,
    work_dir: &Path,
    action: &ActionType,
) -> CodePipelineSource {
    source_with(config, work_dir, action, None, "build-1")
}

fn source_with(
    config: &aws_config::SdkConfig,
    work_dir: &Path,
    action: &ActionType,
    job_timeout: Option<Duration>,
    agent: &str,
) -> CodePipelineSource {
    CodePipelineSource::new(config, options(work_dir, action, job_timeout, agent)).unwrap()
}

fn options(
    work_dir: &Path,
    action: &ActionType,
    job_timeout: Option<Duration>,
    agent: &str,
) -> CodePipelineOptions {
    CodePipelineOptions {
        category: ActionCategory::Build,
        provider: action.provider.clone(),
        version: action.version.clone(),
        poll_interval: Duration::from_millis(50),
        work_dir: work_dir.to_path_buf(),
        job_timeout,
        agent: agent.to_string(),
        query_param: BTreeMap::new(),
    }
}

/// S3 straight to moto, to seed and inspect buckets.
async fn s3() -> aws_sdk_s3::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(common::moto())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIAAGENTTESTSEED001",
            "seed-secret",
            None,
            None,
            "test",
        ))
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
}

fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text) in files {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn unzip(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().unwrap().to_string();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        out.insert(name, text);
    }
    out
}

/// A bucket with the input artifact `SourceOutput` in it.
async fn bucket_with_input(bucket: &str, files: &[(&str, &str)]) -> ArtifactAt {
    let s3 = s3().await;
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    s3.put_object()
        .bucket(bucket)
        .key("web/SourceArti/abc123.zip")
        .body(zip_of(files).into())
        .send()
        .await
        .unwrap();
    let mut input = ArtifactAt::new("SourceOutput", bucket, "web/SourceArti/abc123.zip");
    input.revision = Some("abc123".to_string());
    input
}

fn result(job_id: &str, status: JobStatus, message: Option<&str>) -> JobResult {
    JobResult {
        job_id: job_id.to_string(),
        kind: Some("build".to_string()),
        status,
        message: message.map(str::to_string),
        agent: "agent-1".to_string(),
        agent_labels: Default::default(),
        labels: Default::default(),
        source: "codepipeline:Build/AgentBuild/1".to_string(),
        received_at: String::new(),
        finished_at: String::new(),
        duration_ms: 1234,
        attempts: 1,
        log: None,
        artifacts: Vec::new(),
        exported_variables: BTreeMap::new(),
        summary: serde_json::Value::Null,
    }
}

/// A primary artifacts directory as the build leaves it.
fn artifacts_dir(root: &Path) -> PathBuf {
    let dir = root.join("artifacts/primary");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("bin/app"), "binary").unwrap();
    std::fs::write(dir.join("appspec.yml"), "version: 0.0\n").unwrap();
    dir
}

/// Every S3 request the worker made (the fake's, for a test with the one job `job_id`)
/// was signed as the job, never as the worker: downloads with the artifact credentials
/// the job was polled with, uploads with the latest fresh ones from GetJobDetails.
fn assert_artifact_credentials(fake: &Fake, job_id: &str, downloads: bool, uploads: bool) {
    let issued = fake.issued(job_id);
    let polled = issued
        .iter()
        .find(|i| i.operation == "PollForJobs")
        .unwrap_or_else(|| panic!("never polled: {issued:?}"));
    let fresh = issued.iter().rev().find(|i| i.operation == "GetJobDetails");
    let requests = fake.s3_requests();
    for request in &requests {
        assert_ne!(
            request.access_key_id.as_deref(),
            Some(WORKER_KEY),
            "{request:?}"
        );
        let expected = if request.reads() {
            polled
        } else {
            fresh.unwrap_or_else(|| {
                panic!(
                    "an upload without fresh credentials: {request:?}
{issued:?}"
                )
            })
        };
        assert_eq!(
            request.access_key_id.as_deref(),
            Some(expected.access_key_id.as_str()),
            "{request:?}
issued: {issued:?}"
        );
        assert_eq!(
            request.session_token.as_deref(),
            Some(expected.session_token.as_str()),
            "{request:?}"
        );
    }
    assert_eq!(
        requests.iter().any(|r| r.reads()),
        downloads,
        "{requests:#?}"
    );
    assert_eq!(
        requests.iter().any(|r| !r.reads()),
        uploads,
        "{requests:#?}"
    );
    if let Some(fresh) = fresh {
        assert_ne!(fresh.access_key_id, polled.access_key_id, "{issued:?}");
    }
}

async fn next_delivery(source: &CodePipelineSource) -> Delivery {
    for _ in 0..20 {
        if let Some(delivery) = source.next().await.unwrap() {
            return delivery;
        }
    }
    panic!("no delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_from_poll_to_encrypted_output_and_variables() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input(
        "cp-end-to-end",
        &[
            ("ci/build.yml", "version: 0.2\n"),
            ("src/app.c", "int main;"),
        ],
    )
    .await;
    let vars = r#"[{"name":"STAGE","value":"prod","type":"PLAINTEXT"},
                   {"name":"DB_PASSWORD","value":"/team/db","type":"PARAMETER_STORE"}]"#;
    let job_id = fake.add_job(
        NewJob::new(action())
            .config("Buildspec", "ci/build.yml")
            .config("Timeout", "30")
            .config("EnvironmentVariables", vars)
            .input(input)
            .output(ArtifactAt::new(
                "BuildOutput",
                "cp-end-to-end",
                "web/BuildOutp/out.zip",
            ))
            .encryption_key(KEY_ARN),
    );
    let source = source(&config, work.path(), &action());
    assert_eq!(source.name(), "codepipeline:Build/AgentBuild/1");
    // Beats read the job's status, at the poll interval (at least a second).
    assert_eq!(source.heartbeat(), Some(Duration::from_secs(1)));

    let delivery = next_delivery(&source).await;
    assert_eq!(delivery.name(), job_id);
    assert_eq!(fake.status(&job_id), "InProgress");
    assert_eq!(fake.calls()[..2], ["PollForJobs", "AcknowledgeJob"]);
    let attached = delivery.attachments.clone().unwrap();
    assert_eq!(
        attached,
        work.path()
            .join("codepipeline")
            .join(&job_id)
            .join("input/SourceOutput")
    );
    assert_eq!(
        std::fs::read_to_string(attached.join("src/app.c")).unwrap(),
        "int main;"
    );
    let job = agent_config::jobspec::parse(&delivery.body)
        .unwrap_or_else(|e| panic!("{}", e.render("job")));
    assert_eq!(job.id, format!("cp-{job_id}"));
    assert_eq!(
        job.buildspec,
        Some(agent_config::jobspec::Buildspec::Path(
            "ci/build.yml".into()
        ))
    );
    assert_eq!(job.timeout, Some(Duration::from_secs(30 * 60)));
    assert_eq!(job.env["STAGE"], "prod");
    assert_eq!(job.env["CODEPIPELINE_SOURCE_REVISION"], "abc123");
    assert_eq!(job.secrets.parameter_store["DB_PASSWORD"], "/team/db");
    assert!(matches!(
        &job.source,
        agent_config::jobspec::JobSource::Inline(inline) if inline.files.contains_key(PLACEHOLDER_FILE)
    ));
    // A beat acknowledges the job again: it is still in progress.
    assert!(matches!(
        source.extend(&delivery).await.unwrap(),
        Lease::Held
    ));
    assert_eq!(
        fake.calls().last().map(String::as_str),
        Some("AcknowledgeJob")
    );

    let built = tempfile::tempdir().unwrap();
    let mut done = result(&job.id, JobStatus::Succeeded, None);
    done.artifacts = vec![artifacts_dir(built.path()).display().to_string()];
    done.exported_variables = BTreeMap::from([
        ("IMAGE_TAG".to_string(), "1.2.3".to_string()),
        ("not.allowed".to_string(), "x".to_string()),
    ]);
    source.complete(&delivery, &done).await.unwrap();

    let results = fake.results();
    assert_eq!(results.len(), 1);
    let reported = &results[0];
    assert!(reported.succeeded(), "{reported:?}");
    assert_eq!(reported.job_id, job_id);
    assert_eq!(
        reported.output_variables(),
        BTreeMap::from([("IMAGE_TAG".to_string(), "1.2.3".to_string())])
    );
    let details = &reported.request["executionDetails"];
    assert_eq!(details["externalExecutionId"], format!("cp-{job_id}"));
    assert_eq!(details["percentComplete"], 100);
    let summary = details["summary"].as_str().unwrap();
    assert!(
        summary.contains("SUCCEEDED") && summary.contains("not.allowed"),
        "{summary}"
    );
    assert_eq!(fake.status(&job_id), "Succeeded");
    assert!(fake.calls().contains(&"GetJobDetails".to_string()));
    // CodePipeline is called as the worker; the artifact store only ever as the job.
    let signers = fake.call_signers();
    assert!(signers.iter().all(|s| s == WORKER_KEY), "{signers:?}");
    assert_artifact_credentials(&fake, &job_id, true, true);

    let s3 = s3().await;
    let head = s3
        .head_object()
        .bucket("cp-end-to-end")
        .key("web/BuildOutp/out.zip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms)
    );
    assert_eq!(head.ssekms_key_id(), Some(KEY_ARN));
    let object = s3
        .get_object()
        .bucket("cp-end-to-end")
        .key("web/BuildOutp/out.zip")
        .send()
        .await
        .unwrap();
    let bytes = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(
        unzip(&bytes),
        BTreeMap::from([
            ("appspec.yml".to_string(), "version: 0.0\n".to_string()),
            ("bin/app".to_string(), "binary".to_string()),
        ])
    );
    assert!(!work.path().join("codepipeline").join(&job_id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pipeline_key_the_output_uses_the_aws_managed_key() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-managed-key", &[("buildspec.yml", "version: 0.2\n")]).await;
    let job_id = fake.add_job(NewJob::new(action()).input(input).output(ArtifactAt::new(
        "BuildOutput",
        "cp-managed-key",
        "out.zip",
    )));
    let source = source(&config, work.path(), &action());
    let delivery = next_delivery(&source).await;
    let built = tempfile::tempdir().unwrap();
    let mut done = result(&format!("cp-{job_id}"), JobStatus::Succeeded, None);
    done.artifacts = vec![artifacts_dir(built.path()).display().to_string()];
    source.complete(&delivery, &done).await.unwrap();

    let reported = &fake.results()[0];
    assert!(reported.succeeded());
    assert!(reported.request.get("outputVariables").is_none());
    assert_artifact_credentials(&fake, &job_id, true, true);
    let head = s3()
        .await
        .head_object()
        .bucket("cp-managed-key")
        .key("out.zip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms)
    );
    assert_eq!(head.ssekms_key_id(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_with_their_message_and_type() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-failures", &[("buildspec.yml", "version: 0.2\n")]).await;
    let output = ArtifactAt::new("BuildOutput", "cp-failures", "never.zip");
    let failed = fake.add_job(
        NewJob::new(action())
            .input(input.clone())
            .output(output.clone()),
    );
    let refused = fake.add_job(NewJob::new(action()).input(input.clone()));
    let no_artifacts = fake.add_job(
        NewJob::new(action())
            .input(input.clone())
            .output(output.clone()),
    );
    let faulted = fake.add_job(NewJob::new(action()).input(input).output(output));
    let source = source(&config, work.path(), &action());

    let delivery = next_delivery(&source).await;
    assert_eq!(delivery.name(), failed);
    let message = "BUILD FAILED: command `make` exited with 2";
    let done = result(&format!("cp-{failed}"), JobStatus::Failed, Some(message));
    source.complete(&delivery, &done).await.unwrap();

    let delivery = next_delivery(&source).await;
    assert_eq!(delivery.name(), refused);
    let long = format!("refused `image`: {}", "x".repeat(6000));
    let done = result(&format!("cp-{refused}"), JobStatus::Rejected, Some(&long));
    source.complete(&delivery, &done).await.unwrap();

    // Succeeded, but nothing to put in the action's output artifact.
    let delivery = next_delivery(&source).await;
    assert_eq!(delivery.name(), no_artifacts);
    let done = result(&format!("cp-{no_artifacts}"), JobStatus::Succeeded, None);
    source.complete(&delivery, &done).await.unwrap();

    // The agent could not run it: the system, not the job, failed.
    let delivery = next_delivery(&source).await;
    assert_eq!(delivery.name(), faulted);
    let down = "cannot start the build container: Docker is not running";
    let done = result(&format!("cp-{faulted}"), JobStatus::Fault, Some(down));
    source.complete(&delivery, &done).await.unwrap();

    let results = fake.results();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].job_id, failed);
    assert!(!results[0].succeeded());
    assert_eq!(results[0].failure_type(), "JobFailed");
    assert_eq!(
        results[0].message(),
        format!("cp-{failed} FAILED: {message} (agent agent-1, 1.2 s)")
    );
    assert_eq!(results[0].external_execution_id(), format!("cp-{failed}"));
    assert_eq!(results[1].failure_type(), "ConfigurationError");
    assert!(
        results[1]
            .message()
            .starts_with(&format!("cp-{refused} REJECTED: refused `image`")),
        "{}",
        &results[1].message()[..100]
    );
    assert_eq!(results[1].message().chars().count(), 5000);
    assert_eq!(results[2].failure_type(), "JobFailed");
    assert!(
        results[2].message().contains("`BuildOutput`")
            && results[2].message().contains("artifacts"),
        "{}",
        results[2].message()
    );
    assert_eq!(results[3].job_id, faulted);
    assert_eq!(results[3].failure_type(), "SystemUnavailable");
    assert!(
        results[3].message().contains("FAULT") && results[3].message().contains(down),
        "{}",
        results[3].message()
    );
    let listed = s3()
        .await
        .list_objects_v2()
        .bucket("cp-failures")
        .prefix("never")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_or_wrong_nonce_is_refused() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-nonce", &[("buildspec.yml", "version: 0.2\n")]).await;
    let job_id = fake.add_job(NewJob::new(action()).input(input));
    fake.set_ack_timeout(Duration::from_millis(200));
    let other_worker = aws_sdk_codepipeline::Client::new(&config);
    let action_type = aws_sdk_codepipeline::types::ActionTypeId::builder()
        .category(aws_sdk_codepipeline::types::ActionCategory::Build)
        .owner(aws_sdk_codepipeline::types::ActionOwner::Custom)
        .provider("AgentBuild")
        .version("1")
        .build()
        .unwrap();
    let polled = other_worker
        .poll_for_jobs()
        .action_type_id(action_type.clone())
        .max_batch_size(5)
        .send()
        .await
        .unwrap();
    let stale_nonce = polled.jobs()[0].nonce().unwrap().to_string();
    let wrong = other_worker
        .acknowledge_job()
        .job_id(&job_id)
        .nonce("not-the-nonce")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            wrong.as_service_error(),
            Some(aws_sdk_codepipeline::operation::acknowledge_job::AcknowledgeJobError::InvalidNonceException(_))
        ),
        "{wrong:?}"
    );
    // Left unacknowledged past the timeout, the job goes to the next worker that polls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let source = source(&config, work.path(), &action());
    let delivery = next_delivery(&source).await;
    assert_eq!(delivery.name(), job_id);
    let stale = other_worker
        .acknowledge_job()
        .job_id(&job_id)
        .nonce(&stale_nonce)
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale.as_service_error(),
            Some(aws_sdk_codepipeline::operation::acknowledge_job::AcknowledgeJobError::InvalidNonceException(_))
        ),
        "{stale:?}"
    );
    assert_eq!(fake.status(&job_id), "InProgress");
    // Nothing more for anyone: the job is taken.
    let again = other_worker
        .poll_for_jobs()
        .action_type_id(action_type)
        .send()
        .await
        .unwrap();
    assert!(again.jobs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_another_action_type_are_left_alone() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let other = ActionType::new("Build", "SomeoneElse", "1");
    let theirs = fake.add_job(NewJob::new(other));
    fake.register(&action());
    let source = source(&config, work.path(), &action());
    for _ in 0..3 {
        assert!(source.next().await.unwrap().is_none());
    }
    assert_eq!(fake.status(&theirs), "Queued");
    assert!(!fake.calls().contains(&"AcknowledgeJob".to_string()));
    // A version of the action type is its own type too.
    let next_version = ActionType::new("Build", "AgentBuild", "2");
    fake.add_job(NewJob::new(next_version));
    assert!(source.next().await.unwrap().is_none());
}

/// Two fleets share one action type whose queryable property `Fleet` each pipeline action
/// sets: each fleet's agents take only the jobs that name their fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queryable_property_routes_jobs_to_the_fleet_that_asks_for_them() {
    let (fake, config) = start(1).await;
    let work = tempfile::tempdir().unwrap();
    let fleet_type = action().queryable("Fleet");
    fake.register(&fleet_type);
    let for_arm = fake.add_job(NewJob::new(fleet_type.clone()).config("Fleet", "arm64"));
    let for_linux = fake.add_job(NewJob::new(fleet_type.clone()).config("Fleet", "linux"));
    let fleet_source = |fleet: &str| {
        let mut options = options(work.path(), &fleet_type, None, "build-1");
        options.query_param = BTreeMap::from([("Fleet".to_string(), fleet.to_string())]);
        CodePipelineSource::new(&config, options).unwrap()
    };
    let linux = fleet_source("linux");
    assert_eq!(
        linux.name(),
        "codepipeline:Build/AgentBuild/1",
        "journals find it"
    );
    let delivery = next_delivery(&linux).await;
    assert_eq!(fake.status(&for_linux), "InProgress");
    assert_eq!(fake.status(&for_arm), "Queued", "another fleet's job");
    assert!(linux.next().await.unwrap().is_none());
    linux
        .complete(&delivery, &result("cp-linux", JobStatus::Failed, Some("x")))
        .await
        .unwrap();
    let arm = fleet_source("arm64");
    next_delivery(&arm).await;
    assert_eq!(fake.status(&for_arm), "InProgress");
    // A source that names no query polls an action type that has one in vain: the error
    // says what to set.
    let unqueried = source(&config, work.path(), &fleet_type);
    match unqueried.next().await {
        Err(SourceError::Fatal(message)) => {
            assert!(message.contains("ValidationException"), "{message}");
            assert!(message.contains("query_param"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // And one that queries an action type without a queryable property is refused too.
    fake.register(&ActionType::new("Build", "Plain", "1"));
    let mut options = options(
        work.path(),
        &ActionType::new("Build", "Plain", "1"),
        None,
        "b",
    );
    options.query_param = BTreeMap::from([("Fleet".to_string(), "linux".to_string())]);
    let plain = CodePipelineSource::new(&config, options).unwrap();
    assert!(matches!(plain.next().await, Err(SourceError::Fatal(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_fails_the_job_so_the_stage_can_be_retried() {
    // Without the SDK's retries for polls; a report gets its own.
    let (fake, config) = start(1).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-release", &[("buildspec.yml", "version: 0.2\n")]).await;
    let job_id = fake.add_job(NewJob::new(action()).input(input));
    let source = source(&config, work.path(), &action());
    let delivery = next_delivery(&source).await;
    fake.throttle("PutJobFailureResult", 2);
    source.release(&delivery).await.unwrap();
    let reports = fake
        .calls()
        .iter()
        .filter(|c| *c == "PutJobFailureResult")
        .count();
    assert_eq!(reports, 3);
    let reported = &fake.results()[0];
    assert_eq!(reported.job_id, job_id);
    assert_eq!(reported.failure_type(), "JobFailed");
    assert_eq!(reported.message(), RELEASE_MESSAGE);
    assert_eq!(fake.status(&job_id), "Failed");
    assert!(!work.path().join("codepipeline").join(&job_id).exists());
    // Released again (a restart's janitor after a drain): CodePipeline no longer waits.
    source.release(&delivery).await.unwrap();
    assert_eq!(fake.results().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_reports_a_configuration_error() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-reject", &[("buildspec.yml", "version: 0.2\n")]).await;
    let vars = r#"[{"name":"1BAD","value":"x"}]"#;
    let job_id = fake.add_job(
        NewJob::new(action())
            .config("EnvironmentVariables", vars)
            .input(input),
    );
    let source = source(&config, work.path(), &action());
    let delivery = next_delivery(&source).await;
    // The runner finds the JobSpec invalid and rejects the delivery with the reasons.
    let problems = agent_config::jobspec::parse(&delivery.body).unwrap_err();
    let message = format!("not a valid JobSpec:\n{}", problems.render(delivery.name()));
    let rejected = result(
        &format!("rejected-{job_id}"),
        JobStatus::Rejected,
        Some(&message),
    );
    source.reject(&delivery, &rejected).await.unwrap();
    let reported = &fake.results()[0];
    assert_eq!(reported.failure_type(), "ConfigurationError");
    assert!(
        reported.message().contains("1BAD"),
        "{}",
        reported.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_that_is_no_job_fails_at_once() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-bad-config", &[("buildspec.yml", "version: 0.2\n")]).await;
    let job_id = fake.add_job(
        NewJob::new(action())
            .config("Timeout", "forever")
            .input(input),
    );
    let source = source(&config, work.path(), &action());
    for _ in 0..3 {
        assert!(source.next().await.unwrap().is_none());
    }
    let results = fake.results();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].job_id, job_id);
    assert_eq!(results[0].failure_type(), "ConfigurationError");
    assert!(
        results[0].message().contains("`Timeout`"),
        "{}",
        results[0].message()
    );
    assert!(!work.path().join("codepipeline").join(&job_id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_that_cannot_be_read_fails_the_job() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-missing-input", &[("a", "b")]).await;
    let missing = ArtifactAt::new("SourceOutput", "cp-missing-input", "gone.zip");
    let not_zip_key = "not-a-zip.zip";
    s3().await
        .put_object()
        .bucket("cp-missing-input")
        .key(not_zip_key)
        .body(b"plain text".to_vec().into())
        .send()
        .await
        .unwrap();
    let gone = fake.add_job(NewJob::new(action()).input(missing));
    let garbage = fake.add_job(NewJob::new(action()).input(ArtifactAt::new(
        "SourceOutput",
        "cp-missing-input",
        not_zip_key,
    )));
    let no_bucket = fake.add_job(NewJob::new(action()).input(ArtifactAt::new(
        "SourceOutput",
        "cp-no-such-bucket",
        "web/SourceArti/abc123.zip",
    )));
    let fine = fake.add_job(NewJob::new(action()).input(input));
    let source = source(&config, work.path(), &action());
    let delivery = next_delivery(&source).await;
    assert_eq!(delivery.name(), fine);
    let results = fake.results();
    assert_eq!(results.len(), 3);
    // Gone from the artifact store: only a new pipeline execution brings it back.
    assert_eq!(
        (results[0].job_id.as_str(), results[0].failure_type()),
        (gone.as_str(), "RevisionUnavailable")
    );
    assert!(
        results[0].message().contains("NoSuchKey"),
        "{}",
        results[0].message()
    );
    // There but not an archive: the revision is what it is, the job fails.
    assert_eq!(results[1].job_id, garbage);
    assert_eq!(results[1].failure_type(), "JobFailed");
    assert!(
        results[1].message().contains("cannot be unpacked"),
        "{}",
        results[1].message()
    );
    assert_eq!(
        (results[2].job_id.as_str(), results[2].failure_type()),
        (no_bucket.as_str(), "RevisionUnavailable")
    );
    assert!(
        results[2].message().contains("NoSuchBucket"),
        "{}",
        results[2].message()
    );
    // Every download tried, as the job.
    let requests = fake.s3_requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert!(
        requests
            .iter()
            .all(|r| r.reads() && r.access_key_id.as_deref() == Some("ASIAJOBARTIFACTS0001")),
        "{requests:#?}"
    );
}

/// A request to the fake as raw HTTP, with `headers` besides the protocol's; the status
/// and the JSON body of the answer.
async fn raw_call(url: &str, operation: &str, headers: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"actionTypeId":{"category":"Build","owner":"Custom","provider":"AgentBuild","version":"1"}}"#;
    let mut stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: CodePipeline_20150709.{operation}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codepipeline_calls_must_be_signed() {
    let (fake, _config) = start(1).await;
    let job_id = fake.add_job(NewJob::new(action()));
    let (status, body) = raw_call(fake.url(), "PollForJobs", "").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["__type"],
        "com.amazon.coral.service#MissingAuthenticationTokenException"
    );
    let (status, body) = raw_call(
        fake.url(),
        "PollForJobs",
        "Authorization: Bearer not-sigv4\r\n",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["__type"],
        "com.amazon.coral.service#IncompleteSignatureException"
    );
    // Refused before anything happened: the job waits for a signed poll.
    assert!(fake.calls().is_empty());
    assert_eq!(fake.status(&job_id), "Queued");
    let signed = "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/codepipeline/aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\nX-Amz-Date: 20250101T000000Z\r\n";
    let (status, body) = raw_call(fake.url(), "PollForJobs", signed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"][0]["id"], job_id.as_str());
    assert_eq!(fake.call_signers(), ["AKIDEXAMPLE"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_timed_out_before_its_acknowledgement_is_dropped() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let job_id = fake.add_job(NewJob::new(action()));
    fake.time_out_on_acknowledge(&job_id);
    let source = source(&config, work.path(), &action());
    assert!(source.next().await.unwrap().is_none());
    assert_eq!(fake.status(&job_id), "TimedOut");
    assert!(fake.results().is_empty());
    assert!(!work.path().join("codepipeline").join(&job_id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_transient() {
    // Without retries, one ThrottlingException reaches the source.
    let (fake, config) = start(1).await;
    let work = tempfile::tempdir().unwrap();
    let job_id = fake.add_job(NewJob::new(action()));
    let source = source(&config, work.path(), &action());
    fake.throttle("PollForJobs", 1);
    match source.next().await {
        Err(SourceError::Transient(message)) => {
            assert!(message.contains("ThrottlingException"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let delivery = next_delivery(&source).await;
    assert_eq!(delivery.name(), job_id);
    assert!(delivery.attachments.unwrap().is_dir());

    // With the SDK's retries, a throttled call is simply tried again.
    let (fake, config) = start(3).await;
    let job_id = fake.add_job(NewJob::new(action()));
    let source = self::source(&config, work.path(), &action());
    fake.throttle("AcknowledgeJob", 1);
    let delivery = next_delivery(&source).await;
    assert_eq!(delivery.name(), job_id);
    assert_eq!(
        fake.calls(),
        ["PollForJobs", "AcknowledgeJob", "AcknowledgeJob"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_action_type_is_fatal() {
    let (_fake, config) = start(1).await;
    let work = tempfile::tempdir().unwrap();
    let source = source(
        &config,
        work.path(),
        &ActionType::new("Build", "Nobody", "1"),
    );
    match source.next().await {
        Err(SourceError::Fatal(message)) => {
            assert!(message.contains("ActionTypeNotFoundException"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_job_completes_from_its_handle_alone() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-restart", &[("buildspec.yml", "version: 0.2\n")]).await;
    let job_id = fake.add_job(
        NewJob::new(action())
            .input(input)
            .output(ArtifactAt::new("BuildOutput", "cp-restart", "out.zip"))
            .encryption_key(KEY_ARN),
    );
    let before = source(&config, work.path(), &action());
    let delivery = next_delivery(&before).await;
    drop(before);
    // What the janitor hands a fresh source: the journal's handle, nothing else.
    let journaled = Delivery {
        handle: delivery.handle.clone(),
        body: Vec::new(),
        receive_count: 1,
        attachments: None,
        refused: None,
    };
    let after = source(&config, work.path(), &action());
    let built = tempfile::tempdir().unwrap();
    let mut done = result(&format!("cp-{job_id}"), JobStatus::Succeeded, None);
    done.artifacts = vec![artifacts_dir(built.path()).display().to_string()];
    done.exported_variables = BTreeMap::from([("VERSION".to_string(), "7".to_string())]);
    after.complete(&journaled, &done).await.unwrap();
    let reported = &fake.results()[0];
    assert!(reported.succeeded());
    assert_eq!(reported.output_variables()["VERSION"], "7");
    // The upload went up with the credentials GetJobDetails gave the restarted agent.
    assert_artifact_credentials(&fake, &job_id, true, true);
    let head = s3()
        .await
        .head_object()
        .bucket("cp-restart")
        .key("out.zip")
        .send()
        .await
        .unwrap();
    assert_eq!(head.ssekms_key_id(), Some(KEY_ARN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_claimed_while_the_daemon_stops_polling_is_failed_for_a_retry() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-dropped", &[("buildspec.yml", "version: 0.2\n")]).await;
    let job_id = fake.add_job(NewJob::new(action()).input(input));
    let source = source(&config, work.path(), &action());
    fake.delay_s3(Duration::from_millis(500));
    // A drain drops the poll while the input is still downloading.
    let polled = tokio::time::timeout(Duration::from_millis(200), source.next()).await;
    assert!(polled.is_err(), "{polled:?}");
    assert_eq!(fake.status(&job_id), "InProgress");
    for _ in 0..50 {
        if !fake.results().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reported = &fake.results()[0];
    assert_eq!(reported.job_id, job_id);
    assert_eq!(reported.message(), RELEASE_MESSAGE);
    assert!(!work.path().join("codepipeline").join(&job_id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_output_goes_up_in_parts() {
    let (fake, config) = start(3).await;
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-large", &[("buildspec.yml", "version: 0.2\n")]).await;
    let job_id = fake.add_job(
        NewJob::new(action())
            .input(input)
            .output(ArtifactAt::new("BuildOutput", "cp-large", "large.zip"))
            .encryption_key(KEY_ARN),
    );
    let source = source(&config, work.path(), &action());
    let delivery = next_delivery(&source).await;
    let built = tempfile::tempdir().unwrap();
    let dir = artifacts_dir(built.path());
    // Noise does not compress: the zip stays past the single-PUT size.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..(66 << 20) / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    std::fs::write(dir.join("noise.bin"), &noise).unwrap();
    let mut done = result(&format!("cp-{job_id}"), JobStatus::Succeeded, None);
    done.artifacts = vec![dir.display().to_string()];
    source.complete(&delivery, &done).await.unwrap();
    assert!(fake.results()[0].succeeded(), "{:?}", fake.results());
    // Every part of the multipart upload, its start and its end, signed as the job.
    assert!(
        fake.s3_requests().iter().filter(|r| !r.reads()).count() >= 4,
        "{:#?}",
        fake.s3_requests()
    );
    assert_artifact_credentials(&fake, &job_id, true, true);
    let s3 = s3().await;
    let head = s3
        .head_object()
        .bucket("cp-large")
        .key("large.zip")
        .send()
        .await
        .unwrap();
    assert!(head.content_length().unwrap() > 66 << 20);
    assert_eq!(head.ssekms_key_id(), Some(KEY_ARN));
    let object = s3
        .get_object()
        .bucket("cp-large")
        .key("large.zip")
        .send()
        .await
        .unwrap();
    let bytes = object.body.collect().await.unwrap().into_bytes();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut back = Vec::new();
    zip.by_name("noise.bin")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == noise);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_of_a_build_the_agent_no_longer_runs_is_failed() {
    let (fake, config) = start(3).await;
    // The service's own timeout is not under test here: generous, whatever retries take.
    fake.set_job_timeout(Duration::from_secs(30));
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-orphan", &[("buildspec.yml", "version: 0.2\n")]).await;
    let job_id = fake.add_job(NewJob::new(action()).input(input));
    let timeout = Some(Duration::from_secs(2));
    let before = source_with(&config, work.path(), &action(), timeout, "build-1");
    let delivery = next_delivery(&before).await;
    // Handed back at half the job timeout; the poll for the continuation fails (every
    // attempt throttled) and the agent stops before it tries again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fake.throttle("PollForJobs", 3);
    assert_eq!(before.extend(&delivery).await.unwrap(), Lease::Held);
    drop(before);
    let execution = fake.execution(&job_id);
    assert_eq!(
        execution.len(),
        2,
        "{execution:?}\ncalls: {:?}",
        fake.calls()
    );
    assert_eq!(
        execution[1].1,
        "Queued",
        "{execution:?}\ncalls: {:?}",
        fake.calls()
    );
    // Polled and not acknowledged, a job is handed out again soon.
    fake.set_ack_timeout(Duration::from_millis(200));

    // Another agent of the action type leaves it alone; this agent, restarted, fails it.
    let other = source_with(&config, work.path(), &action(), timeout, "build-2");
    assert!(other.next().await.unwrap().is_none());
    assert!(fake.results().iter().all(|r| r.succeeded()));
    let after = source_with(&config, work.path(), &action(), timeout, "build-1");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !fake.results().iter().any(|r| !r.succeeded()) {
        assert!(
            std::time::Instant::now() < deadline,
            "not failed: {:?}\ncalls: {:?}",
            fake.execution(&job_id),
            fake.calls()
        );
        assert!(after.next().await.unwrap().is_none());
    }
    let failed = fake.results().into_iter().find(|r| !r.succeeded()).unwrap();
    assert_eq!(failed.job_id, execution[1].0);
    assert_eq!(failed.failure_type(), "JobFailed");
    assert!(
        failed
            .message()
            .contains("agent build-1 stopped before the build"),
        "{}",
        failed.message()
    );
    assert_eq!(failed.external_execution_id(), format!("cp-{job_id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_build_waits_for_its_continuation_and_new_jobs_are_kept() {
    let (fake, config) = start(3).await;
    // The service's own timeout is not under test here: generous, whatever retries take.
    fake.set_job_timeout(Duration::from_secs(30));
    let work = tempfile::tempdir().unwrap();
    let input = bucket_with_input("cp-waits", &[("buildspec.yml", "version: 0.2\n")]).await;
    let first = fake.add_job(NewJob::new(action()).input(input.clone()));
    let source = source_with(
        &config,
        work.path(),
        &action(),
        Some(Duration::from_secs(2)),
        "build-1",
    );
    let delivery = next_delivery(&source).await;
    // A second pipeline's job arrives first in the queue the heartbeat polls.
    let queued = fake.add_job(NewJob::new(action()).input(input));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(source.extend(&delivery).await.unwrap(), Lease::Held);
    // The build ends before the heartbeat took the continuation up: the report waits for it.
    let done = result(
        &format!("cp-{first}"),
        JobStatus::Failed,
        Some("BUILD FAILED"),
    );
    source.complete(&delivery, &done).await.unwrap();
    let execution = fake.execution(&first);
    assert_eq!(execution.len(), 2, "{execution:?}");
    let failed = fake.results().into_iter().find(|r| !r.succeeded()).unwrap();
    assert_eq!(failed.job_id, execution[1].0);
    assert!(
        failed
            .message()
            .starts_with(&format!("cp-{first} FAILED: BUILD FAILED (")),
        "{}",
        failed.message()
    );
    // The other pipeline's job, polled on the way, is the next delivery.
    let next = next_delivery(&source).await;
    assert_eq!(next.name(), queued);
}
