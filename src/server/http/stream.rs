//! The gateway's two streaming calls, `POST /v3/watch` and
//! `POST /v3/lease/keepalive`, as grpc-gateway streams them.
//!
//! # Shape
//!
//! The request body is a sequence of JSON messages (`{"create_request":
//! {...}}`, or `{"ID":"1"}` for a keep-alive), read as they arrive. The
//! response is chunked (`Transfer-Encoding: chunked`), one chunk per
//! response message holding `{"result": {...}}` and a newline, so a client
//! parses one message per chunk. A stream error is one last chunk
//! `{"error": {"grpc_code", "http_code", "message", "http_status"}}`, with
//! no newline (etcd 3.4's grpc-gateway writes none); if it
//! comes before any message, it also sets the HTTP status (grpc-gateway's
//! `ForwardResponseStream`). A body message that is not JSON of the right
//! shape ends the request side, as grpc-gateway's `CloseSend`.
//!
//! # Same service, same lifetime rules
//!
//! The body's messages are encoded as the gRPC framing tonic reads and fed
//! to the very `Watch::watch` / `Lease::lease_keep_alive` method a gRPC
//! stream reaches, through a `tonic::Streaming` over an in-process body. So
//! the stream's lifetime follows gRPC's rules:
//!
//! - the end of the request body is a half-close. A keep-alive stream then
//!   ends once its answers are out (etcd's gateway ends it the same way); a
//!   watch stream stays open, its watchers kept, as etcd keeps them;
//! - when the client closes its connection, hyper drops the response body,
//!   whose [`Gone`] guard makes the request side fail; the watch service
//!   reads that as a broken stream and frees its watchers at once.

use super::gateway::{forwarded_metadata, http_status};
use super::{Body, HttpApi};
use crate::metrics::RpcGuard;
use crate::proto::etcdserverpb::{
    lease_server::Lease, watch_server::Watch, LeaseKeepAliveRequest, WatchRequest,
};
use crate::server::services::{LeaseService, WatchService};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// Encoded request messages waiting for the service.
const REQUEST_QUEUE: usize = 16;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What a service's response stream yields.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `POST /v3/watch`.
pub async fn watch(
    api: &HttpApi,
    body: Incoming,
    headers: &http::HeaderMap,
    guard: Option<RpcGuard>,
) -> Response<Body> {
    let (streaming, gone) = request_side::<WatchRequest>(api, body, true);
    let req =
        tonic::Request::from_parts(forwarded_metadata(headers), Default::default(), streaming);
    match WatchService(api.handle.clone()).watch(req).await {
        Ok(resp) => response_side(resp.into_inner(), Ended { _gone: gone, guard }).await,
        // The stream failed at once: grpc-gateway still answers in the
        // stream's form, one error chunk.
        Err(status) => {
            let failed: ResponseStream<()> = Box::pin(futures::stream::once(async { Err(status) }));
            response_side(failed, Ended { _gone: gone, guard }).await
        }
    }
}

/// `POST /v3/lease/keepalive` (and its `/v3beta/` twin).
pub async fn keep_alive(
    api: &HttpApi,
    body: Incoming,
    headers: &http::HeaderMap,
    guard: Option<RpcGuard>,
) -> Response<Body> {
    let (streaming, gone) = request_side::<LeaseKeepAliveRequest>(api, body, false);
    let req =
        tonic::Request::from_parts(forwarded_metadata(headers), Default::default(), streaming);
    match LeaseService(api.handle.clone()).lease_keep_alive(req).await {
        Ok(resp) => response_side(resp.into_inner(), Ended { _gone: gone, guard }).await,
        // The stream failed at once: grpc-gateway still answers in the
        // stream's form, one error chunk.
        Err(status) => {
            let failed: ResponseStream<()> = Box::pin(futures::stream::once(async { Err(status) }));
            response_side(failed, Ended { _gone: gone, guard }).await
        }
    }
}

/// What the response body carries to its end: the [`Gone`] signal and the
/// request counters' guard.
struct Ended {
    /// Held for its `Drop`.
    _gone: Gone,
    guard: Option<RpcGuard>,
}

impl Ended {
    fn finish(&mut self, code: tonic::Code) {
        if let Some(g) = &mut self.guard {
            g.finish(code as i32);
        }
    }
}

/// Fires when the response body is dropped: the client has gone, or the
/// response is over.
pub struct Gone(Option<oneshot::Sender<()>>);

impl Drop for Gone {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The service's view of the request body: a `tonic::Streaming` of `Req`
/// fed by a task that reads JSON messages from `body`. With `hold_open`, the
/// stream does not end with the body but stays pending until the [`Gone`]
/// guard fires, and then fails.
fn request_side<Req>(
    api: &HttpApi,
    body: Incoming,
    hold_open: bool,
) -> (tonic::Streaming<Req>, Gone)
where
    Req: serde::de::DeserializeOwned + prost::Message + Default + Send + 'static,
{
    let (frames_tx, frames_rx) = mpsc::channel::<Bytes>(REQUEST_QUEUE);
    let (gone_tx, gone_rx) = oneshot::channel::<()>();
    let max_pending = api.max_body_bytes();
    tokio::spawn(feed::<Req>(body, frames_tx, max_pending));
    let frames = futures::stream::unfold(frames_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    let tail = match hold_open {
        true => futures::stream::once(async move {
            let _ = gone_rx.await;
            Err::<Frame<Bytes>, BoxError>("the HTTP client closed its connection".into())
        })
        .boxed(),
        false => futures::stream::empty().boxed(),
    };
    let body = StreamBody::new(frames.chain(tail));
    let max_message = api.handle.max_request_bytes + crate::server::GRPC_OVERHEAD_BYTES;
    let streaming = tonic::Streaming::new_request(
        tonic_prost::ProstDecoder::<Req>::default(),
        body,
        None,
        Some(max_message),
    );
    (streaming, Gone(Some(gone_tx)))
}

/// Reads JSON messages from `body` as they arrive and sends each on in
/// gRPC's framing (a zero compression byte, a 4-byte big-endian length, the
/// protobuf). Stops at the end of the body, at a message that does not
/// decode, or when more than `max_pending` bytes are waiting to form one.
async fn feed<Req>(mut body: Incoming, frames: mpsc::Sender<Bytes>, max_pending: usize)
where
    Req: serde::de::DeserializeOwned + prost::Message,
{
    let mut pending = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        let mut messages = serde_json::Deserializer::from_slice(&pending).into_iter::<Req>();
        let mut used = 0;
        loop {
            match messages.next() {
                Some(Ok(msg)) => {
                    used = messages.byte_offset();
                    if frames.send(grpc_frame(&msg)).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "a stream message over HTTP does not decode");
                    return;
                }
                None => {
                    used = pending.len();
                    break;
                }
            }
        }
        pending.drain(..used);
        if pending.len() > max_pending {
            return;
        }
    }
}

/// `msg` in gRPC's length-prefixed framing.
fn grpc_frame<M: prost::Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // BytesMut grows as needed, so encoding cannot run out of room.
    let _ = msg.encode(&mut buf);
    buf.freeze()
}

/// The response: each message as a `{"result": ...}` chunk. An error before
/// the first message sets the HTTP status too.
async fn response_side<T>(mut stream: ResponseStream<T>, mut ended: Ended) -> Response<Body>
where
    T: serde::Serialize + Send + 'static,
{
    // The first item decides the status, as grpc-gateway writes the header
    // on the first message or error.
    let first = stream.next().await;
    let status = match &first {
        Some(Err(e)) => http_status(e.code()),
        _ => StatusCode::OK,
    };
    // Nothing is read after an error: it ends the stream.
    let more = match &first {
        Some(Ok(_)) => true,
        Some(Err(e)) => {
            ended.finish(e.code());
            false
        }
        None => {
            ended.finish(tonic::Code::Ok);
            false
        }
    };
    let rest = futures::stream::unfold(
        (more.then_some(stream), ended),
        |(stream, mut ended)| async move {
            let mut stream = stream?;
            let item = match stream.next().await {
                Some(item) => item,
                None => {
                    ended.finish(tonic::Code::Ok);
                    return None;
                }
            };
            if let Err(e) = &item {
                ended.finish(e.code());
            }
            let more = item.is_ok();
            Some((item, (more.then_some(stream), ended)))
        },
    );
    let chunks = futures::stream::iter(first).chain(rest).map(|item| {
        Ok(Frame::data(match item {
            Ok(msg) => result_chunk(&msg),
            Err(status) => error_chunk(&status),
        }))
    });
    let mut resp = Response::new(StreamBody::new(chunks).boxed_unsync());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// `{"result": msg}` and a newline.
fn result_chunk<T: serde::Serialize>(msg: &T) -> Bytes {
    let mut out = b"{\"result\":".to_vec();
    if serde_json::to_writer(&mut out, msg).is_err() {
        return error_chunk(&Status::internal("encoding a stream message"));
    }
    out.extend_from_slice(b"}\n");
    out.into()
}

/// grpc-gateway's stream error, fields in its order.
#[derive(serde::Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

/// The stream error's envelope (a struct, so the fields keep their order).
#[derive(serde::Serialize)]
struct ErrorChunk<'a> {
    error: StreamError<'a>,
}

/// `{"error": {...}}`, with no newline (grpc-gateway writes none after it).
fn error_chunk(status: &Status) -> Bytes {
    let http = http_status(status.code());
    let error = StreamError {
        grpc_code: status.code() as i32,
        http_code: http.as_u16(),
        message: status.message(),
        http_status: http.canonical_reason().unwrap_or(""),
    };
    serde_json::to_vec(&ErrorChunk { error })
        .unwrap_or_default()
        .into()
}
