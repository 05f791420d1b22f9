//! The client port: one listener for gRPC and HTTP/1.1, told apart per
//! connection.
//!
//! Each accepted connection is first read until its bytes are the whole
//! HTTP/2 preface or can no longer be (an HTTP/1.1 request line differs from
//! `PRI * HTTP/2.0` by its second byte at the latest), as etcd's `cmux` tells
//! gRPC from HTTP/1.1 per connection. An HTTP/2 connection goes to tonic
//! through `h2shim`'s relay (which repairs etcdctl's `:authority`), the bytes
//! already read first. Any other goes to the HTTP/1.1 server
//! (`super::http`) with those bytes put back in front ([`Prefixed`]); it never
//! meets tonic. A connection that sends nothing for
//! `http::HEADER_READ_TIMEOUT` is closed before it is classified.
//!
//! # Shutdown
//!
//! [`serve`] stops accepting when its shutdown future resolves and closes the
//! listening socket; tonic then drains its connections gracefully (requests in
//! flight finish) and closes the pipes, which ends each relay. HTTP/1.1
//! connections are told through a watch channel and given the same drain.
//!
//! The module is not compiled under `--cfg madsim`: the simulator has no real
//! sockets, and serves plain tonic.

use super::h2shim::{relay, PIPE_BYTES, PREFACE};
use super::http::{self, HttpApi};
use futures::Stream;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Accepted connections waiting for tonic to pick them up.
const ACCEPT_QUEUE: usize = 64;
/// Pause after a failed accept (out of file descriptors, say) before retrying.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Accepts client connections on `listener` and serves them: HTTP/2 ones
/// with `router` through the shim, HTTP/1.1 ones with `http` (or, without
/// it, with `router` too, which answers them as tonic does), until `shutdown`
/// resolves and tonic has drained every connection.
pub async fn serve(
    listener: TcpListener,
    router: tonic::transport::server::Router<super::ClientLayers>,
    http: Option<Arc<HttpApi>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (conn_tx, conn_rx) = mpsc::channel::<DuplexStream>(ACCEPT_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let served = router.serve_with_incoming_shutdown(incoming(conn_rx), shutdown);
    tokio::pin!(served);
    let accepting = accept_loop(listener, conn_tx, http, stop_rx);
    tokio::select! {
        res = &mut served => return res,
        () = accepting => {}
    }
    // tonic stopped taking connections (shutdown): the listener is closed; let
    // tonic finish draining.
    served.await
}

/// The pipe ends tonic serves, as the stream of connections it expects.
fn incoming(
    mut conn_rx: mpsc::Receiver<DuplexStream>,
) -> impl Stream<Item = Result<DuplexStream, Infallible>> {
    futures::stream::poll_fn(move |cx| conn_rx.poll_recv(cx).map(|c| c.map(Ok)))
}

/// Accepts connections and starts a task for each that tells HTTP/2 from
/// HTTP/1.1, until tonic stops taking them.
async fn accept_loop(
    listener: TcpListener,
    conn_tx: mpsc::Sender<DuplexStream>,
    http: Option<Arc<HttpApi>>,
    stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            () = conn_tx.closed() => return,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a client connection");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(dispatch(tcp, conn_tx.clone(), http.clone(), stop.clone()));
    }
}

/// Reads the first bytes of a connection and hands it on: to tonic through
/// the shim if they are the HTTP/2 preface, to the HTTP/1.1 server if they
/// cannot be. A client that sends nothing for [`http::HEADER_READ_TIMEOUT`]
/// is dropped.
async fn dispatch(
    mut tcp: TcpStream,
    conn_tx: mpsc::Sender<DuplexStream>,
    http: Option<Arc<HttpApi>>,
    stop: watch::Receiver<bool>,
) {
    let first = match tokio::time::timeout(http::HEADER_READ_TIMEOUT, sniff(&mut tcp)).await {
        Ok(Ok(first)) => first,
        _ => return,
    };
    if let (false, Some(api)) = (first.starts_with(PREFACE), http) {
        http::serve_connection(api, http::Port::Client, Prefixed::new(first, tcp), stop).await;
        return;
    }
    let (server_end, shim_end) = tokio::io::duplex(PIPE_BYTES);
    if conn_tx.send(server_end).await.is_ok() {
        relay(tcp, first, shim_end).await;
    }
}

/// Reads until the bytes read are the whole HTTP/2 preface or stop being a
/// prefix of it (an HTTP/1.1 request differs by its second byte at most), or
/// the client closes.
async fn sniff(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut first = Vec::with_capacity(PREFACE.len());
    let mut buf = [0u8; PREFACE.len()];
    while first.len() < PREFACE.len() && PREFACE.starts_with(&first) {
        let n = tcp.read(&mut buf[..PREFACE.len() - first.len()]).await?;
        if n == 0 {
            break;
        }
        first.extend_from_slice(&buf[..n]);
    }
    Ok(first)
}

/// A client connection whose first bytes were read by [`sniff`]: they are
/// read again before the socket's.
pub struct Prefixed<S> {
    first: Vec<u8>,
    /// Bytes of `first` already read again.
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(first: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            first,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.first.len() {
            let n = (this.first.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            if this.at == this.first.len() {
                this.first = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
