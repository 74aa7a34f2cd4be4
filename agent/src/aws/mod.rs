//! AWS: the standard credentials chain (environment, profiles, web identity, ECS, EC2,
//! `credential_process`), cross-account roles, and the values a buildspec fetches from
//! Parameter Store and Secrets Manager. The SDK's endpoint overrides (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_<SERVICE>`) apply everywhere.

pub mod ca;
pub mod endpoint;
pub mod params;
pub mod roles;
pub mod s3;
pub mod transient;
pub mod uploaded;

use std::time::SystemTime;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;

pub use roles::{Assumed, RoleError, RoleOptions};

/// The region used when nothing names one, so that local runs work without configuration.
pub const FALLBACK_REGION: &str = "us-east-1";

#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub profile: Option<String>,
    pub region: Option<String>,
    pub role: RoleOptions,
}

/// A configured AWS client setup: the base chain, or the last role of the chain.
pub struct Aws {
    pub config: SdkConfig,
    pub assumed: Option<Assumed>,
    /// Things the user should know (a clamped duration, a default region).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{0}")]
    NoCaCertificates(String),
    #[error(
        "no AWS credentials to start from: {0}; configure a profile, environment variables or an instance role"
    )]
    NoCredentials(String),
    #[error(transparent)]
    Role(#[from] RoleError),
}

/// How long an AWS call may wait for the first byte of its answer (from when the request
/// starts, so a part upload's own transfer counts) before it is retried:
/// `AGENT_AWS_READ_TIMEOUT` seconds, 300 by default. Without a limit a server or proxy that
/// accepts a request and never answers would hang the build until its own timeout.
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    let read = std::env::var("AGENT_AWS_READ_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(300);
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(read))
        .build()
}

/// Loads the base configuration and assumes the role chain, if any; the first credentials
/// are fetched now, so a wrong role fails before anything runs, with a message naming it.
pub async fn connect(options: &AwsOptions) -> Result<Aws, AwsError> {
    ca::require(None).map_err(AwsError::NoCaCertificates)?;
    let mut notes = Vec::new();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts());
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let mut base = loader.load().await;
    if base.region().is_none() {
        notes.push(format!(
            "no AWS region is configured: using {FALLBACK_REGION} (set --region or AWS_REGION)"
        ));
        base = base
            .to_builder()
            .region(Region::new(FALLBACK_REGION))
            .build();
    }
    assume_from(base, &options.role, notes).await
}

/// Assumes the role chain of `role` starting from `base`'s credentials; `base` itself when
/// the chain is empty. Each link is assumed once now, so a refused role fails here.
pub async fn assume_from(
    base: SdkConfig,
    role: &RoleOptions,
    mut notes: Vec<String>,
) -> Result<Aws, AwsError> {
    if role.roles.is_empty() {
        return Ok(Aws {
            config: base,
            assumed: None,
            notes,
        });
    }
    let base_creds = base_credentials(&base).await?;
    // Temporary keys (ASIA…) mean the base is itself a role session: assuming another role
    // from it is chaining.
    let base_is_role = base_creds.access_key_id().starts_with("ASIA");
    let (duration, warning) = roles::plan_duration(role, base_is_role)?;
    notes.extend(warning);
    let links = roles::chain(&base, role, duration)
        .ok_or_else(|| AwsError::NoCredentials("no credentials provider".into()))?;
    // The caller's own secrets never appear in a message about the chain.
    let base_secrets: Vec<&str> = std::iter::once(base_creds.secret_access_key())
        .chain(base_creds.session_token())
        .collect();
    let masker = crate::logs::Masker::new(&base_secrets);
    for link in &links {
        link.credentials().await.map_err(|e| e.masked(&masker))?;
    }
    let assumed = Assumed::new(&links).ok_or_else(|| AwsError::NoCredentials("no role".into()))?;
    let config = base
        .to_builder()
        .credentials_provider(assumed.provider())
        .build();
    Ok(Aws {
        config,
        assumed: Some(assumed),
        notes,
    })
}

async fn base_credentials(config: &SdkConfig) -> Result<Credentials, AwsError> {
    let provider = config
        .credentials_provider()
        .ok_or_else(|| AwsError::NoCredentials("no credentials provider is configured".into()))?;
    provider
        .provide_credentials()
        .await
        .map_err(|e| AwsError::NoCredentials(error_text(&e)))
}

/// An error with its chain of causes, for messages that must say why.
pub(crate) fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Credentials as the static variables a build container reads, and when they expire.
pub fn static_variables(
    creds: &Credentials,
    region: Option<&str>,
) -> (Vec<(String, String)>, Option<SystemTime>) {
    let mut vars = vec![
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            creds.access_key_id().to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            creds.secret_access_key().to_string(),
        ),
    ];
    if let Some(token) = creds.session_token() {
        vars.push(("AWS_SESSION_TOKEN".to_string(), token.to_string()));
    }
    if let Some(region) = region {
        vars.push(("AWS_REGION".to_string(), region.to_string()));
        vars.push(("AWS_DEFAULT_REGION".to_string(), region.to_string()));
    }
    (vars, creds.expiry())
}
