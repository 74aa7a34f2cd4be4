//! A per-build credentials endpoint in the ECS container-credentials shape.
//!
//! The SDKs and the CLI in a build read `AWS_CONTAINER_CREDENTIALS_FULL_URI` and
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN` by themselves and ask again before their credentials
//! expire; the endpoint always answers with fresh ones, so a build longer than a role
//! session keeps working. The SDKs accept such a URI only on loopback or on the ECS address
//! 169.254.170.2: host builds use loopback; container builds use 169.254.170.2, which the
//! agent adds to the host's loopback interface (and removes again) when it is not there.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::logs::Maskers;

/// The address ECS serves credentials on, which every SDK accepts.
pub const ECS_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);

/// A running endpoint for one build. Dropping it stops the server and gives back the
/// address it claimed.
pub struct CredentialsEndpoint {
    pub full_uri: String,
    pub token: String,
    server: JoinHandle<()>,
    added_address: bool,
}

impl CredentialsEndpoint {
    /// Serves `source` on `ip` (a random port): `127.0.0.1` for host builds, [`ECS_ADDRESS`]
    /// for containers. Fails, with the reason, when the address cannot be used.
    pub async fn start(
        ip: IpAddr,
        source: SharedCredentialsProvider,
        maskers: Maskers,
    ) -> Result<Self, String> {
        let added_address = if ip == IpAddr::V4(ECS_ADDRESS) {
            claim_ecs_address().await?
        } else {
            false
        };
        let listener = match TcpListener::bind(SocketAddr::new(ip, 0)).await {
            Ok(listener) => listener,
            Err(e) => {
                if added_address {
                    release_ecs_address().await;
                }
                return Err(format!("cannot listen on {ip}: {e}"));
            }
        };
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let path = format!("/v2/credentials/{}", uuid::Uuid::new_v4().simple());
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let state = Arc::new(State {
            path: path.clone(),
            token: token.clone(),
            source,
            maskers,
        });
        let server = tokio::spawn(serve(listener, state));
        Ok(CredentialsEndpoint {
            full_uri: format!("http://{ip}:{port}{path}"),
            token,
            server,
            added_address,
        })
    }

    /// The variables that point a build's SDKs at this endpoint.
    pub fn variables(&self) -> Vec<(String, String)> {
        vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string(),
                self.full_uri.clone(),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN".to_string(),
                self.token.clone(),
            ),
        ]
    }

    pub async fn stop(self) {
        self.server.abort();
        if self.added_address {
            release_ecs_address().await;
        }
    }
}

struct State {
    path: String,
    token: String,
    source: SharedCredentialsProvider,
    maskers: Maskers,
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, std::convert::Infallible>(answer(&state, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let authorized = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| constant_time_eq(v.as_bytes(), state.token.as_bytes()));
    if request.uri().path() != state.path {
        return reply(
            StatusCode::NOT_FOUND,
            r#"{"message":"not found"}"#.to_string(),
        );
    }
    if !authorized {
        return reply(
            StatusCode::UNAUTHORIZED,
            r#"{"message":"missing or wrong authorization token"}"#.to_string(),
        );
    }
    match state.source.provide_credentials().await {
        Ok(creds) => {
            // Masked everywhere before the build can hold them.
            let mut secrets = vec![
                creds.access_key_id().to_string(),
                creds.secret_access_key().to_string(),
            ];
            secrets.extend(creds.session_token().map(str::to_string));
            state.maskers.add(&secrets);
            let expiration = creds
                .expiry()
                .map(time::OffsetDateTime::from)
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
            let body = serde_json::json!({
                "AccessKeyId": creds.access_key_id(),
                "SecretAccessKey": creds.secret_access_key(),
                "Token": creds.session_token(),
                "Expiration": expiration,
            });
            reply(StatusCode::OK, body.to_string())
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot provide credentials to the build");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "message": format!("the agent cannot get credentials: {e}") })
                    .to_string(),
            )
        }
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Compares without leaking, through timing, how much of the token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds 169.254.170.2 to the loopback interface unless it is there; true when added.
async fn claim_ecs_address() -> Result<bool, String> {
    let present = tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(ECS_ADDRESS), 0))
        .await
        .is_ok();
    if present {
        return Ok(false);
    }
    let output = tokio::process::Command::new("ip")
        .args(["address", "add", "169.254.170.2/32", "dev", "lo"])
        .output()
        .await
        .map_err(|e| format!("cannot run `ip` to claim 169.254.170.2: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cannot claim 169.254.170.2 on this host (it needs root): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(true)
}

async fn release_ecs_address() {
    let _ = tokio::process::Command::new("ip")
        .args(["address", "del", "169.254.170.2/32", "dev", "lo"])
        .output()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[tokio::test]
    async fn serves_fresh_credentials_to_the_holder_of_the_token() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("token".into()), None, "test");
        let maskers = Maskers::default();
        let log = crate::logs::Log::new(&[], vec![]);
        maskers.register(&log);
        let endpoint = CredentialsEndpoint::start(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            SharedCredentialsProvider::new(creds),
            maskers,
        )
        .await
        .unwrap();
        let url = endpoint.full_uri.clone();
        let get = |auth: Option<String>, url: String| async move {
            let stream = tokio::net::TcpStream::connect(
                url.trim_start_matches("http://").split('/').next().unwrap(),
            )
            .await
            .unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut request = Request::get(url.as_str());
            if let Some(auth) = auth {
                request = request.header("Authorization", auth);
            }
            let response = sender
                .send_request(request.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        let (status, body) = get(Some(endpoint.token.clone()), url.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["AccessKeyId"], "AKIDEXAMPLE");
        assert_eq!(json["Token"], "token");
        assert_eq!(log.mask("key AKIDEXAMPLE"), "key ***");
        assert_eq!(get(None, url.clone()).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            get(Some("wrong".into()), url.clone()).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(
                Some(endpoint.token.clone()),
                url.replace("/v2/credentials/", "/v2/other/")
            )
            .await
            .0,
            StatusCode::NOT_FOUND
        );
        endpoint.stop().await;
    }
}
