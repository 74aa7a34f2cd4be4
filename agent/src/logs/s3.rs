//! The build log in S3: `<prefix>/logs/<build-id>.log`, gzip, written while the build runs.
//!
//! Every few seconds the new lines are compressed as a gzip member and saved as a small
//! checkpoint object, so a crash loses at most those seconds; the same members make up the
//! parts of a multipart upload of the final object (gzip members concatenate into one valid
//! gzip stream). At the end the final object is completed and the checkpoints removed.

use std::io::Write;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Record, Sink};
use crate::aws::s3::{PART_SIZE, Progress, PutOptions, S3Error, multipart};

/// How much of a long build a crash of the agent may lose.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// The sink half: lines go to the uploader without waiting for S3.
pub struct S3LogSink {
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
}

impl Sink for S3LogSink {
    fn name(&self) -> &str {
        "S3 log"
    }

    fn line(&mut self, record: &Record<'_>) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(record.line.len() + 1);
        bytes.extend_from_slice(record.line);
        bytes.push(b'\n');
        match &self.tx {
            Some(tx) => tx
                .send(bytes)
                .map_err(|_| std::io::Error::other("the S3 log upload stopped")),
            None => Ok(()),
        }
    }

    fn close(&mut self) {
        self.tx = None;
    }
}

/// The uploader half; [`S3LogUpload::finish`] completes the object once the log is closed.
pub struct S3LogUpload {
    task: JoinHandle<Result<String, S3Error>>,
}

impl S3LogUpload {
    /// Waits for the last lines to reach S3; the object's `s3://` URL.
    pub async fn finish(self) -> Result<String, S3Error> {
        self.task.await.map_err(|e| S3Error::Upload {
            bucket: String::new(),
            key: String::new(),
            message: e.to_string(),
        })?
    }
}

/// Starts uploading a log to `key` in `bucket`; `finish` returns once the log is closed.
pub fn start(
    client: Client,
    bucket: String,
    key: String,
    options: PutOptions,
) -> (S3LogSink, S3LogUpload) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(upload(client, bucket, key, options, rx));
    (S3LogSink { tx: Some(tx) }, S3LogUpload { task })
}

async fn upload(
    client: Client,
    bucket: String,
    key: String,
    options: PutOptions,
    mut lines: mpsc::UnboundedReceiver<Vec<u8>>,
) -> Result<String, S3Error> {
    let (parts_tx, parts_rx) = mpsc::channel::<Vec<u8>>(4);
    let progress = Progress::default();
    let final_upload = {
        let (client, bucket, key, options, progress) = (
            client.clone(),
            bucket.clone(),
            key.clone(),
            options.clone(),
            progress.clone(),
        );
        tokio::spawn(async move {
            multipart(&client, &bucket, &key, parts_rx, &options, &progress).await
        })
    };
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    let mut fresh = false;
    let mut part = Vec::new();
    let mut checkpoints = Vec::new();
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.tick().await;
    loop {
        // A checkpoint when the interval passes or the log closes, if anything is new.
        let (checkpoint_now, closed) = tokio::select! {
            line = lines.recv() => match line {
                Some(line) => {
                    let _ = encoder.write_all(&line);
                    fresh = true;
                    (false, false)
                }
                None => (true, true),
            },
            _ = tick.tick() => (true, false),
        };
        if fresh && checkpoint_now {
            let member = std::mem::replace(
                &mut encoder,
                GzEncoder::new(Vec::new(), Compression::default()),
            )
            .finish()
            .unwrap_or_default();
            fresh = false;
            let checkpoint = format!("{key}.parts/{:06}.gz", checkpoints.len() + 1);
            let saved = client
                .put_object()
                .bucket(&bucket)
                .key(&checkpoint)
                .body(ByteStream::from(member.clone()))
                .send()
                .await;
            match saved {
                Ok(_) => checkpoints.push(checkpoint),
                Err(e) => tracing::warn!(error = %e, "cannot save a log checkpoint"),
            }
            part.extend_from_slice(&member);
            if part.len() >= PART_SIZE {
                let _ = parts_tx.send(std::mem::take(&mut part)).await;
            }
        }
        if closed {
            break;
        }
    }
    if !part.is_empty() {
        let _ = parts_tx.send(part).await;
    }
    drop(parts_tx);
    let completed = final_upload.await.map_err(|e| S3Error::Upload {
        bucket: bucket.clone(),
        key: key.clone(),
        message: e.to_string(),
    })?;
    completed?;
    for checkpoint in checkpoints {
        let _ = client
            .delete_object()
            .bucket(&bucket)
            .key(&checkpoint)
            .send()
            .await;
    }
    Ok(format!("s3://{bucket}/{key}"))
}
