//! Cross-account roles: `AssumeRole` from the base credentials through a chain of roles, with
//! the credentials of each link cached and re-assumed well before they expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::Tag;
use tokio::sync::Mutex;

/// What to assume, and how.
#[derive(Debug, Clone, Default)]
pub struct RoleOptions {
    /// The chain: base credentials → the first role → the second…
    pub roles: Vec<String>,
    pub external_id: Option<String>,
    pub session_name: String,
    pub duration: Option<Duration>,
    pub tags: Vec<(String, String)>,
    pub source_identity: Option<String>,
}

/// Role chaining caps sessions at one hour (aws-spec §5.3).
pub const CHAINED_MAX: Duration = Duration::from_secs(3600);
pub const MIN_DURATION: Duration = Duration::from_secs(900);
pub const MAX_DURATION: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error(
        "cannot assume role {role}: access denied ({message}); check that the role's trust policy allows the caller{external}"
    )]
    AccessDenied {
        role: String,
        message: String,
        external: &'static str,
    },
    #[error(
        "cannot assume role {role}: STS is not activated in this region for the role's account; activate the regional STS endpoint in IAM account settings, or use another --region"
    )]
    RegionDisabled { role: String },
    #[error(
        "cannot assume role {role}: the session duration is too long for this role ({message}); lower --duration to the role's maximum session duration (1 h when chaining roles)"
    )]
    DurationTooLong { role: String, message: String },
    #[error(
        "cannot assume role {role}: the base credentials have expired; refresh them (e.g. `aws sso login`) and try again"
    )]
    Expired { role: String },
    #[error("cannot assume role {role}: {message}")]
    Other { role: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl RoleError {
    /// The same error with `masker`'s values hidden in what the service said: an STS
    /// message (or a proxy's) may echo what the request carried.
    pub fn masked(self, masker: &crate::logs::Masker) -> RoleError {
        match self {
            RoleError::AccessDenied {
                role,
                message,
                external,
            } => RoleError::AccessDenied {
                role,
                message: masker.mask_str(&message),
                external,
            },
            RoleError::DurationTooLong { role, message } => RoleError::DurationTooLong {
                role,
                message: masker.mask_str(&message),
            },
            RoleError::Other { role, message } => RoleError::Other {
                role,
                message: masker.mask_str(&message),
            },
            RoleError::Invalid(message) => RoleError::Invalid(masker.mask_str(&message)),
            other => other,
        }
    }
}

/// Sanitizes a session name to STS's `[\w+=,.@-]{2,64}`.
pub fn session_name(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while name.len() < 2 {
        name.push('-');
    }
    name
}

/// Checks the options and returns the duration each link will ask for, with a warning when
/// chaining forced it down.
pub fn plan_duration(
    options: &RoleOptions,
    base_is_role: bool,
) -> Result<(Option<Duration>, Option<String>), RoleError> {
    let Some(asked) = options.duration else {
        return Ok((None, None));
    };
    if asked < MIN_DURATION || asked > MAX_DURATION {
        return Err(RoleError::Invalid(format!(
            "--duration must be between 15 minutes and 12 hours, not {} s",
            asked.as_secs()
        )));
    }
    let chaining = options.roles.len() > 1 || base_is_role;
    if chaining && asked > CHAINED_MAX {
        let warning = format!(
            "role chaining caps sessions at 1 hour: asking for 3600 s instead of {} s",
            asked.as_secs()
        );
        return Ok((Some(CHAINED_MAX), Some(warning)));
    }
    Ok((Some(asked), None))
}

/// A role's credentials, assumed with the credentials of the link before it.
#[derive(Debug)]
pub struct RoleProvider {
    role: String,
    options: RoleOptions,
    duration: Option<Duration>,
    sts: aws_sdk_sts::Client,
    cached: Mutex<Option<Credentials>>,
}

impl RoleProvider {
    pub fn new(
        base: &SdkConfig,
        upstream: SharedCredentialsProvider,
        role: &str,
        options: &RoleOptions,
        duration: Option<Duration>,
    ) -> Self {
        let config = base
            .to_builder()
            .credentials_provider(upstream)
            .identity_cache(aws_config::identity::IdentityCache::no_cache())
            .build();
        RoleProvider {
            role: role.to_string(),
            options: options.clone(),
            duration,
            sts: aws_sdk_sts::Client::new(&config),
            cached: Mutex::new(None),
        }
    }

    /// Fresh credentials: the cached ones unless they are near their end.
    pub async fn credentials(&self) -> Result<Credentials, RoleError> {
        let mut cached = self.cached.lock().await;
        if let Some(creds) = cached.as_ref()
            && !needs_refresh(creds, self.duration)
        {
            return Ok(creds.clone());
        }
        let fresh = self.assume().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    async fn assume(&self) -> Result<Credentials, RoleError> {
        let tags: Vec<Tag> = self
            .options
            .tags
            .iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        let request = self
            .sts
            .assume_role()
            .role_arn(&self.role)
            .role_session_name(&self.options.session_name)
            .set_external_id(self.options.external_id.clone())
            .set_duration_seconds(self.duration.and_then(|d| i32::try_from(d.as_secs()).ok()))
            .set_tags((!tags.is_empty()).then_some(tags))
            .set_source_identity(self.options.source_identity.clone());
        let output = request.send().await.map_err(|e| self.describe(e))?;
        let creds = output.credentials.ok_or_else(|| RoleError::Other {
            role: self.role.clone(),
            message: "STS returned no credentials".into(),
        })?;
        let expiry = SystemTime::try_from(creds.expiration).ok();
        tracing::debug!(role = %self.role, ?expiry, "assumed role");
        Ok(Credentials::new(
            creds.access_key_id,
            creds.secret_access_key,
            Some(creds.session_token),
            expiry,
            "agent-assume-role",
        ))
    }

    fn describe<E>(&self, error: SdkError<E>) -> RoleError
    where
        E: ProvideErrorMetadata + std::fmt::Debug + std::error::Error + 'static,
    {
        let role = self.role.clone();
        let code = error.code().unwrap_or_default().to_string();
        let message = error
            .message()
            .map_or_else(|| format!("{error:?}"), str::to_string);
        match code.as_str() {
            "AccessDenied" => RoleError::AccessDenied {
                role,
                message,
                external: if self.options.external_id.is_some() {
                    " and expects this --external-id"
                } else {
                    ", and pass --external-id if it requires one"
                },
            },
            "RegionDisabledException" => RoleError::RegionDisabled { role },
            "ExpiredTokenException" => RoleError::Expired { role },
            "ValidationError" if message.to_ascii_lowercase().contains("duration") => {
                RoleError::DurationTooLong { role, message }
            }
            "" => RoleError::Other {
                role,
                message: format!("STS could not be reached: {}", super::error_text(&error)),
            },
            _ => RoleError::Other {
                role,
                message: format!("{code}: {message}"),
            },
        }
    }
}

/// Re-assume when less than max(15 min, a quarter of the session) is left (aws-spec §5.6).
fn needs_refresh(creds: &Credentials, duration: Option<Duration>) -> bool {
    let Some(expiry) = creds.expiry() else {
        return false;
    };
    let session = duration.unwrap_or(CHAINED_MAX);
    let margin = Duration::from_secs(15 * 60).max(session / 4);
    match expiry.duration_since(SystemTime::now()) {
        Ok(left) => left < margin,
        Err(_) => true,
    }
}

impl ProvideCredentials for RoleProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(|e| CredentialsError::provider_error(e.to_string()))
        })
    }
}

/// The chain's links, each built on the one before.
pub fn chain(
    base: &SdkConfig,
    options: &RoleOptions,
    duration: Option<Duration>,
) -> Option<Vec<Arc<RoleProvider>>> {
    let mut upstream = base.credentials_provider()?;
    let mut links = Vec::new();
    for role in &options.roles {
        let link = Arc::new(RoleProvider::new(base, upstream, role, options, duration));
        upstream = SharedCredentialsProvider::new(ArcProvider(Arc::clone(&link)));
        links.push(link);
    }
    Some(links)
}

/// Lets a shared `RoleProvider` be the upstream of the next link.
#[derive(Debug)]
struct ArcProvider(Arc<RoleProvider>);

impl ProvideCredentials for ArcProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        self.0.provide_credentials()
    }
}

/// A handle that serves the last link's credentials to clients and to build containers.
#[derive(Debug, Clone)]
pub struct Assumed {
    pub role: String,
    last: Arc<RoleProvider>,
}

impl Assumed {
    pub fn new(links: &[Arc<RoleProvider>]) -> Option<Assumed> {
        let last = links.last()?;
        Some(Assumed {
            role: last.role.clone(),
            last: Arc::clone(last),
        })
    }

    pub async fn credentials(&self) -> Result<Credentials, RoleError> {
        self.last.credentials().await
    }

    pub fn provider(&self) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(ArcProvider(Arc::clone(&self.last)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_sanitized() {
        assert_eq!(session_name("agent-local:6f1c-aa"), "agent-local-6f1c-aa");
        assert_eq!(session_name("x"), "x-");
        assert_eq!(session_name(&"a".repeat(100)).len(), 64);
        assert_eq!(session_name("me@corp.com+ci=1,2"), "me@corp.com+ci=1,2");
    }

    #[test]
    fn chaining_clamps_the_duration() {
        let mut options = RoleOptions {
            roles: vec![
                "arn:aws:iam::1:role/a".into(),
                "arn:aws:iam::2:role/b".into(),
            ],
            duration: Some(Duration::from_secs(7200)),
            ..RoleOptions::default()
        };
        let (duration, warning) = plan_duration(&options, false).unwrap();
        assert_eq!(duration, Some(CHAINED_MAX));
        assert!(warning.unwrap().contains("1 hour"));
        options.roles.truncate(1);
        assert_eq!(
            plan_duration(&options, false).unwrap(),
            (Some(Duration::from_secs(7200)), None)
        );
        assert_eq!(plan_duration(&options, true).unwrap().0, Some(CHAINED_MAX));
        options.duration = Some(Duration::from_secs(60));
        assert!(plan_duration(&options, false).is_err());
    }

    #[test]
    fn refresh_happens_well_before_expiry() {
        let soon = Credentials::new(
            "a",
            "b",
            None,
            Some(SystemTime::now() + Duration::from_secs(600)),
            "t",
        );
        let later = Credentials::new(
            "a",
            "b",
            None,
            Some(SystemTime::now() + Duration::from_secs(3000)),
            "t",
        );
        assert!(needs_refresh(&soon, Some(Duration::from_secs(3600))));
        assert!(!needs_refresh(&later, Some(Duration::from_secs(3600))));
        assert!(needs_refresh(&later, Some(Duration::from_secs(12 * 3600))));
    }
}
