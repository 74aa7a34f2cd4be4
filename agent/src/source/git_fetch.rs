//! Fetching a job's git source with libgit2.
//!
//! Each repository gets a bare mirror under `<cache>/mirrors/`, so a job after the first
//! downloads only what is new. A checkout is then made from a copy of the mirror's objects
//! (no network) with `origin` set to the real url, so the build sees an ordinary clone.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::cert::Cert;
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode,
    FetchOptions, Oid, RemoteCallbacks, Repository, RepositoryInitOptions, SubmoduleUpdateOptions,
};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

/// Credential callbacks past this many are refused: libgit2 otherwise keeps asking after each
/// rejection, and a wrong secret would never fail fast.
const MAX_AUTH_ATTEMPTS: u32 = 3;

/// libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`: fetch the history a shallow mirror lacks.
const UNSHALLOW: i32 = i32::MAX;

/// Nested submodules deeper than this are a loop or a mistake, not a project layout.
const MAX_SUBMODULE_NESTING: usize = 8;

/// How many branch names a not-found error lists.
const KNOWN_SHOWN: usize = 10;

/// What to fetch and where from.
#[derive(Debug, Clone, Copy)]
pub struct GitRequest<'a> {
    /// `https://`, `http://`, `ssh://`, `git://`, scp-like `user@host:path`, `file://` or an
    /// absolute path. Never with a password or token in it.
    pub url: &'a str,
    /// A branch, tag, full or short commit sha, or `refs/...`; `None` is the remote's default
    /// branch.
    pub git_ref: Option<&'a str>,
    /// Shallow history of this many commits; `None` is the full history.
    pub depth: Option<u32>,
    /// Initialise and check out submodules, recursively.
    pub submodules: bool,
    pub credentials: Option<&'a GitCredentials>,
    /// The directories local repositories (`file://` URLs, the repository's own or its
    /// submodules') may be opened in, each checked against the real path so that no
    /// symlink leads out; empty: no local repository.
    pub local_roots: &'a [PathBuf],
}

/// Secrets for a repository. They are handed to libgit2 in memory only: never written to the
/// mirror, the checkout's config or a log.
#[derive(Clone)]
pub enum GitCredentials {
    /// HTTP basic auth, as forges take personal access tokens.
    Token { username: String, token: String },
    /// An ssh private key (OpenSSH or PEM text).
    SshKey {
        username: String,
        private_key: String,
        passphrase: Option<String>,
    },
}

impl GitCredentials {
    pub fn kind(&self) -> CredentialKind {
        match self {
            GitCredentials::Token { .. } => CredentialKind::Token,
            GitCredentials::SshKey { .. } => CredentialKind::SshKey,
        }
    }
}

// Debug must not print the secrets.
impl fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitCredentials::Token { username, .. } => f
                .debug_struct("Token")
                .field("username", username)
                .finish_non_exhaustive(),
            GitCredentials::SshKey {
                username,
                passphrase,
                ..
            } => f
                .debug_struct("SshKey")
                .field("username", username)
                .field("has_passphrase", &passphrase.is_some())
                .finish_non_exhaustive(),
        }
    }
}

/// Which kind of credential an authentication failure was tried with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    None,
    Token,
    SshKey,
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialKind::None => "no credentials",
            CredentialKind::Token => "token",
            CredentialKind::SshKey => "ssh key",
        })
    }
}

/// What a fetch checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Full sha of the commit checked out (detached).
    pub commit: String,
    /// The branch the commit was taken from, when the ref was a branch or the default branch.
    pub branch: Option<String>,
    /// The mirror already held objects from an earlier fetch.
    pub reused_mirror: bool,
    /// Bytes received from the remote for this job (0 when the mirror was up to date).
    pub fetched_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{}", not_found_message(url, reference, known))]
    NotFound {
        url: String,
        reference: String,
        /// Some of the remote's branch names, to spot a typo.
        known: Vec<String>,
    },
    #[error("{}", auth_message(url, *kind))]
    Auth { url: String, kind: CredentialKind },
    #[error("fetching from {url} failed: {message}")]
    Network { url: String, message: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The request itself cannot be carried out as given.
    #[error("{0}")]
    Invalid(String),
    #[error("git: {0}")]
    Git(String),
}

impl GitError {
    /// Worth another try: the network failed, or the server answered an error of its own.
    /// Not: a missing ref or repository, refused credentials, an untrusted certificate or
    /// host key, a request that cannot be carried out.
    pub fn is_transient(&self) -> bool {
        let GitError::Network { message, .. } = self else {
            return false;
        };
        let lasting = [
            "status code: 401",
            "status code: 403",
            "status code: 404",
            "certificate",
            "host key",
        ];
        !lasting.iter().any(|m| message.contains(m))
    }
}

fn not_found_message(url: &str, reference: &str, known: &[String]) -> String {
    let mut text = format!("`{reference}` is not a branch, tag or commit of {url}");
    if known.is_empty() {
        text.push_str("; it has no branches");
    } else {
        text.push_str("; its branches include ");
        text.push_str(&known.join(", "));
    }
    text
}

fn auth_message(url: &str, kind: CredentialKind) -> String {
    match kind {
        CredentialKind::None => format!(
            "{url} asks for authentication and the job has no git credentials; \
             give the job a token or ssh key in its credentials secret"
        ),
        kind => format!("{url} refused the job's {kind}"),
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> GitError {
    let path = path.to_path_buf();
    move |source| GitError::Io {
        action,
        path,
        source,
    }
}

/// Fetches `request` into the mirror under `cache_dir` and checks it out into `dest`, which
/// must be absent or empty.
pub async fn fetch(
    cache_dir: &Path,
    request: &GitRequest<'_>,
    dest: &Path,
) -> Result<Fetched, GitError> {
    let owned = OwnedRequest {
        url: request.url.to_string(),
        git_ref: request.git_ref.map(str::to_string),
        // Depth 0 means full history to libgit2 too.
        depth: request.depth.filter(|d| *d > 0),
        submodules: request.submodules,
        credentials: request.credentials.cloned(),
        local_roots: request.local_roots.to_vec(),
    };
    let cache_dir = cache_dir.to_path_buf();
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || fetch_blocking(&cache_dir, &owned, &dest))
        .await
        .map_err(|e| GitError::Git(format!("the fetch task did not finish: {e}")))?
}

/// The request moved onto the blocking thread.
struct OwnedRequest {
    url: String,
    git_ref: Option<String>,
    depth: Option<u32>,
    submodules: bool,
    credentials: Option<GitCredentials>,
    local_roots: Vec<PathBuf>,
}

/// A local repository is opened only inside `roots`, by its real path.
fn local_allowed(url: &RemoteUrl, roots: &[PathBuf]) -> Result<(), GitError> {
    let Some(path) = &url.local else {
        return Ok(());
    };
    let real = fs::canonicalize(path).map_err(io_error("open", path))?;
    if roots
        .iter()
        .any(|root| fs::canonicalize(root).is_ok_and(|root| real.starts_with(root)))
    {
        return Ok(());
    }
    Err(GitError::Invalid(format!(
        "{} is {} on disk, outside the directories local repositories may be cloned from \
         (`jobs.allowed_git_paths`)",
        url.shown,
        real.display()
    )))
}

fn fetch_blocking(
    cache_dir: &Path,
    request: &OwnedRequest,
    dest: &Path,
) -> Result<Fetched, GitError> {
    let remote = RemoteUrl::parse(&request.url)?;
    local_allowed(&remote, &request.local_roots)?;
    prepare_dest(dest)?;

    let mirrors = cache_dir.join("mirrors");
    fs::create_dir_all(&mirrors).map_err(io_error("create", &mirrors))?;
    let mirror_path = mirrors.join(format!("{}.git", remote.key_hash()));
    let lock_path = mirrors.join(format!("{}.git.lock", remote.key_hash()));

    let lock = mirror_lock::lock_mirror(&lock_path)?;
    let synced = sync_mirror(&mirror_path, &remote, request)?;
    let dest_repo = Repository::init_opts(dest, RepositoryInitOptions::new().mkdir(true))
        .map_err(|e| GitError::Git(format!("creating a repository in {}: {e}", dest.display())))?;
    let copied = copy_objects(
        &mirror_path.join("objects"),
        &dest_repo.path().join("objects"),
    )?;
    // Objects are in place: later fetches may write to the mirror while this checkout goes on.
    drop(lock);
    info!(
        url = %remote.shown,
        files = copied.files,
        bytes = copied.bytes,
        "copied mirror objects into the checkout"
    );

    finish_checkout(&dest_repo, &remote, request, &synced)?;
    if request.submodules {
        let count = update_submodules(
            &dest_repo,
            &remote,
            &remote,
            request.credentials.as_ref(),
            &request.local_roots,
            0,
        )?;
        info!(url = %remote.shown, count, "submodules checked out");
    }
    Ok(Fetched {
        commit: synced.commit.to_string(),
        branch: synced.branch,
        reused_mirror: synced.reused,
        fetched_bytes: synced.fetched_bytes,
    })
}

fn prepare_dest(dest: &Path) -> Result<(), GitError> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(GitError::Invalid(format!(
                    "the checkout directory {} is not empty",
                    dest.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(io_error("create", dest))
        }
        Err(e) => Err(io_error("read", dest)(e)),
    }
}

/// A repository url checked for secrets, with the forms used for display and caching.
#[derive(Debug, Clone)]
struct RemoteUrl {
    /// As given (trimmed): what libgit2 connects to and what `origin` is set to.
    url: String,
    /// Without any user name, for logs and errors.
    shown: String,
    /// Normalised so that spellings of one repository share a mirror.
    key: String,
    /// Lowercased; `ssh` for scp-like urls, `file` for local repositories.
    scheme: String,
    /// Lowercased host; `None` for local repositories.
    host: Option<String>,
    port: Option<u16>,
    /// The repository's directory when it is on this machine.
    local: Option<PathBuf>,
}

impl RemoteUrl {
    fn parse(raw: &str) -> Result<RemoteUrl, GitError> {
        let url = raw.trim();
        if url.is_empty() {
            return Err(GitError::Invalid("the git url is empty".into()));
        }
        if url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(GitError::Invalid(
                "the git url contains spaces or control characters".into(),
            ));
        }
        if let Some((scheme, rest)) = url.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme == "file" {
                if !rest.starts_with('/') {
                    return Err(GitError::Invalid(format!(
                        "{url}: a file:// url needs an absolute path"
                    )));
                }
                return Ok(RemoteUrl::local(url, rest));
            }
            if !matches!(scheme.as_str(), "https" | "http" | "ssh" | "git") {
                return Err(GitError::Invalid(format!(
                    "the git url scheme `{scheme}` is not supported (https, http, ssh, git, file)"
                )));
            }
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let (user, host_port) = match authority.rsplit_once('@') {
                Some((user, host_port)) => (Some(user), host_port),
                None => (None, authority),
            };
            let (host, port) = split_port(host_port);
            let shown = format!("{scheme}://{host_port}{path}");
            // A bare ssh user name (`git@`) is an account, not a secret; anything else in the
            // userinfo would put a secret in configs and logs.
            if let Some(user) = user
                && (scheme != "ssh" || user.contains(':'))
            {
                return Err(userinfo_refused(&shown));
            }
            if host.is_empty() {
                return Err(GitError::Invalid(format!("{shown}: the url has no host")));
            }
            let host = host.to_ascii_lowercase();
            let key_port = port.map(|p| format!(":{p}")).unwrap_or_default();
            Ok(RemoteUrl {
                url: url.to_string(),
                key: format!("{scheme}://{host}{key_port}{}", repo_path_key(path)),
                scheme,
                shown,
                host: Some(host),
                port,
                local: None,
            })
        } else if url.starts_with('/') {
            Ok(RemoteUrl::local(url, url))
        } else if let Some(rest) = scp_password(url) {
            Err(userinfo_refused(rest))
        } else if let Some((authority, path)) = scp_like(url) {
            let (user, host) = match authority.rsplit_once('@') {
                Some((user, host)) => (Some(user), host),
                None => (None, authority),
            };
            if user.is_some_and(str::is_empty) || host.is_empty() {
                return Err(GitError::Invalid(format!("{url}: not a git url")));
            }
            let shown = format!("{host}:{path}");
            let host = host.to_ascii_lowercase();
            Ok(RemoteUrl {
                url: url.to_string(),
                key: format!("scp://{host}:{}", repo_path_key(path)),
                scheme: "ssh".to_string(),
                shown,
                host: Some(host),
                port: None,
                local: None,
            })
        } else {
            Err(GitError::Invalid(format!(
                "{url}: relative paths are not git urls; use an absolute path or a url"
            )))
        }
    }

    fn local(url: &str, path: &str) -> RemoteUrl {
        RemoteUrl {
            url: url.to_string(),
            shown: url.to_string(),
            key: format!("file://{}", repo_path_key(path)),
            scheme: "file".to_string(),
            host: None,
            port: None,
            local: Some(PathBuf::from(path)),
        }
    }

    /// Scheme, host and port, the port spelt out when the url leaves it to the scheme's
    /// default; `None` for local repositories.
    fn origin(&self) -> Option<(&str, &str, u16)> {
        let host = self.host.as_deref()?;
        let port = self.port.or(match self.scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            "ssh" => Some(22),
            "git" => Some(9418),
            _ => None,
        })?;
        Some((self.scheme.as_str(), host, port))
    }

    /// Whether a secret meant for `self` may go to `other`. The scheme counts as much as the
    /// host: a token for `https://host` must not travel in cleartext to `http://host`, nor to
    /// another service on another port of the same machine.
    fn same_origin(&self, other: &RemoteUrl) -> bool {
        self.origin().is_some() && self.origin() == other.origin()
    }

    /// Git's transports that neither encrypt nor authenticate the server.
    fn is_cleartext(&self) -> bool {
        matches!(self.scheme.as_str(), "http" | "git")
    }

    fn key_hash(&self) -> String {
        let digest = Sha256::digest(self.key.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

fn userinfo_refused(shown: &str) -> GitError {
    GitError::Invalid(format!(
        "the git url {shown} has credentials in it; credentials go in the job's credentials \
         secret, not in the url"
    ))
}

/// `[user@]host:path` the way git tells it from a path: a colon before any slash.
fn scp_like(url: &str) -> Option<(&str, &str)> {
    let colon = url.find(':')?;
    let slash = url.find('/').unwrap_or(url.len());
    (colon < slash).then(|| (&url[..colon], &url[colon + 1..]))
}

/// `user:password@host:path`: scp-like syntax has no password, but a pasted one must not get
/// through as a strange host name.
fn scp_password(url: &str) -> Option<&str> {
    let head = &url[..url.find('/').unwrap_or(url.len())];
    let at = head.rfind('@')?;
    head[..at].contains(':').then(|| &url[at + 1..])
}

fn split_port(host_port: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host_port.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, port.parse().ok()),
        _ => (host_port, None),
    }
}

fn repo_path_key(path: &str) -> &str {
    let path = path.trim_end_matches('/');
    path.strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/')
}

/// What a job asked for, matched against what the remote advertises.
enum Wanted {
    /// An advertised ref, fetched by name.
    Ref { name: String },
    /// A full sha; `tip` names an advertised ref pointing at it, which every server serves.
    Commit { oid: Oid, tip: Option<String> },
    /// A short sha at no advertised tip: only the mirror's history can resolve it.
    Prefix(String),
}

enum Plan {
    /// The mirror has the commit already.
    Nothing,
    Fetch(Vec<String>, Option<i32>),
    /// A commit of a local repository that no ref reaches.
    LocalCommit(Oid),
}

struct Advertised {
    name: String,
    oid: Oid,
}

/// The mirror after fetching, and what the job resolves to in it.
struct Synced {
    commit: Oid,
    branch: Option<String>,
    default_branch: Option<String>,
    reused: bool,
    fetched_bytes: usize,
    /// Commits whose parents the mirror lacks.
    mirror_shallow: Vec<Oid>,
    tags: Vec<(String, Oid)>,
}

fn sync_mirror(
    mirror_path: &Path,
    remote: &RemoteUrl,
    request: &OwnedRequest,
) -> Result<Synced, GitError> {
    let mirror = open_mirror(mirror_path)?;
    let git =
        |e: git2::Error| GitError::Git(format!("mirror of {}: {}", remote.shown, e.message()));
    let reused = mirror.references().map_err(git)?.next().is_some();
    let session = Session::new(request.credentials.as_ref(), remote);
    let mut anonymous = mirror.remote_anonymous(&remote.url).map_err(git)?;
    // Connecting even when the mirror already holds the commit proves this job may read the
    // repository: the mirror is shared by every job naming the url.
    let mut connection = anonymous
        .connect_auth(Direction::Fetch, Some(session.callbacks()), None)
        .map_err(|e| session.error(e))?;
    let advertised: Vec<Advertised> = connection
        .list()
        .map_err(|e| session.error(e))?
        .iter()
        .map(|head| Advertised {
            name: head.name().to_string(),
            oid: head.oid(),
        })
        .collect();
    let default_branch = connection
        .default_branch()
        .ok()
        .and_then(|name| name.as_str().map(str::to_string))
        .or_else(|| default_branch_by_oid(&advertised));
    info!(
        url = %remote.shown,
        refs = advertised.len(),
        default_branch = default_branch.as_deref().unwrap_or("-"),
        "connected"
    );

    let not_found = |reference: &str| GitError::NotFound {
        url: remote.shown.clone(),
        reference: reference.to_string(),
        known: known_branches(&advertised),
    };
    let wanted = match request.git_ref.as_deref() {
        None => Wanted::Ref {
            name: default_branch.clone().ok_or_else(|| not_found("HEAD"))?,
        },
        Some(reference) => {
            resolve_wanted(reference, &advertised).ok_or_else(|| not_found(reference))?
        }
    };

    let shallow = mirror.is_shallow();
    let depth = if remote.local.is_some() {
        // libgit2's local transport cannot fetch shallow, and there is no network to save:
        // the checkout is made shallow from the full mirror instead.
        None
    } else {
        match request.depth {
            None if shallow => Some(UNSHALLOW),
            None => None,
            // A full mirror stays full: fetching only what is new is already cheap.
            Some(depth) if shallow || !reused => Some(i32::try_from(depth).unwrap_or(i32::MAX)),
            Some(_) => None,
        }
    };
    let has_commit = |oid: Oid| mirror.find_commit(oid).is_ok();
    let plan = match &wanted {
        Wanted::Ref { name } => Plan::Fetch(vec![format!("+{name}:{name}")], depth),
        Wanted::Commit { oid, .. } if has_commit(*oid) && depth != Some(UNSHALLOW) => Plan::Nothing,
        Wanted::Commit { tip: Some(tip), .. } => Plan::Fetch(vec![format!("+{tip}:{tip}")], depth),
        // libgit2's local transport sends what the remote's refs reach, never a named commit.
        Wanted::Commit { oid, tip: None } if remote.local.is_some() => Plan::LocalCommit(*oid),
        Wanted::Commit { oid, tip: None } => {
            Plan::Fetch(vec![format!("+{oid}:refs/agent/{oid}")], depth)
        }
        Wanted::Prefix(prefix)
            if mirror.find_commit_by_prefix(prefix).is_ok() && depth != Some(UNSHALLOW) =>
        {
            Plan::Nothing
        }
        Wanted::Prefix(_) => {
            // A short sha could be anywhere in history: fetch every branch and tag in full.
            let unshallow = (shallow && remote.local.is_none()).then_some(UNSHALLOW);
            Plan::Fetch(
                vec![
                    "+refs/heads/*:refs/heads/*".to_string(),
                    "+refs/tags/*:refs/tags/*".to_string(),
                ],
                unshallow,
            )
        }
    };

    let mut fetched_bytes = 0;
    match plan {
        Plan::Nothing => {
            info!(url = %remote.shown, "mirror already has the commit; nothing to fetch");
        }
        Plan::LocalCommit(oid) => {
            fetched_bytes = copy_local_commit(remote, &mirror, oid)?;
            info!(url = %remote.shown, bytes = fetched_bytes, "copied the commit into the mirror");
        }
        Plan::Fetch(refspecs, depth) => {
            let mut options = FetchOptions::new();
            options
                .remote_callbacks(session.callbacks())
                .download_tags(AutotagOption::Auto)
                .update_fetchhead(false);
            if let Some(depth) = depth {
                options.depth(depth);
            }
            debug!(url = %remote.shown, ?refspecs, ?depth, "fetching into the mirror");
            let result = connection
                .remote()
                .fetch(&refspecs, Some(&mut options), None);
            if let Err(e) = result {
                return Err(match (&wanted, session.error(e)) {
                    // A server that refuses unadvertised commits answers like a missing object.
                    (Wanted::Commit { oid, tip: None }, GitError::Git(message)) => {
                        debug!(url = %remote.shown, %message, "fetching a commit by sha failed");
                        not_found(&oid.to_string())
                    }
                    (_, error) => error,
                });
            }
            let stats = connection.remote().stats();
            fetched_bytes = stats.received_bytes();
            info!(
                url = %remote.shown,
                received_objects = stats.received_objects(),
                total_objects = stats.total_objects(),
                local_objects = stats.local_objects(),
                deltas = stats.indexed_deltas(),
                bytes = stats.received_bytes(),
                "fetched into the mirror"
            );
        }
    }
    drop(connection);

    let (commit, branch) = match &wanted {
        Wanted::Ref { name } => {
            let commit = mirror
                .find_reference(name)
                .and_then(|r| r.peel_to_commit())
                .map_err(|e| match e.code() {
                    ErrorCode::NotFound => not_found(name),
                    _ => GitError::Git(format!(
                        "{name} of {} is not a commit: {}",
                        remote.shown,
                        e.message()
                    )),
                })?;
            (
                commit.id(),
                name.strip_prefix("refs/heads/").map(str::to_string),
            )
        }
        Wanted::Commit { oid, .. } => {
            let commit = mirror
                .find_commit(*oid)
                .map_err(|_| not_found(&oid.to_string()))?;
            (commit.id(), None)
        }
        Wanted::Prefix(prefix) => {
            let commit = mirror
                .find_commit_by_prefix(prefix)
                .map_err(|e| match e.code() {
                    ErrorCode::Ambiguous => GitError::Invalid(format!(
                        "the short sha `{prefix}` matches more than one commit of {}; give more \
                         of it",
                        remote.shown
                    )),
                    _ => not_found(prefix),
                })?;
            (commit.id(), None)
        }
    };

    Ok(Synced {
        commit,
        branch,
        default_branch: default_branch
            .and_then(|b| b.strip_prefix("refs/heads/").map(String::from)),
        reused,
        fetched_bytes,
        mirror_shallow: read_shallow(&mirror_path.join("shallow"))?,
        tags: tag_refs(&mirror).map_err(git)?,
    })
}

/// Packs the history of `oid` that the mirror lacks straight out of a local repository and
/// names it `refs/agent/<sha>`. Returns the size of the pack.
fn copy_local_commit(remote: &RemoteUrl, mirror: &Repository, oid: Oid) -> Result<usize, GitError> {
    let git = |e: git2::Error| GitError::Git(format!("{}: {}", remote.shown, e.message()));
    let path = remote.local.as_deref().unwrap_or(Path::new(&remote.url));
    let upstream = Repository::open(path).map_err(git)?;
    if upstream.find_commit(oid).is_err() {
        return Err(GitError::NotFound {
            url: remote.shown.clone(),
            reference: oid.to_string(),
            known: Vec::new(),
        });
    }
    let mut walk = upstream.revwalk().map_err(git)?;
    walk.push(oid).map_err(git)?;
    for reference in mirror.references().map_err(git)?.flatten() {
        if let Some(target) = reference.target()
            && upstream.find_commit(target).is_ok()
        {
            walk.hide(target).map_err(git)?;
        }
    }
    let mut builder = upstream.packbuilder().map_err(git)?;
    builder.insert_walk(&mut walk).map_err(git)?;
    let mut pack = git2::Buf::new();
    builder.write_buf(&mut pack).map_err(git)?;
    let odb = mirror.odb().map_err(git)?;
    let mut writer = odb.packwriter().map_err(git)?;
    io::Write::write_all(&mut writer, &pack)
        .map_err(|e| GitError::Git(format!("writing a pack into the mirror: {e}")))?;
    writer.commit().map_err(git)?;
    mirror
        .reference(&format!("refs/agent/{oid}"), oid, true, "fetch")
        .map_err(git)?;
    Ok(pack.len())
}

fn open_mirror(path: &Path) -> Result<Repository, GitError> {
    if path.exists() {
        match Repository::open_bare(path) {
            Ok(repo) => return Ok(repo),
            Err(e) => {
                // Only this module writes mirrors; one it cannot open was left half made.
                warn!(
                    mirror = %path.display(),
                    error = e.message(),
                    "recreating an unreadable mirror"
                );
                fs::remove_dir_all(path).map_err(io_error("remove", path))?;
            }
        }
    }
    Repository::init_bare(path)
        .map_err(|e| GitError::Git(format!("creating the mirror {}: {e}", path.display())))
}

fn default_branch_by_oid(advertised: &[Advertised]) -> Option<String> {
    // Servers that do not say where HEAD points still advertise its sha.
    let head = advertised.iter().find(|a| a.name == "HEAD")?;
    let mut branches: Vec<&Advertised> = advertised
        .iter()
        .filter(|a| a.oid == head.oid && a.name.starts_with("refs/heads/"))
        .collect();
    branches.sort_by_key(|a| !matches!(a.name.as_str(), "refs/heads/main" | "refs/heads/master"));
    branches.first().map(|a| a.name.clone())
}

fn known_branches(advertised: &[Advertised]) -> Vec<String> {
    let names: BTreeSet<&str> = advertised
        .iter()
        .filter_map(|a| a.name.strip_prefix("refs/heads/"))
        .collect();
    names
        .into_iter()
        .take(KNOWN_SHOWN)
        .map(str::to_string)
        .collect()
}

fn resolve_wanted(reference: &str, advertised: &[Advertised]) -> Option<Wanted> {
    let advertises = |name: &str| advertised.iter().any(|a| a.name == name);
    let candidates = if reference.starts_with("refs/") {
        vec![reference.to_string()]
    } else {
        vec![
            format!("refs/heads/{reference}"),
            format!("refs/tags/{reference}"),
        ]
    };
    if let Some(name) = candidates.into_iter().find(|name| advertises(name)) {
        return Some(Wanted::Ref { name });
    }
    let hex = reference.to_ascii_lowercase();
    if hex.len() < 7 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tips: Vec<&Advertised> = advertised
        .iter()
        .filter(|a| !a.name.ends_with("^{}") && a.name != "HEAD")
        .filter(|a| a.oid.to_string().starts_with(&hex))
        .collect();
    let tip_oid = tips.first().map(|a| a.oid);
    let one_commit = tip_oid.is_some_and(|oid| tips.iter().all(|a| a.oid == oid));
    if let (true, Some(oid)) = (one_commit, tip_oid) {
        // Prefer a branch: tags may point at tag objects, never at the commit itself.
        let tip = tips
            .iter()
            .find(|a| a.name.starts_with("refs/heads/"))
            .unwrap_or(&tips[0]);
        return Some(Wanted::Commit {
            oid,
            tip: Some(tip.name.clone()),
        });
    }
    if hex.len() == 40 || hex.len() == 64 {
        return Oid::from_str(&hex)
            .ok()
            .map(|oid| Wanted::Commit { oid, tip: None });
    }
    Some(Wanted::Prefix(hex))
}

fn read_shallow(path: &Path) -> Result<Vec<Oid>, GitError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|line| Oid::from_str(line.trim()).ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

fn tag_refs(repo: &Repository) -> Result<Vec<(String, Oid)>, git2::Error> {
    let mut tags = Vec::new();
    for reference in repo.references_glob("refs/tags/*")? {
        let reference = reference?;
        if let (Some(name), Some(target)) = (reference.name(), reference.target()) {
            tags.push((name.to_string(), target));
        }
    }
    Ok(tags)
}

struct Copied {
    files: usize,
    bytes: u64,
}

/// Gives the checkout its own copy of the mirror's objects. A copy, not hard links: the build
/// runs as root in its container with the checkout mounted, and a write through a shared
/// inode would corrupt the mirror every later job of the repository starts from.
/// `fs::copy` asks the kernel to copy (`copy_file_range`), which shares the blocks on
/// filesystems that can (Btrfs, XFS). Unlike alternates, the checkout stays whole when
/// mounted alone into a build container.
fn copy_objects(from: &Path, to: &Path) -> Result<Copied, GitError> {
    let mut copied = Copied { files: 0, bytes: 0 };
    for entry in fs::read_dir(from).map_err(io_error("read", from))? {
        let entry = entry.map_err(io_error("read", from))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_loose_dir = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if name != "pack" && !is_loose_dir {
            continue;
        }
        let source_dir = entry.path();
        let target_dir = to.join(name);
        fs::create_dir_all(&target_dir).map_err(io_error("create", &target_dir))?;
        for file in fs::read_dir(&source_dir).map_err(io_error("read", &source_dir))? {
            let file = file.map_err(io_error("read", &source_dir))?;
            let file_name = file.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            // Packs in progress have other names; `.keep` belongs to the mirror alone.
            let wanted = is_loose_dir
                || (file_name.starts_with("pack-")
                    && [".pack", ".idx", ".rev"]
                        .iter()
                        .any(|s| file_name.ends_with(s)));
            if !wanted {
                continue;
            }
            let source = file.path();
            let target = target_dir.join(file_name);
            copied.bytes += fs::copy(&source, &target).map_err(io_error("copy", &source))?;
            copied.files += 1;
        }
    }
    Ok(copied)
}

fn finish_checkout(
    repo: &Repository,
    remote: &RemoteUrl,
    request: &OwnedRequest,
    synced: &Synced,
) -> Result<(), GitError> {
    let git = |e: git2::Error| {
        GitError::Git(format!(
            "checking out {} of {}: {}",
            synced.commit,
            remote.shown,
            e.message()
        ))
    };
    let mut shallow: BTreeSet<Oid> = synced.mirror_shallow.iter().copied().collect();
    if !shallow.is_empty() {
        // Written first so libgit2 reads the mirror's cut history as cut here too.
        write_shallow(repo, &shallow)?;
    }
    if let Some(depth) = request.depth {
        let boundary = shallow_boundary(repo, synced.commit, depth).map_err(git)?;
        shallow.extend(boundary);
        if !shallow.is_empty() {
            write_shallow(repo, &shallow)?;
        }
    }

    repo.remote("origin", &remote.url).map_err(git)?;
    if let Some(branch) = &synced.branch {
        let tracking = format!("refs/remotes/origin/{branch}");
        repo.reference(&tracking, synced.commit, true, "fetch")
            .map_err(git)?;
        if synced.default_branch.as_ref() == Some(branch) {
            repo.reference_symbolic("refs/remotes/origin/HEAD", &tracking, true, "fetch")
                .map_err(git)?;
        }
    }
    for (name, target) in &synced.tags {
        if let Err(e) = repo.reference(name, *target, true, "fetch") {
            debug!(tag = %name, error = e.message(), "tag not copied into the checkout");
        }
    }

    let commit = repo.find_commit(synced.commit).map_err(git)?;
    let files = Cell::new(0usize);
    let mut checkout = CheckoutBuilder::new();
    checkout.force().progress(|_, _, total| files.set(total));
    repo.checkout_tree(commit.as_object(), Some(&mut checkout))
        .map_err(git)?;
    repo.set_head_detached(synced.commit).map_err(git)?;
    info!(
        url = %remote.shown,
        commit = %synced.commit,
        branch = synced.branch.as_deref().unwrap_or("-"),
        files = files.get(),
        shallow = !shallow.is_empty(),
        "checked out"
    );
    Ok(())
}

fn write_shallow(repo: &Repository, commits: &BTreeSet<Oid>) -> Result<(), GitError> {
    let path = repo.path().join("shallow");
    let text: String = commits.iter().map(|oid| format!("{oid}\n")).collect();
    fs::write(&path, text).map_err(io_error("write", &path))
}

/// The commits `depth` generations from `tip` that have parents: git's shallow boundary for a
/// fetch of that depth.
fn shallow_boundary(repo: &Repository, tip: Oid, depth: u32) -> Result<Vec<Oid>, git2::Error> {
    let mut seen = HashSet::from([tip]);
    let mut frontier = vec![tip];
    let mut boundary = Vec::new();
    for generation in 1..=depth {
        let mut next = Vec::new();
        for oid in frontier {
            let commit = repo.find_commit(oid)?;
            if generation == depth {
                if commit.parent_count() > 0 {
                    boundary.push(oid);
                }
                continue;
            }
            next.extend(commit.parent_ids().filter(|p| seen.insert(*p)));
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    Ok(boundary)
}

/// The credentials a submodule at `url` is fetched with, or why it is not fetched at all.
///
/// `root` is the job's own repository, at every depth: the job's secret is for that origin
/// alone, and a submodule's parent may itself be a repository elsewhere whose `.gitmodules`
/// the job's owner does not control.
///
/// Plain `http://` and `git://` submodules stay allowed for jobs without credentials, as the
/// repository url itself may be one: nothing secret is at stake and old public projects still
/// name `git://` submodules. A job with credentials fetches private code, so a cleartext
/// submodule is refused there rather than fetched anonymously where anyone on the path can
/// read or alter it; the one exception is the root's own origin, which the job chose to reach
/// that way for its top-level fetch too.
fn submodule_credentials<'c>(
    name: &str,
    parent: &RemoteUrl,
    url: &RemoteUrl,
    root: &RemoteUrl,
    credentials: Option<&'c GitCredentials>,
) -> Result<Option<&'c GitCredentials>, GitError> {
    let Some(credentials) = credentials else {
        return Ok(None);
    };
    if url.same_origin(root) {
        return Ok(Some(credentials));
    }
    if url.is_cleartext() {
        return Err(GitError::Invalid(format!(
            "submodule {name} of {} is at {}, over unencrypted {}://; a job with git \
             credentials fetches submodules only over https or ssh (or from {} itself), so \
             change the submodule's url in .gitmodules",
            parent.shown, url.shown, url.scheme, root.shown
        )));
    }
    Ok(None)
}

fn update_submodules(
    repo: &Repository,
    parent: &RemoteUrl,
    root: &RemoteUrl,
    credentials: Option<&GitCredentials>,
    local_roots: &[PathBuf],
    nesting: usize,
) -> Result<usize, GitError> {
    if nesting > MAX_SUBMODULE_NESTING {
        return Err(GitError::Invalid(format!(
            "submodules of {} nest deeper than {MAX_SUBMODULE_NESTING} levels",
            parent.shown
        )));
    }
    let git =
        |e: git2::Error| GitError::Git(format!("submodules of {}: {}", parent.shown, e.message()));
    let mut count = 0;
    for mut submodule in repo.submodules().map_err(git)? {
        let name = submodule.name().unwrap_or_default().to_string();
        // Init resolves relative urls against origin, the real url.
        submodule.init(false).map_err(git)?;
        let url = repo
            .config()
            .and_then(|c| c.get_string(&format!("submodule.{name}.url")))
            .map_err(git)?;
        let url = RemoteUrl::parse(&url)?;
        if url.local.is_some() && parent.local.is_none() {
            // A remote repository must not name paths on the agent, such as other mirrors.
            return Err(GitError::Invalid(format!(
                "submodule {name} of {} points at the local path {}",
                parent.shown, url.shown
            )));
        }
        local_allowed(&url, local_roots)?;
        let offered = submodule_credentials(&name, parent, &url, root, credentials)?;
        let session = Session::new(offered, &url);
        let mut fetch = FetchOptions::new();
        fetch.remote_callbacks(session.callbacks());
        let mut options = SubmoduleUpdateOptions::new();
        options.fetch(fetch).allow_fetch(true);
        submodule
            .update(true, Some(&mut options))
            .map_err(|e| session.error(e))?;
        let path = submodule.path().display().to_string();
        info!(
            submodule = %path,
            url = %url.shown,
            commit = %submodule.head_id().map(|o| o.to_string()).unwrap_or_default(),
            "submodule checked out"
        );
        let sub_repo = submodule.open().map_err(git)?;
        count +=
            1 + update_submodules(&sub_repo, &url, root, credentials, local_roots, nesting + 1)?;
    }
    Ok(count)
}

/// The host key an ssh server showed, kept for advice when it is not a known host.
struct HostKeySeen {
    host: String,
    key_type: &'static str,
    fingerprint: Option<String>,
}

/// Per-connection state shared with libgit2's callbacks.
struct Session<'c> {
    credentials: Option<&'c GitCredentials>,
    remote: &'c RemoteUrl,
    attempts: Cell<u32>,
    gave_up: Cell<bool>,
    host_key: RefCell<Option<HostKeySeen>>,
}

impl<'c> Session<'c> {
    fn new(credentials: Option<&'c GitCredentials>, remote: &'c RemoteUrl) -> Self {
        Session {
            credentials,
            remote,
            attempts: Cell::new(0),
            gave_up: Cell::new(false),
            host_key: RefCell::new(None),
        }
    }

    fn kind(&self) -> CredentialKind {
        self.credentials
            .map_or(CredentialKind::None, GitCredentials::kind)
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|url, user, allowed| self.credential(url, user, allowed));
        // Without a progress callback libgit2's smart transports do not count received bytes.
        callbacks.transfer_progress(|_| true);
        callbacks.certificate_check(|cert, host| {
            self.saw_certificate(cert, host);
            // libgit2 has checked the key against ~/.ssh/known_hosts, and TLS certificates
            // against the system's roots: its verdict stands.
            Ok(CertificateCheckStatus::CertificatePassthrough)
        });
        callbacks
    }

    fn credential(
        &self,
        url: &str,
        user_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let attempt = self.attempts.get() + 1;
        self.attempts.set(attempt);
        let refuse = |message: &str| {
            self.gave_up.set(true);
            Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Callback,
                message,
            ))
        };
        if attempt > MAX_AUTH_ATTEMPTS {
            return refuse("credentials rejected too often");
        }
        let Some(credentials) = self.credentials else {
            return refuse("no credentials");
        };
        // A redirect to another host, port or scheme (https to http) must not carry the
        // secret along. A url that does not parse, such as a redirect with a user name in it,
        // is refused too: it cannot be shown to be the same origin.
        if !RemoteUrl::parse(url).is_ok_and(|asked| asked.same_origin(self.remote)) {
            return refuse("credentials asked for by another host, port or scheme");
        }
        debug!(
            url = %self.remote.shown,
            attempt,
            kind = %credentials.kind(),
            "offering credentials"
        );
        match credentials {
            GitCredentials::Token { username, token } => {
                if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                    Cred::userpass_plaintext(username, token)
                } else {
                    refuse("a token cannot authenticate this url (ssh needs a key)")
                }
            }
            GitCredentials::SshKey {
                username,
                private_key,
                passphrase,
            } => {
                // A user in the url (`git@host:...`) names the account as git itself would.
                let user = user_from_url.unwrap_or(username);
                if allowed.contains(CredentialType::USERNAME) {
                    Cred::username(user)
                } else if allowed.contains(CredentialType::SSH_MEMORY)
                    || allowed.contains(CredentialType::SSH_KEY)
                {
                    Cred::ssh_key_from_memory(user, None, private_key, passphrase.as_deref())
                } else {
                    refuse("an ssh key cannot authenticate this url (https needs a token)")
                }
            }
        }
    }

    fn saw_certificate(&self, cert: &Cert<'_>, host: &str) {
        let Some(key) = cert.as_hostkey() else { return };
        let seen = HostKeySeen {
            host: host.to_string(),
            key_type: key.hostkey_type().map_or("unknown", |t| t.name()),
            fingerprint: key.hash_sha256().map(|h| base64(h)),
        };
        debug!(host, key_type = seen.key_type, "ssh host key offered");
        self.host_key.replace(Some(seen));
    }

    /// Turns a libgit2 failure into the error a job's log should show.
    fn error(&self, error: git2::Error) -> GitError {
        let url = self.remote.shown.clone();
        let auth_failed = self.gave_up.get()
            || error.code() == ErrorCode::Auth
            || (self.attempts.get() > 0 && mentions_auth(&error));
        if auth_failed {
            return GitError::Auth {
                url,
                kind: self.kind(),
            };
        }
        if error.code() == ErrorCode::Certificate {
            let message = match self.host_key.borrow().as_ref() {
                Some(key) => self.unknown_host_advice(key),
                None => format!(
                    "the server's TLS certificate is not trusted: {}",
                    error.message()
                ),
            };
            return GitError::Network { url, message };
        }
        match error.class() {
            ErrorClass::Net
            | ErrorClass::Http
            | ErrorClass::Ssh
            | ErrorClass::Ssl
            | ErrorClass::Os => GitError::Network {
                url,
                message: error.message().to_string(),
            },
            _ => GitError::Git(format!("{url}: {}", error.message())),
        }
    }

    fn unknown_host_advice(&self, key: &HostKeySeen) -> String {
        let known_hosts = std::env::var_os("HOME")
            .map(|home| Path::new(&home).join(".ssh/known_hosts"))
            .unwrap_or_else(|| PathBuf::from("~/.ssh/known_hosts"));
        let port = self
            .remote
            .port
            .map(|p| format!(" -p {p}"))
            .unwrap_or_default();
        let short_type = key
            .key_type
            .strip_prefix("ssh-")
            .unwrap_or(key.key_type)
            .split('-')
            .next()
            .unwrap_or(key.key_type);
        format!(
            "the ssh host key of {} ({} SHA256:{}) is not in {} of the agent's user, or differs \
             from the one there; after checking that fingerprint with the server's owner, add \
             it with \
             `ssh-keyscan -t {short_type}{port} {} >> {}`",
            key.host,
            key.key_type,
            key.fingerprint.as_deref().unwrap_or("?"),
            known_hosts.display(),
            key.host,
            known_hosts.display(),
        )
    }
}

fn mentions_auth(error: &git2::Error) -> bool {
    let message = error.message().to_ascii_lowercase();
    [
        "authentication",
        "401",
        "403",
        "unauthorized",
        "permission denied",
        "publickey",
    ]
    .iter()
    .any(|word| message.contains(word))
}

/// Unpadded standard base64, the form ssh prints fingerprints in.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

mod mirror_lock;
pub use mirror_lock::evict_unused;

#[cfg(test)]
mod tests;
