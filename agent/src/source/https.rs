//! A source from an `https://` URL: a zip or tarball, downloaded to a file beside the
//! destination (never held whole in memory), checked against the job's SHA-256 when it names
//! one, and unpacked with the same rules as every other archive from outside.
//!
//! The URL rules here (https, or plain http to this machine only; never a query string in a
//! log or an error) are shared with the webhooks, which post to URLs from the same places.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::unpack::{self, ArchiveKind, UnpackError};

/// How much a download may cost before it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Bytes of the archive as sent; checked against `Content-Length` first, then counted.
    pub max_bytes: u64,
    /// The whole download, from connecting to the last byte.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Silence on the connection this long ends the download even if the total time is left.
    pub read_timeout: Duration,
    pub max_redirects: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_bytes: 5 * 1024 * 1024 * 1024,
            timeout: Duration::from_secs(30 * 60),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            max_redirects: 5,
        }
    }
}

/// What [`fetch`] downloaded and unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where the archive came from after redirects, without its query string.
    pub url: String,
    pub bytes: u64,
    /// The archive's SHA-256, lowercase hex, whether or not the job named one.
    pub sha256: String,
    pub kind: ArchiveKind,
    /// Regular files written, hard links included.
    pub files: usize,
}

/// A URL that may not be used. Its text never includes the query string or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{0}` is not a URL like `https://host/path`")]
    Invalid(String),
    #[error("`{0}` must start with `https://` (plain `http://` only to this machine)")]
    Scheme(String),
    #[error("`{0}` uses plain http to another machine; use https")]
    PlainHttp(String),
    #[error("`{0}` carries credentials in the URL; the agent does not send them")]
    Credentials(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("the sha256 `{0}` is not 64 hexadecimal digits; fix it in the job's source")]
    BadDigest(String),
    #[error("{url}: not found (HTTP 404); check the URL in the job's source")]
    NotFound { url: String },
    #[error(
        "{url}: HTTP {status}: the archive needs credentials the agent does not send; make it readable without them (a presigned URL, or a public release asset) or use an s3 source"
    )]
    NeedsCredentials { url: String, status: u16 },
    #[error("{url}: the server answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error(
        "{url}: not a zip or tarball: the server sent {content_type}; the URL must point at the archive itself, not a page about it"
    )]
    NotAnArchive { url: String, content_type: String },
    #[error(
        "{url}: the download's SHA-256 is {actual} but the job expects {expected}; nothing was unpacked (fix the job's sha256, or the URL if the archive is the wrong one)"
    )]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: the archive is larger than the {limit} bytes a source may be")]
    TooLarge { url: String, limit: u64 },
    #[error(
        "{url}: the download timed out (it may take {}s in all and {}s without data); is the server slow, or the archive too big?",
        .total.as_secs(),
        .idle.as_secs()
    )]
    Timeout {
        url: String,
        total: Duration,
        idle: Duration,
    },
    #[error("{url}: {reason}")]
    Redirect { url: String, reason: String },
    #[error("{url}: cannot download: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: {source}")]
    Unpack {
        url: String,
        #[source]
        source: UnpackError,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HttpsError {
    /// Worth another try: the connection failed or broke, the server timed out or answered
    /// 408, 429 or 5xx. Not: a wrong URL, a missing or forbidden archive, a bad checksum.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpsError::Transport { .. } | HttpsError::Timeout { .. } => true,
            HttpsError::Status { status, .. } => {
                matches!(status, 408 | 429) || (500..600).contains(status)
            }
            _ => false,
        }
    }
}

/// Checks a URL from a job or the config: `https://`, or `http://` to this machine, and no
/// credentials (they would end up in logs and in every redirect's request).
pub fn check_url(text: &str) -> Result<Url, UrlError> {
    let url = Url::parse(text).map_err(|_| UrlError::Invalid(redacted_text(text)))?;
    let shown = redacted(&url);
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials(shown));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(UrlError::PlainHttp(shown)),
        _ => Err(UrlError::Scheme(shown)),
    }
}

/// `scheme://host[:port]/path`: what a log or an error may show of a URL, since query strings
/// (presigned URLs, webhook tokens) and user info are credentials.
pub fn redacted(url: &Url) -> String {
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        let _ = write!(out, ":{port}");
    }
    out.push_str(url.path());
    out
}

/// [`redacted`] for text that does not even parse as a URL.
pub fn redacted_text(text: &str) -> String {
    let cut = text.find(['?', '#']).unwrap_or(text.len());
    let text = text.get(..cut).unwrap_or(text);
    // User info sits between `://` and the first `@` of the authority.
    match text.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => text.to_string(),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    // IPv6 hosts come bracketed; both families parse the same way once the brackets are off.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Downloads the archive at `url`, checks it against `sha256` when given, and unpacks it into
/// `dest` (created). The download goes to a temporary file in `dest`'s parent, removed
/// whatever happens. A single top-level directory (GitHub's archives) is kept as it is.
pub async fn fetch(
    url: &str,
    sha256: Option<&str>,
    dest: &Path,
    limits: &FetchLimits,
) -> Result<Fetched, HttpsError> {
    let url = check_url(url)?;
    let shown = redacted(&url);
    let expected = sha256.map(expected_digest).transpose()?;
    let client = client(limits).map_err(|e| HttpsError::Transport {
        url: shown.clone(),
        message: describe(e),
    })?;

    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HttpsError::Io { path, source }
    };
    std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
    // Beside the destination rather than in /tmp: an archive of gigabytes belongs on the
    // workspace's disk, and removing the workspace takes anything left behind with it.
    let part = tempfile::Builder::new()
        .prefix(".download-")
        .suffix(".part")
        .tempfile_in(&parent)
        .map_err(io_error(&parent))?;

    tracing::info!(url = %shown, "downloading the source");
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| transport(&shown, limits, e))?;
    let final_url = redacted(response.url());
    check_status(&shown, response.status())?;
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if response
        .content_length()
        .is_some_and(|len| len > limits.max_bytes)
    {
        return Err(HttpsError::TooLarge {
            url: shown,
            limit: limits.max_bytes,
        });
    }

    let file = part.as_file().try_clone().map_err(io_error(part.path()))?;
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(file));
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| transport(&shown, limits, e))?;
        bytes = bytes.saturating_add(chunk.len() as u64);
        // Counted as it arrives: `Content-Length` may be absent or wrong.
        if bytes > limits.max_bytes {
            return Err(HttpsError::TooLarge {
                url: shown,
                limit: limits.max_bytes,
            });
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(io_error(part.path()))?;
    }
    out.flush().await.map_err(io_error(part.path()))?;
    drop(out);
    let actual = hex(&hasher.finalize());

    // The format first: a login page fails a digest too, but "the server sent text/html"
    // says what went wrong.
    let kind = match unpack::detect(part.path()) {
        Ok(kind) => kind,
        Err(UnpackError::UnknownFormat(_)) => {
            return Err(HttpsError::NotAnArchive {
                url: shown,
                content_type: content_type
                    .map_or_else(|| "no Content-Type".to_string(), |t| describe_type(&t)),
            });
        }
        Err(source) => return Err(HttpsError::Unpack { url: shown, source }),
    };
    if let Some(expected) = expected
        && expected != actual
    {
        return Err(HttpsError::DigestMismatch {
            url: shown,
            expected,
            actual,
        });
    }

    let (archive, target) = (part.path().to_path_buf(), dest.to_path_buf());
    let unpacked = tokio::task::spawn_blocking(move || unpack::unpack(&archive, &target))
        .await
        .map_err(|e| HttpsError::Io {
            path: dest.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|source| HttpsError::Unpack {
            url: shown.clone(),
            source,
        })?;
    drop(part);
    tracing::info!(
        url = %shown,
        final_url = %final_url,
        bytes,
        sha256 = %actual,
        %kind,
        files = unpacked.files,
        "source downloaded and unpacked"
    );
    Ok(Fetched {
        url: final_url,
        bytes,
        sha256: actual,
        kind,
        files: unpacked.files,
    })
}

fn client(limits: &FetchLimits) -> Result<reqwest::Client, reqwest::Error> {
    let max = limits.max_redirects;
    reqwest::Client::builder()
        .user_agent(concat!("agent/", env!("CARGO_PKG_VERSION")))
        .timeout(limits.timeout)
        .connect_timeout(limits.connect_timeout)
        .read_timeout(limits.read_timeout)
        .redirect(reqwest::redirect::Policy::custom(
            move |attempt| match redirect_refusal(attempt.url(), attempt.previous(), max) {
                Some(reason) => attempt.error(RedirectRefused(reason)),
                None => attempt.follow(),
            },
        ))
        .build()
}

/// Why a redirect to `next` is not followed, if it is not: one too many, or one that would
/// take the download off https (where a network in between could swap the archive).
fn redirect_refusal(next: &Url, previous: &[Url], max: usize) -> Option<String> {
    // `previous` starts with the URL the job named, which is no redirect.
    if previous.len() > max {
        return Some(format!(
            "more than {max} redirects; refusing to follow more"
        ));
    }
    let from_https = previous.iter().any(|u| u.scheme() == "https");
    if next.scheme() == "http" && from_https {
        return Some(format!(
            "redirected from https to plain http ({}); refusing",
            redacted(next)
        ));
    }
    match check_url(next.as_str()) {
        Ok(_) => None,
        Err(e) => Some(format!("redirected to a URL the agent may not use: {e}")),
    }
}

#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

fn check_status(url: &str, status: reqwest::StatusCode) -> Result<(), HttpsError> {
    let url = url.to_string();
    match status.as_u16() {
        200..=299 => Ok(()),
        404 | 410 => Err(HttpsError::NotFound { url }),
        401 | 403 => Err(HttpsError::NeedsCredentials {
            url,
            status: status.as_u16(),
        }),
        status => Err(HttpsError::Status { url, status }),
    }
}

fn transport(url: &str, limits: &FetchLimits, error: reqwest::Error) -> HttpsError {
    let url = url.to_string();
    if error.is_timeout() {
        return HttpsError::Timeout {
            url,
            total: limits.timeout,
            idle: limits.read_timeout,
        };
    }
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RedirectRefused>() {
            return HttpsError::Redirect {
                url,
                reason: refused.0.clone(),
            };
        }
        source = e.source();
    }
    HttpsError::Transport {
        url,
        message: describe(error),
    }
}

/// An error's chain in one line, without the URL reqwest would put in it.
pub(crate) fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

fn describe_type(content_type: &str) -> String {
    // `text/html; charset=utf-8` reads better as `text/html`.
    let bare = content_type
        .split(';')
        .next()
        .unwrap_or(content_type)
        .trim();
    if bare.is_empty() {
        "no Content-Type".to_string()
    } else {
        bare.to_string()
    }
}

fn expected_digest(text: &str) -> Result<String, HttpsError> {
    let digest = text.trim().to_ascii_lowercase();
    if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(digest)
    } else {
        Err(HttpsError::BadDigest(text.to_string()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::io::Write as _;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
    use hyper::body::{Frame, Incoming};
    use hyper::{Request, Response};

    type Body = BoxBody<Bytes, Infallible>;

    /// What one path of the test server answers.
    #[derive(Clone)]
    enum Route {
        Ok(&'static str, Vec<u8>),
        Status(u16),
        Redirect(String),
        /// A body sent in chunks with no `Content-Length`.
        Chunked(usize, usize),
        /// A `Content-Length` over the cap, and no body.
        Claims(u64),
        /// Headers, then silence.
        Stall,
    }

    struct Server {
        base: String,
        _task: tokio::task::JoinHandle<()>,
    }

    async fn serve(routes: Vec<(&str, Route)>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<HashMap<String, Route>> = Arc::new(
            routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), r))
                .collect(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let routes = routes.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let route = routes.get(request.uri().path()).cloned();
                        async move { Ok::<_, Infallible>(answer(route)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server { base, _task: task }
    }

    fn full(body: impl Into<Bytes>) -> Body {
        Full::new(body.into()).boxed()
    }

    fn answer(route: Option<Route>) -> Response<Body> {
        let builder = Response::builder();
        match route {
            None => builder.status(404).body(full("no such route")),
            Some(Route::Ok(content_type, body)) => builder
                .header("content-type", content_type)
                .body(full(body)),
            Some(Route::Status(status)) => builder.status(status).body(full("nope")),
            Some(Route::Redirect(to)) => builder.status(302).header("location", to).body(full("")),
            Some(Route::Chunked(chunks, size)) => {
                let frames = futures_util::stream::iter(
                    (0..chunks).map(move |_| Ok(Frame::data(Bytes::from(vec![0u8; size])))),
                );
                builder.body(BodyExt::boxed(StreamBody::new(frames)))
            }
            // The body never comes: the client must refuse on the header alone.
            Some(Route::Claims(len)) => builder
                .header("content-length", len.to_string())
                .body(silence()),
            Some(Route::Stall) => builder.body(silence()),
        }
        .unwrap()
    }

    fn silence() -> Body {
        let frames = futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>();
        BodyExt::boxed(StreamBody::new(frames))
    }

    fn tgz() -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        tar.append_data(&mut header, "repo-main/README", &b"hello"[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap()
    }

    fn zip() -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("app/main.py", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"print(1)").unwrap();
        zip.finish().unwrap().into_inner()
    }

    fn hostile_tar() -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        let name = b"../x";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_size(1);
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar = tar::Builder::new(Vec::new());
        tar.append(&header, &b"x"[..]).unwrap();
        tar.into_inner().unwrap()
    }

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// A workspace whose `src` is the destination, as the daemon lays it out.
    fn workspace() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("src");
        (root, dest)
    }

    fn leftovers(root: &Path) -> Vec<String> {
        std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "src")
            .collect()
    }

    #[tokio::test]
    async fn fetches_and_unpacks_a_tgz_and_a_zip_with_digests() {
        let (tgz, zip) = (tgz(), zip());
        let server = serve(vec![
            ("/a.tgz", Route::Ok("application/gzip", tgz.clone())),
            ("/a.zip", Route::Ok("application/zip", zip.clone())),
        ])
        .await;

        let (root, dest) = workspace();
        let url = format!("{}/a.tgz?X-Amz-Signature=secret", server.base);
        let fetched = fetch(&url, Some(&sha(&tgz)), &dest, &FetchLimits::default())
            .await
            .unwrap();
        assert_eq!(fetched.kind, ArchiveKind::Tgz);
        assert_eq!(fetched.files, 1);
        assert_eq!(fetched.bytes, tgz.len() as u64);
        assert_eq!(fetched.sha256, sha(&tgz));
        assert_eq!(fetched.url, format!("{}/a.tgz", server.base));
        // The single top directory stays: stripping it is the caller's choice.
        assert_eq!(
            std::fs::read_to_string(dest.join("repo-main/README")).unwrap(),
            "hello"
        );
        assert!(leftovers(root.path()).is_empty());

        let (root, dest) = workspace();
        let upper = sha(&zip).to_ascii_uppercase();
        let url = format!("{}/a.zip", server.base);
        let fetched = fetch(&url, Some(&upper), &dest, &FetchLimits::default())
            .await
            .unwrap();
        assert_eq!(fetched.kind, ArchiveKind::Zip);
        assert_eq!(
            std::fs::read_to_string(dest.join("app/main.py")).unwrap(),
            "print(1)"
        );
        assert!(leftovers(root.path()).is_empty());

        let (_root, dest) = workspace();
        let fetched = fetch(&url, None, &dest, &FetchLimits::default())
            .await
            .unwrap();
        assert_eq!(fetched.sha256, sha(&zip));
    }

    #[tokio::test]
    async fn a_digest_mismatch_names_both_and_unpacks_nothing() {
        let tgz = tgz();
        let server = serve(vec![("/a.tgz", Route::Ok("application/gzip", tgz.clone()))]).await;
        let (root, dest) = workspace();
        let wrong = "0".repeat(64);
        let url = format!("{}/a.tgz?token=secret", server.base);
        let error = fetch(&url, Some(&wrong), &dest, &FetchLimits::default())
            .await
            .unwrap_err();
        assert!(
            matches!(error, HttpsError::DigestMismatch { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(&wrong), "{message}");
        assert!(message.contains(&sha(&tgz)), "{message}");
        assert!(message.contains("nothing was unpacked"), "{message}");
        assert!(!message.contains("secret"), "{message}");
        assert!(!dest.exists());
        assert!(leftovers(root.path()).is_empty());

        let error = fetch(&url, Some("abc"), &dest, &FetchLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(error, HttpsError::BadDigest(_)), "{error:?}");
    }

    #[tokio::test]
    async fn http_errors_say_what_to_fix() {
        let server = serve(vec![
            ("/private", Route::Status(403)),
            ("/login", Route::Status(401)),
            ("/broken", Route::Status(500)),
            (
                "/page",
                Route::Ok("text/html; charset=utf-8", b"<!doctype html><p>hi".to_vec()),
            ),
            (
                "/noise",
                Route::Ok("", b"just some text, long enough".to_vec()),
            ),
        ])
        .await;
        let (root, dest) = workspace();
        let get = |path: &str| {
            let url = format!("{}{path}?sig=secret", server.base);
            let dest = dest.clone();
            async move { fetch(&url, None, &dest, &FetchLimits::default()).await }
        };

        let error = get("/missing.tgz").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}/missing.tgz: not found (HTTP 404); check the URL in the job's source",
                server.base
            )
        );
        for path in ["/private", "/login"] {
            let error = get(path).await.unwrap_err();
            assert!(
                matches!(error, HttpsError::NeedsCredentials { .. }),
                "{error:?}"
            );
            assert!(
                error
                    .to_string()
                    .contains("needs credentials the agent does not send"),
                "{error}"
            );
        }
        let error = get("/broken").await.unwrap_err();
        assert!(
            error.to_string().ends_with("the server answered HTTP 500"),
            "{error}"
        );

        let error = get("/page").await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("not a zip or tarball: the server sent text/html;"),
            "{error}"
        );
        let error = get("/noise").await.unwrap_err();
        assert!(
            matches!(error, HttpsError::NotAnArchive { .. }),
            "{error:?}"
        );
        assert!(!dest.exists());
        assert!(leftovers(root.path()).is_empty());
    }

    #[tokio::test]
    async fn follows_up_to_five_redirects() {
        let tgz = tgz();
        let mut routes = vec![("/a.tgz", Route::Ok("application/gzip", tgz))];
        let hops = ["/r1", "/r2", "/r3", "/r4", "/r5", "/r6"];
        for pair in hops.windows(2) {
            routes.push((pair[0], Route::Redirect(pair[1].to_string())));
        }
        routes.push(("/r6", Route::Redirect("/a.tgz".into())));
        routes.push((
            "/away",
            Route::Redirect("http://example.com/a.tgz".to_string()),
        ));
        let server = serve(routes).await;

        let (_root, dest) = workspace();
        let url = format!("{}/r2", server.base);
        let fetched = fetch(&url, None, &dest, &FetchLimits::default())
            .await
            .unwrap();
        assert_eq!(fetched.url, format!("{}/a.tgz", server.base));
        assert!(dest.join("repo-main/README").exists());

        let (_root, dest) = workspace();
        let url = format!("{}/r1", server.base);
        let error = fetch(&url, None, &dest, &FetchLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(error, HttpsError::Redirect { .. }), "{error:?}");
        assert!(
            error.to_string().contains("more than 5 redirects"),
            "{error}"
        );

        let url = format!("{}/away", server.base);
        let error = fetch(&url, None, &dest, &FetchLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(error, HttpsError::Redirect { .. }), "{error:?}");
        assert!(
            error.to_string().contains("plain http to another machine"),
            "{error}"
        );
    }

    #[test]
    fn never_redirects_from_https_to_http() {
        let url = |s: &str| Url::parse(s).unwrap();
        let start = [url("https://example.com/a.tgz")];
        let reason =
            redirect_refusal(&url("http://127.0.0.1/a.tgz?sig=secret"), &start, 5).unwrap();
        assert!(reason.contains("from https to plain http"), "{reason}");
        assert!(!reason.contains("secret"), "{reason}");
        assert_eq!(
            redirect_refusal(&url("https://cdn.example.com/a.tgz"), &start, 5),
            None
        );
        let local = [url("http://127.0.0.1:1/a")];
        assert_eq!(
            redirect_refusal(&url("https://example.com/a"), &local, 5),
            None
        );
        assert!(redirect_refusal(&url("ftp://example.com/a"), &local, 5).is_some());
    }

    #[tokio::test]
    async fn refuses_more_than_the_cap() {
        let server = serve(vec![
            ("/streamed", Route::Chunked(64, 1024)),
            ("/claims", Route::Claims(1 << 40)),
        ])
        .await;
        let limits = FetchLimits {
            max_bytes: 10_000,
            ..FetchLimits::default()
        };
        for path in ["/streamed", "/claims"] {
            let (root, dest) = workspace();
            let url = format!("{}{path}", server.base);
            let error = fetch(&url, None, &dest, &limits).await.unwrap_err();
            assert!(
                matches!(error, HttpsError::TooLarge { limit: 10_000, .. }),
                "{path}: {error:?}"
            );
            assert!(!dest.exists());
            assert!(leftovers(root.path()).is_empty(), "{path}");
        }
    }

    #[tokio::test]
    async fn a_stalled_download_times_out() {
        let server = serve(vec![("/stall", Route::Stall)]).await;
        let limits = FetchLimits {
            timeout: Duration::from_millis(300),
            ..FetchLimits::default()
        };
        let (_root, dest) = workspace();
        let url = format!("{}/stall", server.base);
        let error = fetch(&url, None, &dest, &limits).await.unwrap_err();
        assert!(matches!(error, HttpsError::Timeout { .. }), "{error:?}");
        assert!(error.to_string().contains("timed out"), "{error}");
    }

    #[tokio::test]
    async fn refuses_a_hostile_archive() {
        let evil = hostile_tar();
        let server = serve(vec![(
            "/evil.tar",
            Route::Ok("application/x-tar", evil.clone()),
        )])
        .await;
        let (root, dest) = workspace();
        let url = format!("{}/evil.tar", server.base);
        let error = fetch(&url, Some(&sha(&evil)), &dest, &FetchLimits::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                HttpsError::Unpack {
                    source: UnpackError::Escapes(_),
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("refusing the archive"),
            "{error}"
        );
        assert!(!root.path().join("x").exists());
        assert!(leftovers(root.path()).is_empty());
    }

    #[tokio::test]
    async fn unreachable_servers_are_named_without_the_query() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let (_root, dest) = workspace();
        let url = format!("http://127.0.0.1:{port}/a.tgz?token=secret");
        let error = fetch(&url, None, &dest, &FetchLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(error, HttpsError::Transport { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("http://127.0.0.1:{port}/a.tgz: cannot download")),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn url_rules() {
        assert!(check_url("https://example.com/a.tgz").is_ok());
        assert!(check_url("http://127.0.0.1:8080/a.tgz").is_ok());
        assert!(check_url("http://127.1.2.3/a.tgz").is_ok());
        assert!(check_url("http://localhost/a.tgz").is_ok());
        assert!(check_url("http://[::1]:99/a.tgz").is_ok());
        assert_eq!(
            check_url("http://example.com/a.tgz?sig=secret").unwrap_err(),
            UrlError::PlainHttp("http://example.com/a.tgz".into())
        );
        assert_eq!(
            check_url("http://10.0.0.1/a").unwrap_err(),
            UrlError::PlainHttp("http://10.0.0.1/a".into())
        );
        assert_eq!(
            check_url("ftp://example.com/a").unwrap_err(),
            UrlError::Scheme("ftp://example.com/a".into())
        );
        assert_eq!(
            check_url("https://user:pw@example.com/a?x=1").unwrap_err(),
            UrlError::Credentials("https://example.com/a".into())
        );
        assert_eq!(
            check_url("not a url?token=secret").unwrap_err(),
            UrlError::Invalid("not a url".into())
        );
    }

    #[test]
    fn redaction_keeps_scheme_host_port_and_path_only() {
        let url = Url::parse("https://u:p@example.com:8443/hooks/a?token=secret#frag").unwrap();
        assert_eq!(redacted(&url), "https://example.com:8443/hooks/a");
        let url = Url::parse("http://[::1]/x?y").unwrap();
        assert_eq!(redacted(&url), "http://[::1]/x");
        assert_eq!(
            redacted_text("https://u:p@ex ample.com/a?token=secret"),
            "https://ex ample.com/a"
        );
        assert_eq!(redacted_text("garbage#x"), "garbage");
    }
}
