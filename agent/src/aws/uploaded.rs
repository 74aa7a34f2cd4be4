//! Counts the bytes this process has uploaded to S3 (artifacts, logs, cache, CodePipeline
//! outputs, results): every S3 client the agent makes carries [`Counter`], which adds a
//! request's body to the total once S3 has accepted it. A retried attempt counts once.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

static UPLOADED: AtomicU64 = AtomicU64::new(0);

/// Bytes uploaded by this process so far.
pub fn total() -> u64 {
    UPLOADED.load(Ordering::Relaxed)
}

#[derive(Debug)]
pub struct Counter;

/// The body size of the attempt under way, kept between sending and the answer.
#[derive(Debug, Clone)]
struct Sending(u64);

impl Storable for Sending {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "UploadedBytes"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let sending = match request.method() {
            "PUT" | "POST" => request.body().content_length().unwrap_or(0),
            _ => 0,
        };
        cfg.interceptor_state().store_put(Sending(sending));
        Ok(())
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if context.response().status().is_success()
            && let Some(Sending(bytes)) = cfg.load::<Sending>()
        {
            UPLOADED.fetch_add(*bytes, Ordering::Relaxed);
        }
        Ok(())
    }
}
