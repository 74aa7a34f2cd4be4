//! The AWS side of a local build, before it starts: credentials, the role chain, and the
//! values of `env.parameter-store` and `env.secrets-manager`.

use crate::aws::{self, AwsOptions, RoleOptions};
use crate::build::{BuildRequest, BuildStatus, PhaseRecord, Summary};

use super::RunLocalArgs;

/// Connects when the build needs AWS; fills in resolved values and the build's credentials.
/// An error names what failed; nothing has run.
pub async fn provision(args: &RunLocalArgs, request: &mut BuildRequest) -> Result<(), String> {
    let env = &request.buildspec.env;
    let needs_values = !env.parameter_store.is_empty() || !env.secrets_manager.is_empty();
    let wants_credentials = !args.role_arn.is_empty() || args.profile.is_some();
    if !needs_values && !wants_credentials {
        return Ok(());
    }
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
                    .unwrap_or(&format!("agent-{}", request.build_id)),
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
    let mut resolved = aws::params::parameters(&connected.config, &env.parameter_store)
        .await
        .map_err(|e| e.to_string())?;
    resolved.extend(
        aws::params::secrets(&connected.config, &env.secrets_manager)
            .await
            .map_err(|e| e.to_string())?,
    );
    request.resolved = resolved;
    if wants_credentials {
        let region = connected.config.region().map(|r| r.to_string());
        let creds = match &connected.assumed {
            Some(assumed) => assumed.credentials().await.map_err(|e| e.to_string())?,
            None => {
                use aws_credential_types::provider::ProvideCredentials;
                let provider = connected
                    .config
                    .credentials_provider()
                    .ok_or("no AWS credentials provider is configured")?;
                provider
                    .provide_credentials()
                    .await
                    .map_err(|e| format!("no AWS credentials: {e}"))?
            }
        };
        let (vars, expiry) = aws::static_variables(&creds, region.as_deref());
        let whose = connected
            .assumed
            .as_ref()
            .map_or_else(|| "the profile".to_string(), |a| format!("role {}", a.role));
        let until = expiry.map_or_else(
            || "do not expire".to_string(),
            |t| format!("expire at {}", time::OffsetDateTime::from(t)),
        );
        eprintln!(
            "note: the build gets the AWS credentials of {whose} as static AWS_* variables; they {until}, and a build running longer loses AWS access"
        );
        request.aws_env = vars;
    }
    Ok(())
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
