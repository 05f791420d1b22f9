//! The HTTP/1.1 side of the client port: etcd's probes, `/version`,
//! `/metrics`, and the grpc-gateway JSON API under `/v3/`.
//!
//! # What it owns
//!
//! [`serve_connection`] serves one HTTP/1.1 connection (keep-alive: any
//! number of requests in turn) with hyper. `h2shim` hands it every client
//! connection that does not open with the HTTP/2 preface; the metrics
//! listener (`--listen-metrics-urls`) hands it all of its connections. Which
//! routes answer depends on the [`Port`]: the client port has everything, the
//! metrics port only `/metrics` and the probes (`/health`, and 3.5.11's `/livez` and
//! `/readyz`, which kubeadm's pod probes use), as etcd. Only the client port
//! adds etcd's CORS headers.
//!
//! # One service layer
//!
//! Nothing here reads or writes the store. The gateway ([`gateway`]) decodes
//! a JSON body into the same prost request the gRPC server would decode from
//! protobuf, calls the same tonic service method (`KvService::range`, ...)
//! with it, and encodes the reply or the `tonic::Status` as grpc-gateway
//! does; the probes ([`probes`]) ask the same services. A behaviour fixed for
//! gRPC is fixed here (ARCHITECTURE rule 9).
//!
//! # Limits
//!
//! A request body is read whole up to [`HttpApi::max_body_bytes`] and refused with 413
//! past it, whether it is sent with a length or chunked, so a huge body costs
//! at most that much memory; the decoded message then meets the same size
//! limit gRPC applies. Headers must arrive within [`HEADER_READ_TIMEOUT`] of
//! the connection becoming ready for a request (idle keep-alive connections
//! included), or hyper closes the connection; headers are bounded by hyper's
//! buffer limit.
//!
//! # Shutdown
//!
//! When the server stops, each connection finishes the request it is serving
//! and closes (hyper's graceful shutdown), or is closed after
//! `SHUTDOWN_GRACE` (a watch stream never finishes), as the driver drains
//! gRPC connections.

pub mod gateway;
pub mod probes;
pub mod stream;

use super::services::Handle;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// How long a client may take to send a request's headers, counted from when
/// the connection is ready for one (so also an idle keep-alive connection's
/// limit): hyper's default. A client that sends nothing at all is closed
/// after it too.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping server lets a connection finish the response it is
/// writing: the driver's client drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The body of every response: whole, or a stream of chunks.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// `--listen-client-urls`: the gateway, probes, `/version`.
    Client,
    /// `--listen-metrics-urls`: `/metrics` and the probes only.
    Metrics,
}

/// What the HTTP side needs: the services' shared handle and its settings.
pub struct HttpApi {
    /// The same handle the gRPC services hold.
    pub handle: Handle,
    /// `--enable-grpc-gateway`: whether `/v3/` is served.
    pub gateway: bool,
    /// `--quota-backend-bytes`, for `etcd_server_quota_backend_bytes`.
    pub quota_backend_bytes: u64,
}

impl HttpApi {
    /// Largest request body read, in bytes: the largest gRPC message
    /// accepted, grown by base64's 4/3 and JSON's field names and quoting,
    /// with room to spare.
    pub fn max_body_bytes(&self) -> usize {
        (self.handle.max_request_bytes + super::GRPC_OVERHEAD_BYTES) * 2
    }
}

/// Serves one HTTP/1.1 connection until the client closes it, a request's
/// headers time out, or the server stops (`stop` turns true).
pub async fn serve_connection<S>(
    api: Arc<HttpApi>,
    port: Port,
    io: S,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let api = api.clone();
        async move {
            let resp = route(&api, port, req).await;
            Ok::<_, Infallible>(match port {
                Port::Client => with_common_headers(resp),
                Port::Metrics => resp,
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let served = tokio::select! {
        res = conn.as_mut() => res,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn).await {
                Ok(res) => res,
                // A watch stream never finishes: close it.
                Err(_) => return,
            }
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "closing an HTTP connection");
    }
}

/// Serves `--listen-metrics-urls` address `addr`: every connection is
/// HTTP/1.1 on the metrics [`Port`], until `stop` turns true.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    api: Arc<HttpApi>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => return Ok(()),
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve_connection(
                    api.clone(),
                    Port::Metrics,
                    tcp,
                    stop.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Samples the member's status into the metrics every `every` (the
/// heartbeat interval), for ever: the driver aborts it at shutdown.
pub async fn sample_metrics(api: Arc<HttpApi>, every: Duration) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        probes::sample_status(&api).await;
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        // The server is gone without saying so: stop too.
    }
}

/// The handler for a request, by port, method and path.
async fn route(api: &HttpApi, port: Port, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/version" if port == Port::Client => probes::version(&req),
        "/health" => probes::health(api, &req).await,
        "/metrics" => probes::metrics(api, &req).await,
        "/livez" | "/readyz" => probes::livez_readyz(api, &req, &path).await,
        _ if path.starts_with("/livez/") || path.starts_with("/readyz/") => {
            probes::livez_readyz(api, &req, &path).await
        }
        _ if port == Port::Client
            && api.gateway
            && (path.starts_with("/v3/") || path.starts_with("/v3beta/")) =>
        {
            gateway::serve(api, req).await
        }
        _ => not_found_page(),
    }
}

/// Headers etcd puts on every HTTP response (its CORS handler with the
/// default `--cors=*`).
fn with_common_headers(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    resp
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A response with `status`, `content_type` and `body`.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// What Go's `http.Error` writes: the text, a newline, as plain text that
/// browsers must not sniff.
pub fn go_http_error(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = respond(status, "text/plain; charset=utf-8", format!("{text}\n"));
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Go's `http.NotFound`, which etcd's mux answers for a path it has no
/// handler for (`/v3alpha/...`, `/nope`).
pub fn not_found_page() -> Response<Body> {
    go_http_error(StatusCode::NOT_FOUND, "404 page not found")
}

/// 405 with `Allow`, for a probe asked with a method other than GET.
pub fn method_not_allowed(allow: Method) -> Response<Body> {
    let mut resp = go_http_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    if let Ok(v) = HeaderValue::from_str(allow.as_str()) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

/// The values of query parameter `name`, as Go's `URL.Query()[name]` gives
/// them (percent-decoding is not needed for the names and values etcd's
/// probes take, which are plain words).
pub fn query_values<'a>(req: &'a Request<Incoming>, name: &str) -> Vec<&'a str> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
        .collect()
}

/// Whether query parameter `name` is present at all.
pub fn query_has(req: &Request<Incoming>, name: &str) -> bool {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair.split_once('=').map_or(pair, |(k, _)| k) == name)
}
