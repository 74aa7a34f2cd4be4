//! DownloadBundle: the revision copied or unpacked into the deployment's
//! `deployment-archive`, whatever it came as (a directory, a zip, a tar, a tgz, an S3
//! object), with nothing written outside it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;

use crate::aws::s3::S3Url;
use crate::source::unpack;

/// Where a revision comes from.
#[derive(Debug, Clone)]
pub enum Bundle {
    /// A directory, or a zip/tar/tgz file.
    Local(PathBuf),
    S3 {
        url: S3Url,
        version: Option<String>,
    },
}

impl Bundle {
    /// `s3://bucket/key` (with an optional `?versionId=…`) or a local path.
    pub fn parse(text: &str) -> Result<Bundle, String> {
        if !text.starts_with("s3://") {
            return Ok(Bundle::Local(PathBuf::from(text)));
        }
        let (location, version) = match text.split_once("?versionId=") {
            Some((l, v)) if !v.is_empty() => (l, Some(v.to_string())),
            Some(_) => return Err(format!("`{text}`: `versionId=` needs a value")),
            None => (text, None),
        };
        let url = S3Url::parse(location)?;
        if url.prefix.is_empty() || url.prefix.ends_with('/') {
            return Err(format!("`{text}` names no object; give the bundle's key"));
        }
        Ok(Bundle::S3 { url, version })
    }

    pub fn describe(&self) -> String {
        match self {
            Bundle::Local(path) => path.display().to_string(),
            Bundle::S3 { url, version } => {
                let base = format!("s3://{}/{}", url.bucket, url.prefix);
                match version {
                    Some(v) => format!("{base}?versionId={v}"),
                    None => base,
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle is not there or not usable: the user's to fix.
    #[error("{0}")]
    Input(String),
    /// The agent could not fetch or store it.
    #[error("{0}")]
    Fetch(String),
}

/// What DownloadBundle produced.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub files: usize,
    /// `BUNDLE_BUCKET`, `BUNDLE_KEY`, `BUNDLE_VERSION`, `BUNDLE_ETAG` for S3 revisions.
    pub env: Vec<(String, String)>,
}

pub const ARCHIVE_DIR: &str = "deployment-archive";
/// CodeDeploy names the fetched file so whatever its format.
pub const BUNDLE_FILE: &str = "bundle.tar";

/// Fetches `bundle` into `deployment_dir/deployment-archive`; an archive whose only entry
/// is a directory holding the appspec is unpacked from inside that directory.
pub async fn fetch(
    bundle: &Bundle,
    s3: Option<&Client>,
    deployment_dir: &Path,
    appspec_names: &[String],
) -> Result<Fetched, BundleError> {
    let archive_dir = deployment_dir.join(ARCHIVE_DIR);
    let bundle_file = deployment_dir.join(BUNDLE_FILE);
    let mut fetched = Fetched::default();
    match bundle {
        Bundle::Local(path) => {
            let meta = fs::metadata(path).map_err(|e| {
                BundleError::Input(format!("the bundle {} cannot be read: {e}", path.display()))
            })?;
            let (from, to, file) = (path.clone(), archive_dir.clone(), bundle_file.clone());
            fetched.files = blocking(move || {
                if meta.is_dir() {
                    copy_tree(&from, &to).map_err(|e| match e {
                        TreeError::Refused(why) => {
                            BundleError::Input(format!("the bundle {}: {why}", from.display()))
                        }
                        TreeError::Io(e) => BundleError::Fetch(format!(
                            "cannot copy the bundle {}: {e}",
                            from.display()
                        )),
                    })
                } else {
                    fs::copy(&from, &file).map_err(|e| {
                        BundleError::Fetch(format!(
                            "cannot copy the bundle {}: {e}",
                            from.display()
                        ))
                    })?;
                    unpack_file(&file, &to, &from.display().to_string())
                }
            })
            .await?;
        }
        Bundle::S3 { url, version } => {
            let client = s3.ok_or_else(|| {
                BundleError::Fetch("an S3 bundle needs AWS credentials and a region".into())
            })?;
            fetched.env = download(client, url, version.as_deref(), &bundle_file).await?;
            let (file, to, name) = (bundle_file.clone(), archive_dir.clone(), bundle.describe());
            fetched.files = blocking(move || unpack_file(&file, &to, &name)).await?;
        }
    }
    let names = appspec_names.to_vec();
    let dir = archive_dir.clone();
    blocking(move || {
        strip_single_top_dir(&dir, &names).map_err(|e| BundleError::Fetch(e.to_string()))
    })
    .await?;
    Ok(fetched)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BundleError> + Send + 'static,
) -> Result<T, BundleError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BundleError::Fetch(e.to_string()))?
}

fn unpack_file(file: &Path, dest: &Path, name: &str) -> Result<usize, BundleError> {
    unpack::unpack(file, dest)
        .map(|u| u.files)
        .map_err(|e| match e {
            unpack::UnpackError::Io(io) => {
                BundleError::Fetch(format!("cannot unpack {name}: {io}"))
            }
            other => BundleError::Input(format!("the bundle {name}: {other}")),
        })
}

async fn download(
    client: &Client,
    url: &S3Url,
    version: Option<&str>,
    dest: &Path,
) -> Result<Vec<(String, String)>, BundleError> {
    use tokio::io::AsyncWriteExt;
    let name = format!("s3://{}/{}", url.bucket, url.prefix);
    let object = client
        .get_object()
        .bucket(&url.bucket)
        .key(&url.prefix)
        .set_version_id(version.map(str::to_string))
        .send()
        .await
        .map_err(|e| {
            let text = crate::aws::error_text(&e);
            if text.contains("NoSuchKey")
                || text.contains("NoSuchBucket")
                || text.contains("NoSuchVersion")
            {
                BundleError::Input(format!("the bundle {name} does not exist: {text}"))
            } else {
                BundleError::Fetch(format!("cannot download the bundle {name}: {text}"))
            }
        })?;
    let mut env = vec![
        ("BUNDLE_BUCKET".to_string(), url.bucket.clone()),
        ("BUNDLE_KEY".to_string(), url.prefix.clone()),
    ];
    if let Some(v) = object.version_id().filter(|v| *v != "null") {
        env.push(("BUNDLE_VERSION".to_string(), v.to_string()));
    }
    if let Some(etag) = object.e_tag() {
        env.push((
            "BUNDLE_ETAG".to_string(),
            etag.trim_matches('"').to_string(),
        ));
    }
    let expected = object.content_length();
    let fail = |e: io::Error| BundleError::Fetch(format!("cannot store the bundle {name}: {e}"));
    let mut file = tokio::fs::File::create(dest).await.map_err(fail)?;
    let mut body = object.body;
    let mut written = 0i64;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| BundleError::Fetch(format!("downloading {name}: {e}")))?
    {
        file.write_all(&chunk).await.map_err(fail)?;
        written += i64::try_from(chunk.len()).unwrap_or(i64::MAX);
    }
    file.sync_all().await.map_err(fail)?;
    if expected.is_some_and(|n| n != written) {
        return Err(BundleError::Fetch(format!(
            "the bundle {name} arrived incomplete ({written} of {} bytes)",
            expected.unwrap_or_default()
        )));
    }
    Ok(env)
}

/// Copies a directory bundle: links stay links, modes and times are kept, and anything
/// that is not a file, directory or link is refused.
/// Why a directory bundle was not copied: refused by the rule every bundle form follows, or
/// an I/O failure.
#[derive(Debug)]
enum TreeError {
    Refused(String),
    Io(io::Error),
}

impl From<io::Error> for TreeError {
    fn from(e: io::Error) -> Self {
        TreeError::Io(e)
    }
}

/// Copies a directory bundle under the rule archives are unpacked with (see
/// [`unpack`]): a symlink must point inside the bundle (relative, never above its root),
/// and only files, directories and symlinks are taken.
fn copy_tree(from: &Path, to: &Path) -> Result<usize, TreeError> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = 0;
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        let relative = entry.path().strip_prefix(from).map_err(io::Error::other)?;
        let kind = entry.file_type();
        let mut link = None;
        if kind.is_symlink() {
            let target = fs::read_link(entry.path())?;
            if !unpack::link_stays_inside(relative, &target) {
                return Err(TreeError::Refused(format!(
                    "`{}` is a symlink to `{}`, outside the bundle; refusing the bundle",
                    relative.display(),
                    target.display()
                )));
            }
            link = Some(target);
        } else if !kind.is_dir() && !kind.is_file() {
            return Err(TreeError::Refused(format!(
                "`{}` is neither a file, a directory nor a symlink; bundles may hold files, directories and links only; refusing the bundle",
                relative.display()
            )));
        }
        let target = to.join(relative);
        let meta = entry.metadata().map_err(io::Error::other)?;
        if kind.is_dir() {
            fs::create_dir_all(&target)?;
            fs::set_permissions(
                &target,
                fs::Permissions::from_mode((meta.permissions().mode() & 0o777) | 0o700),
            )?;
        } else if let Some(link) = &link {
            std::os::unix::fs::symlink(link, &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
            fs::set_permissions(
                &target,
                fs::Permissions::from_mode(meta.permissions().mode() & 0o777),
            )?;
            if let Ok(modified) = meta.modified() {
                let _ = fs::File::options()
                    .write(true)
                    .open(&target)?
                    .set_modified(modified);
            }
            files += 1;
        }
    }
    Ok(files)
}

/// GitHub tarballs and many zips wrap the revision in one directory; the CodeDeploy agent
/// unwraps it when the appspec is inside.
fn strip_single_top_dir(archive: &Path, appspec_names: &[String]) -> io::Result<()> {
    if appspec_names.iter().any(|n| archive.join(n).exists()) {
        return Ok(());
    }
    let entries: Vec<_> = fs::read_dir(archive)?.collect::<Result<_, _>>()?;
    let [only] = entries.as_slice() else {
        return Ok(());
    };
    let inner = only.path();
    let is_real_dir = fs::symlink_metadata(&inner).is_ok_and(|m| m.is_dir());
    if !is_real_dir || !appspec_names.iter().any(|n| inner.join(n).exists()) {
        return Ok(());
    }
    let parked = archive.with_extension("unwrapping");
    fs::rename(&inner, &parked)?;
    fs::remove_dir(archive)?;
    fs::rename(&parked, archive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_locations() {
        assert!(matches!(Bundle::parse("./app").unwrap(), Bundle::Local(_)));
        match Bundle::parse("s3://b/rel/app.zip?versionId=v1").unwrap() {
            Bundle::S3 { url, version } => {
                assert_eq!(
                    (url.bucket.as_str(), url.prefix.as_str()),
                    ("b", "rel/app.zip")
                );
                assert_eq!(version.as_deref(), Some("v1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Bundle::parse("s3://b/").is_err());
        assert!(Bundle::parse("s3://b/k?versionId=").is_err());
    }

    #[tokio::test]
    async fn a_wrapping_directory_is_unwrapped() {
        let base = tempfile::tempdir().unwrap();
        let src = base.path().join("src/app-1.0");
        fs::create_dir_all(src.join("scripts")).unwrap();
        fs::write(src.join("appspec.yml"), "version: 0.0\n").unwrap();
        fs::write(src.join("scripts/start.sh"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("scripts/start.sh", src.join("start")).unwrap();
        let dir = base.path().join("d-1");
        fs::create_dir(&dir).unwrap();
        let names = vec!["appspec.yml".to_string()];
        let fetched = fetch(&Bundle::Local(base.path().join("src")), None, &dir, &names)
            .await
            .unwrap();
        assert_eq!(fetched.files, 2);
        let archive = dir.join(ARCHIVE_DIR);
        assert!(archive.join("appspec.yml").exists());
        assert!(archive.join("start").is_symlink());
    }
}
