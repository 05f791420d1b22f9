//! The client gRPC server's request counters: a tower layer that counts
//! each call of a known method as started when it arrives and as handled,
//! with its gRPC code, when its status is known (in the response headers
//! for an error, in the trailers at the end of the body otherwise; a body
//! dropped before its trailers counts as Canceled). See [`crate::metrics`].

use super::HttpResponse;
use crate::metrics::{self, RpcGuard};
use bytes::Bytes;
use http_body::{Body, Frame};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Adds [`GrpcMetrics`] around a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics(inner)
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S>(S);

impl<S, B> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = metrics::method_index(req.uri().path()).map(metrics::rpc_started);
        let fut = self.0.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(match guard {
                Some(guard) => count(resp, guard),
                None => resp,
            })
        })
    }
}

/// The gRPC code in `headers`, if they carry one.
fn grpc_code(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn count(resp: HttpResponse, mut guard: RpcGuard) -> HttpResponse {
    if let Some(code) = grpc_code(resp.headers()) {
        // A trailers-only response: the call is over.
        guard.finish(code);
        return resp;
    }
    resp.map(|inner| tonic::body::Body::new(Counting { inner, guard }))
}

/// A response body that finishes its guard from the trailers.
struct Counting {
    inner: tonic::body::Body,
    guard: RpcGuard,
}

impl Body for Counting {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                this.guard.finish(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
