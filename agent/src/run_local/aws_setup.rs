//! The AWS side of a local build, before it starts: credentials, the role chain, and the
//! values of `env.parameter-store` and `env.secrets-manager`.

use std::net::{IpAddr, Ipv4Addr};

use aws_credential_types::provider::ProvideCredentials;

use crate::aws::endpoint::{self, CredentialsEndpoint};
use crate::aws::{self, AwsOptions, RoleOptions};
use crate::build::{BuildRequest, BuildStatus, PhaseRecord, Summary};
use crate::logs::Maskers;

use super::RunLocalArgs;
use super::args::{ExecutorKind, Namespace, Packaging};
use crate::aws::s3::PutOptions;
use crate::build::S3Artifacts;

/// Connects to AWS as the flags say: profile, region, the role chain.
pub async fn connect(args: &RunLocalArgs, build_id: &str) -> Result<aws::Aws, String> {
    let mut tags = Vec::new();
    for tag in &args.session_tag {
        let (k, v) = tag
            .split_once('=')
            .ok_or_else(|| format!("--session-tag `{tag}` is not KEY=VALUE"))?;
        tags.push((k.to_string(), v.to_string()));
    }
    let options = AwsOptions {
        profile: args.profile.clone(),
        region: args.region.clone(),
        role: RoleOptions {
            roles: args.role_arn.clone(),
            external_id: args.external_id.clone(),
            session_name: aws::roles::session_name(
                args.role_session_name
                    .as_deref()
                    .unwrap_or(&format!("agent-{build_id}")),
            ),
            duration: args.duration,
            tags,
            source_identity: args.source_identity.clone(),
        },
    };
    let connected = aws::connect(&options).await.map_err(|e| e.to_string())?;
    for note in &connected.notes {
        eprintln!("note: {note}");
    }
    Ok(connected)
}

/// Connects when the build needs AWS; fills in resolved values and the build's credentials.
/// The returned endpoint serves the build its credentials and must live as long as the
/// build. An error names what failed; nothing has run.
pub async fn provision(
    args: &RunLocalArgs,
    request: &mut BuildRequest,
    maskers: &Maskers,
    connected: Option<aws::Aws>,
) -> Result<Option<CredentialsEndpoint>, String> {
    let env = &request.buildspec.env;
    let needs_values = !env.parameter_store.is_empty() || !env.secrets_manager.is_empty();
    let wants_credentials = !args.role_arn.is_empty() || args.profile.is_some();
    let s3_artifacts = args.artifacts_s3().and_then(Result::ok);
    let s3_logs = args.logs_s3().and_then(Result::ok);
    let s3_cache = args.cache_s3().and_then(Result::ok);
    let uses_s3 = s3_artifacts.is_some() || s3_logs.is_some() || s3_cache.is_some();
    if !needs_values && !wants_credentials && !uses_s3 && connected.is_none() {
        return Ok(None);
    }
    let connected = match connected {
        Some(connected) => connected,
        None => connect(args, &request.build_id).await?,
    };
    let mut resolved = aws::params::parameters(&connected.config, &env.parameter_store)
        .await
        .map_err(|e| e.to_string())?;
    resolved.extend(
        aws::params::secrets(&connected.config, &env.secrets_manager)
            .await
            .map_err(|e| e.to_string())?,
    );
    request.resolved = resolved;
    if let Some(url) = s3_cache {
        request.cache_s3 = Some((crate::aws::s3::client(&connected.config), url));
    }
    if let Some(url) = s3_logs {
        request.logs_s3 = Some((crate::aws::s3::client(&connected.config), url));
    }
    if let Some(url) = s3_artifacts {
        request.artifacts_s3 = Some(S3Artifacts {
            client: crate::aws::s3::client(&connected.config),
            url,
            zip: args.artifacts_packaging == Packaging::Zip,
            build_id_namespace: args.artifacts_namespace == Namespace::BuildId,
            put: PutOptions {
                kms_key_id: args.artifacts_kms_key_id.clone(),
                metadata: vec![("agent-build-id".to_string(), request.build_id.clone())],
            },
        });
    }
    if !wants_credentials {
        return Ok(None);
    }
    let region = connected.config.region().map(|r| r.to_string());
    let source = match &connected.assumed {
        Some(assumed) => assumed.provider(),
        None => connected
            .config
            .credentials_provider()
            .ok_or("no AWS credentials provider is configured")?,
    };
    let whose = connected
        .assumed
        .as_ref()
        .map_or_else(|| "the profile".to_string(), |a| format!("role {}", a.role));
    let mut vars: Vec<(String, String)> = Vec::new();
    if let Some(region) = &region {
        vars.push(("AWS_REGION".to_string(), region.clone()));
        vars.push(("AWS_DEFAULT_REGION".to_string(), region.clone()));
    }
    let ip = match args.executor {
        ExecutorKind::Host => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ExecutorKind::Docker => IpAddr::V4(endpoint::ECS_ADDRESS),
    };
    match CredentialsEndpoint::start(ip, source.clone(), maskers.clone()).await {
        Ok(served) => {
            vars.extend(served.variables());
            request.aws_env = vars;
            Ok(Some(served))
        }
        Err(reason) => {
            let creds = source
                .provide_credentials()
                .await
                .map_err(|e| format!("no AWS credentials: {e}"))?;
            let (fixed, expiry) = aws::static_variables(&creds, None);
            let until = expiry.map_or_else(
                || "do not expire".to_string(),
                |t| format!("expire at {}", time::OffsetDateTime::from(t)),
            );
            eprintln!(
                "note: no credentials endpoint for the build ({reason}); it gets the credentials of {whose} as static AWS_* variables, which {until}: a build running longer loses AWS access"
            );
            vars.extend(fixed);
            request.aws_env = vars;
            Ok(None)
        }
    }
}

/// Fetches an `s3://` source into a temporary directory, which lives as long as the
/// returned handle.
pub async fn fetch_source(
    connected: &aws::Aws,
    url: &crate::aws::s3::S3Url,
) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("agent-source-")
        .tempdir()
        .map_err(|e| format!("cannot make a directory for the source: {e}"))?;
    let started = std::time::Instant::now();
    let count =
        crate::source::s3::fetch(&crate::aws::s3::client(&connected.config), url, dir.path())
            .await?;
    eprintln!(
        "Fetched {count} files of s3://{}/{} in {:.1} s",
        url.bucket,
        url.prefix,
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// The summary of a build that could not be provisioned.
pub fn provisioning_failed(request: &BuildRequest, message: &str) -> Summary {
    Summary {
        build_id: request.build_id.clone(),
        status: BuildStatus::Failed,
        phases: vec![PhaseRecord {
            phase: "PROVISIONING",
            status: BuildStatus::Failed,
            duration_ms: 0,
            message: Some(message.to_string()),
        }],
        exported_variables: Default::default(),
        artifacts: Vec::new(),
        reports: Vec::new(),
        builds: Vec::new(),
    }
}
