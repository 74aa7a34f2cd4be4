//! A source from S3: a zip object, unpacked, or every object under a prefix.

use std::path::Path;

use aws_sdk_s3::Client;

use super::unpack;
use crate::aws::s3::{self, S3Url};

/// Fetches `url` into `dest`: a `.zip` object is unpacked, anything else is read as a
/// prefix whose objects become files. Nothing is written outside `dest`.
pub async fn fetch(client: &Client, url: &S3Url, dest: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    if url.prefix.to_ascii_lowercase().ends_with(".zip") {
        let archive = dest.with_extension("download.zip");
        s3::download(client, &url.bucket, &url.prefix, &archive)
            .await
            .map_err(|e| e.to_string())?;
        let (from, to) = (archive.clone(), dest.to_path_buf());
        let unpacked = tokio::task::spawn_blocking(move || unpack::unzip(&from, &to))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("s3://{}/{}: {e}", url.bucket, url.prefix)));
        let _ = std::fs::remove_file(&archive);
        return unpacked;
    }
    let prefix = if url.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", url.prefix)
    };
    let mut pages = client
        .list_objects_v2()
        .bucket(&url.bucket)
        .prefix(&prefix)
        .into_paginator()
        .send();
    let mut count = 0;
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("cannot list s3://{}/{prefix}: {e}", url.bucket))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if key.ends_with('/') {
                continue;
            }
            let relative = key.strip_prefix(&prefix).unwrap_or(key);
            let target = unpack::enclosed(relative)
                .map(|r| dest.join(r))
                .ok_or_else(|| format!("the object s3://{}/{key} would land outside the source; refusing the source", url.bucket))?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            s3::download(client, &url.bucket, key, &target)
                .await
                .map_err(|e| e.to_string())?;
            count += 1;
        }
    }
    if count == 0 {
        return Err(format!(
            "s3://{}/{} holds no objects",
            url.bucket, url.prefix
        ));
    }
    Ok(count)
}
