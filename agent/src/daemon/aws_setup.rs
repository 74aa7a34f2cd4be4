//! The daemon's own AWS setup (its results store, git credentials from Secrets Manager):
//! loaded when a job first needs it, so an agent that never calls AWS keeps none of the SDK
//! in memory, and loaded again after a reload changed `[aws]`.

use agent_config::Config;
use agent_config::config::AwsConfig;

#[derive(Default)]
pub struct AwsSetup {
    loaded: tokio::sync::Mutex<Option<(AwsConfig, aws_config::SdkConfig)>>,
}

impl AwsSetup {
    pub async fn get(&self, config: &Config) -> aws_config::SdkConfig {
        let mut loaded = self.loaded.lock().await;
        if let Some((from, sdk)) = loaded.as_ref()
            && *from == config.aws
        {
            return sdk.clone();
        }
        if let Err(why) = crate::aws::ca::require(config.aws.endpoint_url.as_deref()) {
            tracing::error!("{why}");
        }
        let sdk = super::aws_config(config).await;
        *loaded = Some((config.aws.clone(), sdk.clone()));
        sdk
    }

    /// A client of the fleet's result store, when `storage.results` names one.
    pub async fn results_store(&self, config: &Config) -> Option<aws_sdk_s3::Client> {
        config.storage.results.as_ref()?;
        Some(crate::aws::s3::client(&self.get(config).await))
    }
}
