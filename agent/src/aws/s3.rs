//! Uploads to S3: single objects, multipart uploads with parallel parts for large files,
//! bounded concurrency for many small ones, and zip archives streamed while they are
//! written. Every part carries a CRC32C checksum that S3 verifies; the SDK retries with
//! backoff; a multipart upload that fails is aborted, so no partial object appears.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::error_text;

/// S3's smallest part (but the last); large enough to keep the request count low.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one large file in flight at once.
pub const CONCURRENCY: usize = 6;
/// Small files in flight at once: each is one short request, so more of them overlap.
pub const FILE_CONCURRENCY: usize = 32;

/// `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

impl S3Url {
    pub fn parse(text: &str) -> Result<S3Url, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{text}` is not an s3://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("`{text}` names no bucket"));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The key for `parts` under the prefix, joined with `/`, empty parts skipped.
    pub fn key(&self, parts: &[&str]) -> String {
        std::iter::once(self.prefix.as_str())
            .chain(parts.iter().copied())
            .flat_map(|p| p.split('/'))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// How every object is written.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// SSE-KMS with this key; `None` leaves the bucket's default encryption.
    pub kms_key_id: Option<String>,
    /// `x-amz-meta-*` on every object.
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 upload of s3://{bucket}/{key} failed: {message}")]
    Upload {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write the archive: {0}")]
    Zip(String),
    #[error("S3 download of s3://{bucket}/{key} failed: {message}")]
    Download {
        bucket: String,
        key: String,
        message: String,
    },
}

/// Bytes sent so far, for progress lines.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// `12.3 MB at 45.6 MB/s`.
    pub fn describe(&self, since: Instant) -> String {
        let bytes = self.bytes() as f64;
        let rate = bytes / since.elapsed().as_secs_f64().max(0.001);
        format!("{:.1} MB at {:.1} MB/s", bytes / 1e6, rate / 1e6)
    }
}

fn failed(bucket: &str, key: &str, error: impl std::fmt::Display) -> S3Error {
    S3Error::Upload {
        bucket: bucket.to_string(),
        key: key.to_string(),
        message: error.to_string(),
    }
}

/// Uploads one file: a single PUT when small, a multipart upload when large.
pub async fn upload_file(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    options: &PutOptions,
    progress: &Progress,
) -> Result<(), S3Error> {
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|e| S3Error::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .len();
    if size <= PART_SIZE as u64 {
        let body = tokio::fs::read(path).await.map_err(|e| S3Error::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        return put_object(client, bucket, key, body, options, progress).await;
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>(2);
    let path_owned = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), S3Error> {
        use std::io::Read;
        let mut file = std::fs::File::open(&path_owned).map_err(|e| S3Error::Read {
            path: path_owned.clone(),
            message: e.to_string(),
        })?;
        loop {
            let mut part = Vec::with_capacity(PART_SIZE);
            (&mut file)
                .take(PART_SIZE as u64)
                .read_to_end(&mut part)
                .map_err(|e| S3Error::Read {
                    path: path_owned.clone(),
                    message: e.to_string(),
                })?;
            if part.is_empty() || tx.blocking_send(part).is_err() {
                return Ok(());
            }
        }
    });
    let uploaded = multipart(client, bucket, key, rx, options, progress).await;
    reader.await.map_err(|e| failed(bucket, key, e))??;
    uploaded
}

async fn put_object(
    client: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    options: &PutOptions,
    progress: &Progress,
) -> Result<(), S3Error> {
    let len = body.len() as u64;
    let body = bytes::Bytes::from(body);
    with_transport_retries(bucket, key, || {
        let mut request = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.clone()))
            .checksum_algorithm(ChecksumAlgorithm::Crc32C);
        for (k, v) in &options.metadata {
            request = request.metadata(k, v);
        }
        if let Some(kms) = &options.kms_key_id {
            request = request
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms);
        }
        async move { request.send().await.map(|_| ()) }
    })
    .await?;
    progress.add(len);
    Ok(())
}

/// The SDK retries what S3 answers with 5xx and most connection failures; a response cut
/// off in the middle it does not. Those are tried again here, a few times, with backoff.
async fn with_transport_retries<T, E, F, Fut>(
    bucket: &str,
    key: &str,
    mut attempt: F,
) -> Result<T, S3Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
            Output = Result<
                T,
                aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
            >,
        >,
    E: std::error::Error + 'static,
{
    const ATTEMPTS: u32 = 4;
    let mut tried = 0;
    loop {
        tried += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                let transport = matches!(
                    error,
                    aws_sdk_s3::error::SdkError::ResponseError(_)
                        | aws_sdk_s3::error::SdkError::DispatchFailure(_)
                        | aws_sdk_s3::error::SdkError::TimeoutError(_)
                );
                if !transport || tried >= ATTEMPTS {
                    return Err(failed(bucket, key, error_text(&error)));
                }
                tokio::time::sleep(std::time::Duration::from_millis(200 << tried)).await;
            }
        }
    }
}

/// A multipart upload of the parts `parts` yields, several in flight at once. On any
/// failure the upload is aborted: S3 then holds nothing under `key` from this attempt.
pub async fn multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    mut parts: mpsc::Receiver<Vec<u8>>,
    options: &PutOptions,
    progress: &Progress,
) -> Result<(), S3Error> {
    let mut create = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32C);
    for (k, v) in &options.metadata {
        create = create.metadata(k, v);
    }
    if let Some(kms) = &options.kms_key_id {
        create = create
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(kms);
    }
    let upload = create
        .send()
        .await
        .map_err(|e| failed(bucket, key, error_text(&e)))?;
    let upload_id = upload.upload_id().unwrap_or_default().to_string();
    let result = async {
        let mut running: JoinSet<Result<CompletedPart, S3Error>> = JoinSet::new();
        let mut done = Vec::new();
        let mut number = 0;
        while let Some(body) = parts.recv().await {
            number += 1;
            while running.len() >= CONCURRENCY {
                if let Some(joined) = running.join_next().await {
                    done.push(joined.map_err(|e| failed(bucket, key, e))??);
                }
            }
            let (client, bucket_owned, key_owned, id, progress) = (
                client.clone(),
                bucket.to_string(),
                key.to_string(),
                upload_id.clone(),
                progress.clone(),
            );
            running.spawn(async move {
                let len = body.len() as u64;
                let body = bytes::Bytes::from(body);
                let output = with_transport_retries(&bucket_owned, &key_owned, || {
                    client
                        .upload_part()
                        .bucket(&bucket_owned)
                        .key(&key_owned)
                        .upload_id(&id)
                        .part_number(number)
                        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                        .body(ByteStream::from(body.clone()))
                        .send()
                })
                .await?;
                progress.add(len);
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(output.e_tag)
                    .set_checksum_crc32_c(output.checksum_crc32_c)
                    .build())
            });
        }
        while let Some(joined) = running.join_next().await {
            done.push(joined.map_err(|e| failed(bucket, key, e))??);
        }
        if done.is_empty() {
            return Err(failed(bucket, key, "nothing to upload"));
        }
        done.sort_by_key(|p| p.part_number);
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failed(bucket, key, error_text(&e)))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await;
    }
    result
}

/// Uploads files (`source`, key) with bounded concurrency. When one fails, the objects
/// already written are deleted, so a failed artifact is absent rather than half there.
pub async fn upload_files(
    client: &Client,
    bucket: &str,
    files: Vec<(PathBuf, String)>,
    options: &PutOptions,
    progress: &Progress,
) -> Result<(), S3Error> {
    // Only `FILE_CONCURRENCY` uploads exist at a time: ten thousand pending request futures
    // would cost more memory than the files themselves.
    let mut pending = files.into_iter();
    let mut running = JoinSet::new();
    let mut written = Vec::new();
    let mut first_error = None;
    loop {
        while first_error.is_none() && running.len() < FILE_CONCURRENCY {
            let Some((path, key)) = pending.next() else {
                break;
            };
            let (client, bucket, options, progress) = (
                client.clone(),
                bucket.to_string(),
                options.clone(),
                progress.clone(),
            );
            running.spawn(async move {
                upload_file(&client, &bucket, &key, &path, &options, &progress)
                    .await
                    .map(|()| key)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(key)) => written.push(key),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
                running.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_error.get_or_insert(failed(bucket, "", e));
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(error) => {
            for key in written {
                let _ = client.delete_object().bucket(bucket).key(&key).send().await;
            }
            Err(error)
        }
    }
}

/// Uploads what `write` produces, as it produces it: the bytes go out in parts of a
/// multipart upload and are never held whole in memory or on disk. `write` runs on a
/// blocking thread.
pub async fn upload_stream<F>(
    client: &Client,
    bucket: &str,
    key: &str,
    options: &PutOptions,
    progress: &Progress,
    write: F,
) -> Result<(), S3Error>
where
    F: FnOnce(&mut dyn Write) -> Result<(), S3Error> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Vec<u8>>(2);
    let writer = tokio::task::spawn_blocking(move || -> Result<(), S3Error> {
        let mut sink = PartWriter {
            buffer: Vec::with_capacity(PART_SIZE),
            tx,
        };
        write(&mut sink)?;
        sink.flush_part().map_err(|e| S3Error::Zip(e.to_string()))
    });
    let uploaded = multipart(client, bucket, key, rx, options, progress).await;
    let written = writer.await.map_err(|e| failed(bucket, key, e))?;
    // A writer error means the upload got fewer parts than the stream: it must not stand.
    if let Err(e) = written {
        if uploaded.is_ok() {
            let _ = client.delete_object().bucket(bucket).key(key).send().await;
        }
        return Err(e);
    }
    uploaded
}

/// Writes a zip of `files` (source, name in the archive) straight into a multipart upload.
pub async fn upload_zip(
    client: &Client,
    bucket: &str,
    key: &str,
    files: Vec<(PathBuf, String)>,
    keep_symlinks: bool,
    options: &PutOptions,
    progress: &Progress,
) -> Result<(), S3Error> {
    upload_stream(client, bucket, key, options, progress, move |out| {
        let mut zip = zip::ZipWriter::new_stream(out);
        let file_options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        for (path, name) in files {
            // With `enable-symlinks`, links inside the artifact stay links, as CodeBuild keeps them.
            if keep_symlinks
                && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink())
            {
                let target = std::fs::read_link(&path).map_err(|e| S3Error::Read {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                zip.add_symlink(name, target.to_string_lossy(), file_options)
                    .map_err(|e| S3Error::Zip(e.to_string()))?;
                continue;
            }
            let mut options = file_options;
            if let Ok(meta) = std::fs::metadata(&path) {
                use std::os::unix::fs::PermissionsExt;
                options = options.unix_permissions(meta.permissions().mode());
            }
            zip.start_file(name, options)
                .map_err(|e| S3Error::Zip(e.to_string()))?;
            let mut file = std::fs::File::open(&path).map_err(|e| S3Error::Read {
                path: path.clone(),
                message: e.to_string(),
            })?;
            std::io::copy(&mut file, &mut zip).map_err(|e| S3Error::Read {
                path: path.clone(),
                message: e.to_string(),
            })?;
        }
        zip.finish().map_err(|e| S3Error::Zip(e.to_string()))?;
        Ok(())
    })
    .await
}

/// Collects written bytes into parts and hands each full part to the uploader.
struct PartWriter {
    buffer: Vec<u8>,
    tx: mpsc::Sender<Vec<u8>>,
}

impl PartWriter {
    fn flush_part(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(PART_SIZE));
        self.tx
            .blocking_send(part)
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = PART_SIZE - self.buffer.len();
        let n = data.len().min(room);
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() == PART_SIZE {
            self.flush_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An S3 client; path-style addressing when an endpoint override points elsewhere than AWS
/// (S3-compatible servers rarely serve bucket subdomains).
pub fn client(config: &aws_config::SdkConfig) -> Client {
    let custom = config.endpoint_url().is_some()
        || ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
            .iter()
            .any(|name| std::env::var_os(name).is_some());
    // Uploads ride out resets and 5xx answers: more attempts than the SDK's default three.
    let retry = aws_config::retry::RetryConfig::standard().with_max_attempts(6);
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(custom)
        .retry_config(retry)
        .interceptor(super::uploaded::Counter)
        .build();
    Client::from_conf(s3_config)
}

/// Downloads an object to `dest`, streaming: the body is never held whole in memory.
pub async fn download(
    client: &Client,
    bucket: &str,
    key: &str,
    dest: &Path,
) -> Result<u64, S3Error> {
    use tokio::io::AsyncWriteExt;
    let fail = |message: String| S3Error::Download {
        bucket: bucket.to_string(),
        key: key.to_string(),
        message,
    };
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail(error_text(&e)))?;
    let mut body = object.body;
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut written = 0u64;
    while let Some(chunk) = body.try_next().await.map_err(|e| fail(e.to_string()))? {
        file.write_all(&chunk)
            .await
            .map_err(|e| fail(e.to_string()))?;
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(|e| fail(e.to_string()))?;
    Ok(written)
}

/// Whether `key` exists in `bucket`.
pub async fn exists(client: &Client, bucket: &str, key: &str) -> bool {
    client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok()
}

/// The newest object whose key starts with `prefix`.
pub async fn newest_with_prefix(client: &Client, bucket: &str, prefix: &str) -> Option<String> {
    let mut newest: Option<(aws_sdk_s3::primitives::DateTime, String)> = None;
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let Ok(page) = page else { break };
        for object in page.contents() {
            if let (Some(key), Some(modified)) = (object.key(), object.last_modified()) {
                let newer = newest
                    .as_ref()
                    .is_none_or(|(t, _)| modified.secs() > t.secs());
                if newer {
                    newest = Some((*modified, key.to_string()));
                }
            }
        }
    }
    newest.map(|(_, key)| key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keys() {
        let url = S3Url::parse("s3://bucket/a/b/").unwrap();
        assert_eq!(
            url,
            S3Url {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            url.key(&["", "build-1", "app/x.jar"]),
            "a/b/build-1/app/x.jar"
        );
        assert_eq!(S3Url::parse("s3://bucket").unwrap().key(&["x"]), "x");
        assert!(S3Url::parse("s3:///x").is_err());
        assert!(S3Url::parse("/tmp/x").is_err());
    }
}
