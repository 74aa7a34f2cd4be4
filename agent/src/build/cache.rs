//! `cache`: directories kept between builds in a local cache directory, with CodeBuild's
//! key rules (aws-spec §1.2): without a key one entry is restored and updated every build;
//! with a key the exact entry is restored, else the newest entry matching each
//! `fallback-keys` prefix in turn, and a keyed entry once saved is never replaced.
//! `action: restore` never saves, `action: save` never restores.
//!
//! An entry is a directory: `key` (the key's text), and one tar per cached path with a
//! manifest `paths` listing where each belongs.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::aws::s3::{self, S3Url};

/// The entry used when the buildspec gives no key.
pub const PROJECT_KEY: &str = "project-cache";

/// The directory of one entry.
pub fn entry_dir(cache_dir: &Path, key: &str) -> PathBuf {
    let digest = Sha256::digest(key.as_bytes());
    cache_dir.join("entries").join(hex(&digest[..16]))
}

/// The entry to restore: the exact key, else the newest entry whose key starts with each
/// fallback prefix, tried in order.
pub fn find(cache_dir: &Path, key: &str, fallbacks: &[String]) -> Option<(String, PathBuf)> {
    let exact = entry_dir(cache_dir, key);
    if is_complete(&exact) {
        return Some((key.to_string(), exact));
    }
    let entries = list(cache_dir);
    fallbacks.iter().find_map(|prefix| {
        entries
            .iter()
            .filter(|(k, _, _)| k.starts_with(prefix.as_str()))
            .max_by_key(|(_, _, modified)| *modified)
            .map(|(k, dir, _)| (k.clone(), dir.clone()))
    })
}

/// Every complete entry: key, directory, when it was saved.
fn list(cache_dir: &Path) -> Vec<(String, PathBuf, SystemTime)> {
    let Ok(read) = std::fs::read_dir(cache_dir.join("entries")) else {
        return Vec::new();
    };
    read.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|dir| is_complete(dir))
        .filter_map(|dir| {
            let key = std::fs::read_to_string(dir.join("key")).ok()?;
            let modified = std::fs::metadata(dir.join("paths"))
                .and_then(|m| m.modified())
                .ok()?;
            Some((key, dir, modified))
        })
        .collect()
}

/// An entry is complete once its manifest exists; it is written last.
pub fn is_complete(dir: &Path) -> bool {
    dir.join("paths").is_file()
}

/// The directories a `cache.paths` pattern stands for: `/root/.m2/**/*`, `/root/.m2/*` and
/// `/root/.m2` all mean the directory `/root/.m2`; a relative path is inside the source.
/// A pattern with wildcards in the middle caches the directory above the first wildcard.
pub fn cache_root(pattern: &str, src_dir: &str) -> Option<String> {
    let trimmed = pattern.trim();
    let mut parts: Vec<&str> = Vec::new();
    for part in trimmed.split('/') {
        if part.contains(['*', '?', '[']) {
            break;
        }
        parts.push(part);
    }
    let literal = parts.join("/");
    let literal = literal.trim_end_matches('/');
    if literal.is_empty() && !trimmed.starts_with('/') {
        return Some(src_dir.to_string());
    }
    if literal.split('/').any(|c| c == "..") {
        return None;
    }
    let path = if trimmed.starts_with('/') {
        if literal.is_empty() {
            "/".to_string()
        } else {
            literal.to_string()
        }
    } else {
        format!(
            "{}/{}",
            src_dir.trim_end_matches('/'),
            literal.trim_start_matches("./")
        )
    };
    (path != "/").then_some(path)
}

/// Fetches the S3 entry for `key` (or the newest matching a fallback prefix) into a new
/// directory under `staging`: the download streams to disk and is unpacked from there.
/// The found key and the directory, which the caller removes.
pub async fn s3_fetch(
    client: &aws_sdk_s3::Client,
    url: &S3Url,
    staging: &Path,
    key: &str,
    fallbacks: &[String],
) -> Result<Option<(String, PathBuf)>, String> {
    let exact = url.key(&[key]);
    let mut object = s3::exists(client, &url.bucket, &exact)
        .await
        .then_some(exact);
    for prefix in fallbacks {
        if object.is_some() {
            break;
        }
        object = s3::newest_with_prefix(client, &url.bucket, &url.key(&[prefix])).await;
    }
    let Some(object) = object else {
        return Ok(None);
    };
    let found = object
        .strip_prefix(&format!("{}/", url.prefix))
        .unwrap_or(&object)
        .to_string();
    std::fs::create_dir_all(staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let archive = staging.join(format!("download-{id}.tar.zst"));
    let entry = staging.join(format!("restore-{id}"));
    let downloaded = s3::download(client, &url.bucket, &object, &archive)
        .await
        .map_err(|e| e.to_string());
    let unpacked = match downloaded {
        Ok(_) => {
            let (archive, entry) = (archive.clone(), entry.clone());
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let decoder = zstd::stream::read::Decoder::new(std::fs::File::open(&archive)?)?;
                tar::Archive::new(decoder).unpack(&entry)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("cannot unpack s3://{}/{object}: {e}", url.bucket)))
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&archive);
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&entry);
        return Err(e);
    }
    Ok(Some((found, entry)))
}

/// Uploads a local entry directory as one tar+zstd object, streamed.
pub async fn s3_store(
    client: &aws_sdk_s3::Client,
    url: &S3Url,
    key: &str,
    entry: &Path,
) -> Result<String, String> {
    let object = url.key(&[key]);
    let entry = entry.to_path_buf();
    s3::upload_stream(
        client,
        &url.bucket,
        &object,
        &s3::PutOptions::default(),
        &s3::Progress::default(),
        move |out| {
            let encoder = zstd::stream::write::Encoder::new(out, 3)
                .map_err(|e| s3::S3Error::Zip(e.to_string()))?;
            let mut builder = tar::Builder::new(encoder);
            builder.follow_symlinks(false);
            builder
                .append_dir_all(".", &entry)
                .map_err(|e| s3::S3Error::Zip(e.to_string()))?;
            let encoder = builder
                .into_inner()
                .map_err(|e| s3::S3Error::Zip(e.to_string()))?;
            encoder
                .finish()
                .map_err(|e| s3::S3Error::Zip(e.to_string()))?;
            Ok(())
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(format!("s3://{}/{object}", url.bucket))
}

/// How a cached path is recorded: paths inside the source relative to it, since the
/// source sits at another place in each build (`/codebuild/output/src<N>/src`).
pub fn to_manifest(path: &str, src_dir: &str) -> String {
    match path.strip_prefix(src_dir).and_then(|r| r.strip_prefix('/')) {
        Some(relative) => format!("$SRC/{relative}"),
        None => path.to_string(),
    }
}

/// The path a manifest line stands for in this build.
pub fn from_manifest(stored: &str, src_dir: &str) -> String {
    match stored.strip_prefix("$SRC/") {
        Some(relative) => format!("{}/{relative}", src_dir.trim_end_matches('/')),
        None => stored.to_string(),
    }
}

/// `codebuild-hash-files GLOB…`: a SHA-256 over the files of the source matching the
/// globs, their paths and contents, in path order.
pub fn hash_files(source_root: &Path, globs: &[&str]) -> String {
    let mut set = globset::GlobSetBuilder::new();
    for glob in globs {
        if let Ok(g) = globset::GlobBuilder::new(glob.trim_start_matches("./"))
            .literal_separator(true)
            .build()
        {
            set.add(g);
        }
    }
    let Ok(set) = set.build() else {
        return hex(&Sha256::digest(b""));
    };
    let mut files: Vec<(String, PathBuf)> = walkdir::WalkDir::new(source_root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git" && e.file_name() != ".agent")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = e
                .path()
                .strip_prefix(source_root)
                .ok()?
                .to_string_lossy()
                .replace('\\', "/");
            set.is_match(&rel).then(|| (rel, e.path().to_path_buf()))
        })
        .collect();
    files.sort();
    let mut hasher = Sha256::new();
    for (rel, path) in files {
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        if let Ok(bytes) = std::fs::read(&path) {
            hasher.update(Sha256::digest(&bytes));
        }
    }
    hex(&hasher.finalize())
}

/// Replaces `$(codebuild-hash-files …)` in a key with the hash, as CodeBuild's helper
/// would print it, before the key is expanded in the build shell.
pub fn expand_hash_files(key: &str, source_root: &Path) -> String {
    const CALL: &str = "$(codebuild-hash-files";
    let mut out = String::new();
    let mut rest = key;
    while let Some(start) = rest.find(CALL) {
        let Some(end) = rest[start..].find(')') else {
            break;
        };
        out.push_str(&rest[..start]);
        let args: Vec<&str> = rest[start + CALL.len()..start + end]
            .split_whitespace()
            .collect();
        out.push_str(&hash_files(source_root, &args));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_name_directories() {
        let src = "/codebuild/output/src1/src";
        assert_eq!(
            cache_root("/root/.m2/**/*", src).as_deref(),
            Some("/root/.m2")
        );
        assert_eq!(cache_root("/root/.m2/*", src).as_deref(), Some("/root/.m2"));
        assert_eq!(cache_root("/root/.m2", src).as_deref(), Some("/root/.m2"));
        assert_eq!(
            cache_root("node_modules/**/*", src).as_deref(),
            Some("/codebuild/output/src1/src/node_modules")
        );
        assert_eq!(
            cache_root("./.venv", src).as_deref(),
            Some("/codebuild/output/src1/src/.venv")
        );
        assert_eq!(cache_root("/**/*", src), None);
        assert_eq!(cache_root("../x", src), None);
    }

    #[test]
    fn manifest_paths_follow_the_source() {
        let stored = to_manifest(
            "/codebuild/output/src1/src/node_modules",
            "/codebuild/output/src1/src",
        );
        assert_eq!(stored, "$SRC/node_modules");
        assert_eq!(
            from_manifest(&stored, "/codebuild/output/src2/src"),
            "/codebuild/output/src2/src/node_modules"
        );
        assert_eq!(
            to_manifest("/root/.m2", "/codebuild/output/src1/src"),
            "/root/.m2"
        );
        assert_eq!(from_manifest("/root/.m2", "/x"), "/root/.m2");
    }

    #[test]
    fn keys_fall_back_to_the_newest_prefix_match() {
        let dir = tempfile::tempdir().unwrap();
        for (key, delay) in [("npm-aaa", 0), ("npm-bbb", 20), ("pip-ccc", 40)] {
            std::thread::sleep(std::time::Duration::from_millis(delay));
            let entry = entry_dir(dir.path(), key);
            std::fs::create_dir_all(&entry).unwrap();
            std::fs::write(entry.join("key"), key).unwrap();
            std::fs::write(entry.join("paths"), "").unwrap();
        }
        assert_eq!(find(dir.path(), "npm-aaa", &[]).unwrap().0, "npm-aaa");
        assert_eq!(
            find(dir.path(), "npm-zzz", &["npm-".into()]).unwrap().0,
            "npm-bbb"
        );
        assert_eq!(
            find(dir.path(), "x", &["go-".into(), "pip".into()])
                .unwrap()
                .0,
            "pip-ccc"
        );
        assert!(find(dir.path(), "x", &["go-".into()]).is_none());
    }

    #[test]
    fn hash_files_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package-lock.json"), "{}").unwrap();
        let first = expand_hash_files(
            "npm-$(codebuild-hash-files package-lock.json)-x",
            dir.path(),
        );
        assert!(
            first.starts_with("npm-") && first.ends_with("-x") && first.len() == 4 + 64 + 2,
            "{first}"
        );
        std::fs::write(dir.path().join("package-lock.json"), "{\"a\":1}").unwrap();
        let second = expand_hash_files(
            "npm-$(codebuild-hash-files package-lock.json)-x",
            dir.path(),
        );
        assert_ne!(first, second);
    }
}
