//! An HTTP/2 shim in front of the client gRPC server that repairs one header
//! that etcd's own clients send and the `h2` crate refuses.
//!
//! # The problem
//!
//! grpc-go, as used by etcdctl 3.4 for its per-endpoint dials (`endpoint
//! status`, `endpoint health --cluster`), sends the whole endpoint URL as the
//! HTTP/2 `:authority` pseudo-header: `http://127.0.0.1:2379` instead of
//! `127.0.0.1:2379`. Go's gRPC server accepts it. `h2`, under hyper and tonic,
//! parses `:authority` as a URI authority, finds `/` and `:` where they may not
//! be, and resets the stream with PROTOCOL_ERROR. `h2` has no switch to relax
//! this, and we do not fork it.
//!
//! # The shim
//!
//! Each accepted client TCP connection is relayed to tonic's server over an
//! in-process [`tokio::io::duplex`] pipe. Bytes from tonic go back to the
//! client unchanged. Bytes from the client pass through a [`Rewriter`], a
//! sans-IO parser of the client's half of an HTTP/2 connection:
//!
//! - the 24-byte connection preface is passed through; if the client does not
//!   send it, the connection is not HTTP/2 and every byte passes untouched, so
//!   tonic answers it as it would without the shim;
//! - every frame except HEADERS and CONTINUATION is passed through as it
//!   arrives, without being buffered or looked at past its 9-byte head, so
//!   DATA costs one copy and no per-byte work;
//! - a header block (a HEADERS frame and the CONTINUATION frames after it) is
//!   collected whole, HPACK-decoded with a decoder that tracks the client's
//!   dynamic table, its `:authority` rewritten if it carries a scheme, and
//!   re-encoded with the shim's own HPACK encoder. That encoder's dynamic table
//!   is the one tonic's decoder mirrors, so once a block has been rewritten
//!   *every* later block is re-encoded, not only those that change: the
//!   client's table and tonic's differ from the first rewrite on;
//! - if the connection's *first* header block needs no rewrite, it goes on
//!   with the client's own HPACK bytes, and the rest of the connection passes
//!   through untouched, as a connection that is not HTTP/2 does. A client's
//!   `:authority` is its dial target, the same for every stream of a
//!   connection (grpc-go and `h2` both set it per connection), so a
//!   connection that starts clean stays clean. This is what keeps the shim
//!   cheap: HPACK decoding costs a Huffman table build per literal string in
//!   `loona-hpack`, and decoding every request's headers took about a third
//!   of a server's CPU under `cairn bench put` (see docs/benchmarks.md). A
//!   client that changed its `:authority` to a URL mid-connection would get
//!   what it gets without the shim: tonic resets that stream.
//!
//! Re-encoded blocks are framed as HEADERS then CONTINUATION, each payload at
//! most [`MAX_FRAME_PAYLOAD_BYTES`] (the HTTP/2 default SETTINGS_MAX_FRAME_SIZE,
//! which tonic keeps), END_HEADERS on the last. END_STREAM is kept; padding and
//! PRIORITY information are dropped (h2 ignores priority).
//!
//! # HTTP/1.1 on the same port
//!
//! Each accepted connection is first read until its bytes are the whole
//! HTTP/2 preface or can no longer be (an HTTP/1.1 request line differs from
//! `PRI * HTTP/2.0` by its second byte at the latest), as etcd's `cmux` tells
//! gRPC from HTTP/1.1 per connection. An HTTP/2 connection goes to tonic
//! through the rewriter below, the bytes already read first. Any other goes
//! to the HTTP/1.1 server (`super::http`) with those bytes put back in front
//! ([`Prefixed`]); it never meets tonic. A connection that sends nothing for
//! `http::HEADER_READ_TIMEOUT` is closed before it is classified.
//!
//! # Dynamic tables
//!
//! Both tables are 4096 bytes, the HTTP/2 default for SETTINGS_HEADER_TABLE_SIZE.
//! tonic does not announce another value, so the client may not grow its table
//! past 4096 (the decoder refuses larger size updates), and tonic's decoder
//! expects the shim's encoder to stay within 4096, which it does without ever
//! sending a size update. The encoder indexes every field; the never-indexed
//! marking of sensitive fields is lost, which is harmless because the
//! re-encoded bytes only cross an in-process pipe.
//!
//! # Limits
//!
//! A header block over [`MAX_HEADER_BLOCK_BYTES`] compressed, or a header list
//! over [`MAX_HEADER_LIST_BYTES`] decoded, closes the connection. So does any
//! malformed framing or HPACK: a frame other than CONTINUATION inside a header
//! block, a stray CONTINUATION, bad padding. The shim never panics on input; it
//! returns a [`ShimError`] and the driver drops both ends of the connection.
//! Frames are otherwise bounded by their 24-bit length field (16 MiB).
//!
//! # Shutdown
//!
//! [`serve`] stops accepting when its shutdown future resolves and closes the
//! listening socket; tonic then drains its connections gracefully (requests in
//! flight finish) and closes the pipes, which ends each relay.
//!
//! The module is not compiled under `--cfg madsim`: the simulator has no real
//! sockets, and serves plain tonic.

use futures::Stream;
use loona_hpack::decoder::DecoderError;
use loona_hpack::{Decoder, Encoder};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::http::{self, HttpApi};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes in an HTTP/2 frame head: length (24 bits), type, flags, stream id.
const FRAME_HEAD_BYTES: usize = 9;
/// Largest payload of a frame the shim writes: HTTP/2's default
/// SETTINGS_MAX_FRAME_SIZE, which every peer must accept.
pub const MAX_FRAME_PAYLOAD_BYTES: usize = 16_384;
/// Largest compressed header block accepted from a client.
pub const MAX_HEADER_BLOCK_BYTES: usize = 1 << 20;
/// Largest decoded header list accepted from a client, counted as RFC 9113
/// §6.5.2 counts SETTINGS_MAX_HEADER_LIST_SIZE (name + value + 32 per field).
pub const MAX_HEADER_LIST_BYTES: usize = 1 << 20;
/// HPACK dynamic table size on both sides: the HTTP/2 default, which tonic
/// keeps.
const HEADER_TABLE_BYTES: usize = 4096;
/// Bytes buffered in each direction of the in-process pipe to tonic.
const PIPE_BYTES: usize = 64 * 1024;
/// Bytes read from a client socket at a time.
const READ_BYTES: usize = 64 * 1024;
/// Accepted connections waiting for tonic to pick them up.
const ACCEPT_QUEUE: usize = 64;
/// Pause after a failed accept (out of file descriptors, say) before retrying.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Bytes of stream dependency and weight that FLAG_PRIORITY adds to HEADERS.
const PRIORITY_BYTES: usize = 5;

/// Why the shim closed a client connection.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("frame of type {kind:#x} on stream {stream} inside the header block of stream {block_stream}")]
    Interleaved {
        kind: u8,
        stream: u32,
        block_stream: u32,
    },
    #[error("CONTINUATION on stream {stream} with no header block open")]
    StrayContinuation { stream: u32 },
    #[error("HEADERS frame on stream {stream}: padding or priority longer than the payload")]
    BadPadding { stream: u32 },
    #[error("header block of stream {stream} exceeds {MAX_HEADER_BLOCK_BYTES} bytes")]
    BlockTooLarge { stream: u32 },
    #[error("header list of stream {stream} exceeds {MAX_HEADER_LIST_BYTES} bytes decoded")]
    ListTooLarge { stream: u32 },
    #[error("HPACK on stream {stream}: {source}")]
    Hpack { stream: u32, source: DecoderError },
}

/// A frame's 9-byte head.
#[derive(Clone, Copy, Debug)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8; FRAME_HEAD_BYTES]) -> FrameHead {
        FrameHead {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        debug_assert!(
            self.len < 1 << 24,
            "frame length {} overflows 24 bits",
            self.len
        );
        let len = (self.len as u32).to_be_bytes();
        out.extend_from_slice(&len[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.stream.to_be_bytes());
    }
}

/// Where the rewriter is in the client's byte stream.
enum State {
    /// Matching the connection preface; `matched` bytes of it seen so far.
    Preface { matched: usize },
    /// Not HTTP/2: everything passes through untouched.
    Opaque,
    /// Reading a frame head; `have` of its bytes are in `buf`.
    Head {
        buf: [u8; FRAME_HEAD_BYTES],
        have: usize,
    },
    /// Passing through the rest of a frame's payload.
    Copy { left: usize },
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    Collect { head: FrameHead, payload: Vec<u8> },
}

/// A header block being assembled from HEADERS and CONTINUATION frames.
struct Block {
    /// The stream the block belongs to.
    stream: u32,
    /// The HEADERS frame carried END_STREAM.
    end_stream: bool,
    /// The header block fragments so far, padding and priority removed.
    fragment: Vec<u8>,
}

/// The sans-IO client-to-server half of the shim: feed it the client's bytes,
/// and it appends what tonic should see to an output buffer.
pub struct Rewriter {
    /// Where we are in the byte stream.
    state: State,
    /// The header block being assembled, if a HEADERS frame lacked END_HEADERS.
    block: Option<Block>,
    /// Mirrors the client's encoder.
    decoder: Decoder<'static>,
    /// Its dynamic table is the one tonic's decoder mirrors.
    encoder: Encoder<'static>,
    /// The re-encoded header block, reused between blocks.
    encoded: Vec<u8>,
    /// A block has been rewritten: tonic's table now mirrors `encoder`, so
    /// every later block must be re-encoded. Until the first block ends it is
    /// false, and if that block needs no rewrite the connection becomes
    /// [`State::Opaque`] instead.
    rewriting: bool,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    pub fn new() -> Rewriter {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_BYTES);
        let mut encoder = Encoder::new();
        encoder.set_max_table_size(HEADER_TABLE_BYTES);
        Rewriter {
            state: State::Preface { matched: 0 },
            block: None,
            decoder,
            encoder,
            encoded: Vec::new(),
            rewriting: false,
        }
    }

    /// Consumes `input`, the next bytes from the client, and appends to `out`
    /// the bytes to send on to the server. Bytes of an incomplete frame head
    /// or header frame are held until the rest arrives. An error means the
    /// connection must be closed; the rewriter is of no further use.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), ShimError> {
        while !input.is_empty() {
            input = self.step(input, out)?;
        }
        Ok(())
    }

    /// Consumes a prefix of `input` (at least one byte) and returns the rest.
    fn step<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> Result<&'a [u8], ShimError> {
        match &mut self.state {
            State::Preface { matched } => {
                let want = &PREFACE[*matched..];
                let n = want.len().min(input.len());
                if input[..n] != want[..n] {
                    // Not HTTP/2 with prior knowledge: leave it to tonic.
                    self.state = State::Opaque;
                    return Ok(input);
                }
                out.extend_from_slice(&input[..n]);
                *matched += n;
                if *matched == PREFACE.len() {
                    self.state = State::Head {
                        buf: [0; FRAME_HEAD_BYTES],
                        have: 0,
                    };
                }
                Ok(&input[n..])
            }
            State::Opaque => {
                out.extend_from_slice(input);
                Ok(&[])
            }
            State::Head { buf, have } => {
                let n = (FRAME_HEAD_BYTES - *have).min(input.len());
                buf[*have..*have + n].copy_from_slice(&input[..n]);
                *have += n;
                if *have == FRAME_HEAD_BYTES {
                    let raw = *buf;
                    self.on_head(FrameHead::parse(&raw), &raw, out)?;
                }
                Ok(&input[n..])
            }
            State::Copy { left } => {
                let n = (*left).min(input.len());
                out.extend_from_slice(&input[..n]);
                *left -= n;
                if *left == 0 {
                    self.state = next_head();
                }
                Ok(&input[n..])
            }
            State::Collect { head, payload } => {
                let n = (head.len - payload.len()).min(input.len());
                payload.extend_from_slice(&input[..n]);
                if payload.len() == head.len {
                    let head = *head;
                    let payload = std::mem::take(payload);
                    self.state = next_head();
                    self.on_header_frame(head, payload, out)?;
                }
                Ok(&input[n..])
            }
        }
    }

    /// A frame head is complete: decide how to treat its payload.
    fn on_head(
        &mut self,
        head: FrameHead,
        raw: &[u8; FRAME_HEAD_BYTES],
        out: &mut Vec<u8>,
    ) -> Result<(), ShimError> {
        if let Some(block) = &self.block {
            if head.kind != CONTINUATION || head.stream != block.stream {
                return Err(ShimError::Interleaved {
                    kind: head.kind,
                    stream: head.stream,
                    block_stream: block.stream,
                });
            }
        }
        match head.kind {
            HEADERS | CONTINUATION => {
                if head.kind == CONTINUATION && self.block.is_none() {
                    return Err(ShimError::StrayContinuation {
                        stream: head.stream,
                    });
                }
                let held = self.block.as_ref().map_or(0, |b| b.fragment.len());
                // Padding (up to 256 bytes) and priority may still be removed.
                if held + head.len > MAX_HEADER_BLOCK_BYTES + 256 + PRIORITY_BYTES {
                    return Err(ShimError::BlockTooLarge {
                        stream: head.stream,
                    });
                }
                if head.len == 0 {
                    self.state = next_head();
                    return self.on_header_frame(head, Vec::new(), out);
                }
                self.state = State::Collect {
                    head,
                    payload: Vec::with_capacity(head.len),
                };
            }
            _ => {
                // DATA and the control frames pass through as they arrive.
                out.extend_from_slice(raw);
                self.state = if head.len == 0 {
                    next_head()
                } else {
                    State::Copy { left: head.len }
                };
            }
        }
        Ok(())
    }

    /// A HEADERS or CONTINUATION frame is complete.
    fn on_header_frame(
        &mut self,
        head: FrameHead,
        payload: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), ShimError> {
        let block = match head.kind {
            HEADERS => {
                let fragment = header_fragment(&head, &payload)?;
                self.block.insert(Block {
                    stream: head.stream,
                    end_stream: head.flags & FLAG_END_STREAM != 0,
                    fragment: fragment.to_vec(),
                })
            }
            _ => {
                let Some(block) = self.block.as_mut() else {
                    return Err(ShimError::StrayContinuation {
                        stream: head.stream,
                    });
                };
                block.fragment.extend_from_slice(&payload);
                block
            }
        };
        if block.fragment.len() > MAX_HEADER_BLOCK_BYTES {
            return Err(ShimError::BlockTooLarge {
                stream: block.stream,
            });
        }
        if head.flags & FLAG_END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                let changed = self.reencode(&block)?;
                if self.rewriting || changed {
                    self.rewriting = true;
                    write_header_frames(block.stream, block.end_stream, &self.encoded, out);
                } else {
                    // The first block is clean: tonic reads the client's own
                    // HPACK from here on, so its table mirrors the client's.
                    write_header_frames(block.stream, block.end_stream, &block.fragment, out);
                    self.state = State::Opaque;
                }
            }
        }
        Ok(())
    }

    /// Decodes a complete header block, rewrites `:authority`, and leaves the
    /// re-encoded block in `self.encoded`. Returns whether `:authority` was
    /// rewritten.
    fn reencode(&mut self, block: &Block) -> Result<bool, ShimError> {
        self.encoded.clear();
        let (encoder, encoded) = (&mut self.encoder, &mut self.encoded);
        let mut list_bytes = 0usize;
        let mut changed = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                list_bytes = list_bytes.saturating_add(name.len() + value.len() + 32);
                if list_bytes > MAX_HEADER_LIST_BYTES {
                    return;
                }
                let value = match &*name {
                    b":authority" => {
                        let stripped = strip_scheme(&value);
                        changed |= stripped.len() != value.len();
                        stripped
                    }
                    _ => &value,
                };
                // Writing to a Vec cannot fail.
                let _ = encoder.encode_header_into((&name, value), encoded);
            })
            .map_err(|source| ShimError::Hpack {
                stream: block.stream,
                source,
            })?;
        if list_bytes > MAX_HEADER_LIST_BYTES {
            return Err(ShimError::ListTooLarge {
                stream: block.stream,
            });
        }
        Ok(changed)
    }
}

fn next_head() -> State {
    State::Head {
        buf: [0; FRAME_HEAD_BYTES],
        have: 0,
    }
}

/// The header block fragment of a HEADERS frame: its payload without padding
/// and priority.
fn header_fragment<'a>(head: &FrameHead, payload: &'a [u8]) -> Result<&'a [u8], ShimError> {
    let bad = || ShimError::BadPadding {
        stream: head.stream,
    };
    let mut body = payload;
    let mut pad = 0;
    if head.flags & FLAG_PADDED != 0 {
        let (&p, rest) = body.split_first().ok_or_else(bad)?;
        pad = usize::from(p);
        body = rest;
    }
    if head.flags & FLAG_PRIORITY != 0 {
        body = body.get(PRIORITY_BYTES..).ok_or_else(bad)?;
    }
    let keep = body.len().checked_sub(pad).ok_or_else(bad)?;
    Ok(&body[..keep])
}

/// Frames an encoded header block as HEADERS then CONTINUATION frames.
fn write_header_frames(stream: u32, end_stream: bool, block: &[u8], out: &mut Vec<u8>) {
    let mut chunks = block.chunks(MAX_FRAME_PAYLOAD_BYTES).peekable();
    let mut kind = HEADERS;
    let mut flags = if end_stream { FLAG_END_STREAM } else { 0 };
    loop {
        let chunk = chunks.next().unwrap_or(&[]);
        let last = chunks.peek().is_none();
        if last {
            flags |= FLAG_END_HEADERS;
        }
        FrameHead {
            len: chunk.len(),
            kind,
            flags,
            stream,
        }
        .write(out);
        out.extend_from_slice(chunk);
        if last {
            return;
        }
        kind = CONTINUATION;
        flags = 0;
    }
}

/// `http://host:port/path` becomes `host:port`; a value without a scheme is
/// returned as it is.
pub fn strip_scheme(value: &[u8]) -> &[u8] {
    let rest = ["http://", "https://"].iter().find_map(|scheme| {
        let s = scheme.as_bytes();
        (value.len() >= s.len() && value[..s.len()].eq_ignore_ascii_case(s))
            .then(|| &value[s.len()..])
    });
    match rest {
        Some(rest) => {
            let end = rest
                .iter()
                .position(|b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len());
            &rest[..end]
        }
        None => value,
    }
}

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

/// Relays one connection until either side is done with it. `first` is what
/// [`sniff`] already read from the client.
async fn relay(tcp: TcpStream, first: Vec<u8>, pipe: DuplexStream) {
    let (tcp_rd, tcp_wr) = tcp.into_split();
    let (pipe_rd, pipe_wr) = tokio::io::split(pipe);
    let up = client_to_server(first, tcp_rd, pipe_wr);
    let down = server_to_client(pipe_rd, tcp_wr);
    tokio::pin!(up, down);
    tokio::select! {
        res = &mut up => match res {
            // The client finished sending; let the server finish answering.
            Ok(()) => {
                let _ = down.await;
            }
            Err(e) => tracing::debug!(error = %e, "closing a client connection"),
        },
        // The server closed the connection; nothing more will be read.
        _ = &mut down => {}
    }
}

/// Why a relay stopped early.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Shim(#[from] ShimError),
}

async fn client_to_server(
    first: Vec<u8>,
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> Result<(), RelayError> {
    let mut rewriter = Rewriter::new();
    let mut buf = vec![0; READ_BYTES];
    let mut out = Vec::with_capacity(READ_BYTES);
    rewriter.feed(&first, &mut out)?;
    to.write_all(&out).await?;
    out.clear();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        rewriter.feed(&buf[..n], &mut out)?;
        to.write_all(&out).await?;
        out.clear();
    }
}

async fn server_to_client(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    tokio::io::copy(&mut from, &mut to).await?;
    to.shutdown().await
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frame as the test builds or parses it.
    #[derive(Debug, PartialEq)]
    struct Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameHead {
            len: payload.len(),
            kind,
            flags,
            stream,
        }
        .write(&mut out);
        out.extend_from_slice(payload);
        out
    }

    fn parse_frames(mut bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let head = FrameHead::parse(bytes[..FRAME_HEAD_BYTES].try_into().unwrap());
            let end = FRAME_HEAD_BYTES + head.len;
            frames.push(Frame {
                kind: head.kind,
                flags: head.flags,
                stream: head.stream,
                payload: bytes[FRAME_HEAD_BYTES..end].to_vec(),
            });
            bytes = &bytes[end..];
        }
        frames
    }

    /// What tonic would see: the rewriter's output after the preface, header
    /// blocks decoded by a decoder that lives as long as the connection.
    struct Server {
        decoder: Decoder<'static>,
    }

    /// A frame as tonic would see it, header blocks reassembled and decoded.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Headers {
            stream: u32,
            end_stream: bool,
            fields: Vec<(String, String)>,
        },
        Other(Frame),
    }

    impl Server {
        fn new() -> Server {
            Server {
                decoder: Decoder::new(),
            }
        }

        fn see(&mut self, out: &[u8]) -> Vec<Seen> {
            let mut seen = Vec::new();
            let mut block: Option<(u32, bool, Vec<u8>)> = None;
            for f in parse_frames(out) {
                assert!(
                    f.payload.len() <= MAX_FRAME_PAYLOAD_BYTES,
                    "oversized frame"
                );
                match f.kind {
                    HEADERS => {
                        assert!(block.is_none());
                        assert_eq!(f.flags & (FLAG_PADDED | FLAG_PRIORITY), 0);
                        block = Some((f.stream, f.flags & FLAG_END_STREAM != 0, f.payload));
                    }
                    CONTINUATION => block.as_mut().unwrap().2.extend_from_slice(&f.payload),
                    _ => {
                        assert!(block.is_none());
                        seen.push(Seen::Other(f));
                        continue;
                    }
                }
                if f.flags & FLAG_END_HEADERS != 0 {
                    let (stream, end_stream, bytes) = block.take().unwrap();
                    let fields = self
                        .decoder
                        .decode(&bytes)
                        .unwrap()
                        .into_iter()
                        .map(|(n, v)| {
                            (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                        })
                        .collect();
                    seen.push(Seen::Headers {
                        stream,
                        end_stream,
                        fields,
                    });
                }
            }
            assert!(block.is_none(), "unterminated header block");
            seen
        }
    }

    fn request(authority: &str) -> Vec<(String, String)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.Maintenance/Status"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-go/1.26.0"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
    }

    fn encode(encoder: &mut Encoder<'static>, fields: &[(String, String)]) -> Vec<u8> {
        encoder.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    /// Runs `input` through a fresh rewriter, `chunk` bytes at a time, and
    /// returns the output without the preface.
    fn rewrite(input: &[u8], chunk: usize) -> Result<Vec<u8>, ShimError> {
        let mut r = Rewriter::new();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            r.feed(c, &mut out)?;
        }
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        Ok(out.split_off(PREFACE.len()))
    }

    #[test]
    fn strips_the_scheme_from_authority() {
        assert_eq!(strip_scheme(b"http://127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(strip_scheme(b"HTTPS://h:1/x?y"), b"h:1");
        assert_eq!(strip_scheme(b"127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(strip_scheme(b"http:/"), b"http:/");
        assert_eq!(strip_scheme(b"http://"), b"");
    }

    /// The etcdctl case: a header block split across HEADERS and two
    /// CONTINUATION frames, then a DATA frame; then a second request whose
    /// header block refers to the client's dynamic table.
    #[test]
    fn rewrites_a_block_split_across_continuation_frames() {
        // As grpc-go does: every literal enters the client's dynamic table.
        let lit = |name_index: u8, value: &str| {
            let mut b = vec![0x40 | name_index, value.len() as u8];
            b.extend(value.as_bytes());
            b
        };
        let mut first = vec![0x83, 0x86]; // :method POST, :scheme http
        first.extend(lit(4, "/etcdserverpb.Maintenance/Status"));
        first.extend(lit(1, "http://127.0.0.1:2379"));
        first.extend(lit(31, "application/grpc"));
        first.extend(lit(58, "grpc-go/1.26.0"));
        first.extend([0x40, 2, b't', b'e', 8]);
        first.extend(b"trailers");
        // The same request again, from the dynamic table (newest entry is 62).
        let second = [
            0x83,
            0x86,
            0x80 | 66,
            0x80 | 65,
            0x80 | 64,
            0x80 | 63,
            0x80 | 62,
        ];
        let (a, rest) = first.split_at(10);
        let (b, c) = rest.split_at(20);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0x10, 0])); // SETTINGS
        input.extend(frame(HEADERS, 0, 1, a));
        input.extend(frame(CONTINUATION, 0, 1, b));
        input.extend(frame(CONTINUATION, FLAG_END_HEADERS, 1, c));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));
        input.extend(frame(
            HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            &second,
        ));

        for chunk in [1, 7, input.len()] {
            let seen = Server::new().see(&rewrite(&input, chunk).unwrap());
            assert_eq!(
                seen,
                vec![
                    Seen::Other(Frame {
                        kind: 0x4,
                        flags: 0,
                        stream: 0,
                        payload: vec![0, 3, 0, 0, 0x10, 0],
                    }),
                    Seen::Headers {
                        stream: 1,
                        end_stream: false,
                        fields: request("127.0.0.1:2379"),
                    },
                    Seen::Other(Frame {
                        kind: 0x0,
                        flags: FLAG_END_STREAM,
                        stream: 1,
                        payload: b"\0\0\0\0\0".to_vec(),
                    }),
                    Seen::Headers {
                        stream: 3,
                        end_stream: true,
                        fields: request("127.0.0.1:2379"),
                    },
                ],
                "fed {chunk} bytes at a time"
            );
        }
    }

    /// A padded HEADERS frame with priority and an authority without a scheme:
    /// padding and priority go, the fields stay as they were.
    #[test]
    fn drops_padding_and_priority_and_keeps_a_plain_authority() {
        let mut client = Encoder::new();
        let block = encode(&mut client, &request("127.0.0.1:2379"));
        let mut payload = vec![4]; // pad length
        payload.extend([0x80, 0, 0, 0, 15]); // exclusive dependency on 0, weight 16
        payload.extend(&block);
        payload.extend([0; 4]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS | FLAG_END_STREAM,
            5,
            &payload,
        ));
        let seen = Server::new().see(&rewrite(&input, 3).unwrap());
        assert_eq!(
            seen,
            vec![Seen::Headers {
                stream: 5,
                end_stream: true,
                fields: request("127.0.0.1:2379"),
            }]
        );
    }

    /// A connection whose first block needs no rewrite: that block goes on
    /// with the client's own HPACK bytes, and every byte after it passes
    /// through as sent, even a later block with a URL for `:authority`.
    #[test]
    fn passes_a_clean_connection_through_after_its_first_block() {
        let mut client = Encoder::new();
        let first = encode(&mut client, &request("127.0.0.1:2379"));
        let second = encode(&mut client, &request("127.0.0.1:2379"));
        let third = encode(&mut client, &request("http://127.0.0.1:2379"));
        let rest = [
            frame(HEADERS, FLAG_END_HEADERS, 3, &second),
            frame(0x0, FLAG_END_STREAM, 3, b"data"),
            frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 5, &third),
        ]
        .concat();
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &first,
        ));
        input.extend(&rest);
        for chunk in [1, 7, 4096] {
            let out = rewrite(&input, chunk).unwrap();
            assert_eq!(
                out,
                [
                    frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &first),
                    rest.clone()
                ]
                .concat(),
                "fed {chunk} bytes at a time"
            );
            let seen = Server::new().see(&out);
            assert_eq!(seen.len(), 4);
            assert_eq!(
                seen[1],
                Seen::Headers {
                    stream: 3,
                    end_stream: false,
                    fields: request("127.0.0.1:2379"),
                }
            );
        }
    }

    /// A block larger than one frame is re-framed into frames of at most
    /// 16384 bytes.
    #[test]
    fn reframes_a_large_block() {
        let mut fields = request("https://example:1/");
        fields.push(("x-big".into(), "v".repeat(40_000)));
        let block = encode(&mut Encoder::new(), &fields);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &block[..30_000]));
        input.extend(frame(CONTINUATION, FLAG_END_HEADERS, 1, &block[30_000..]));
        let out = rewrite(&input, 4096).unwrap();
        assert_eq!(parse_frames(&out).len(), 3);
        fields[3].1 = "example:1".into();
        assert_eq!(
            Server::new().see(&out),
            vec![Seen::Headers {
                stream: 1,
                end_stream: false,
                fields,
            }]
        );
    }

    #[test]
    fn passes_a_connection_that_is_not_http2_through() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut out = Vec::new();
        Rewriter::new().feed(input, &mut out).unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn rejects_malformed_framing() {
        let block = encode(&mut Encoder::new(), &request("http://h:1"));
        let with = |frames: &[Vec<u8>]| {
            let mut input = PREFACE.to_vec();
            frames.iter().for_each(|f| input.extend(f));
            rewrite(&input, 5)
        };
        let interleaved = with(&[frame(HEADERS, 0, 1, &block), frame(0x0, 0, 1, b"x")]);
        assert!(matches!(interleaved, Err(ShimError::Interleaved { .. })));
        let other_stream = with(&[
            frame(HEADERS, 0, 1, &block),
            frame(CONTINUATION, FLAG_END_HEADERS, 3, b""),
        ]);
        assert!(matches!(other_stream, Err(ShimError::Interleaved { .. })));
        let stray = with(&[frame(CONTINUATION, FLAG_END_HEADERS, 1, &block)]);
        assert!(matches!(stray, Err(ShimError::StrayContinuation { .. })));
        let padding = with(&[frame(HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, &[9, 1])]);
        assert!(matches!(padding, Err(ShimError::BadPadding { .. })));
        let hpack = with(&[frame(HEADERS, FLAG_END_HEADERS, 1, &[0x80 | 70])]);
        assert!(matches!(hpack, Err(ShimError::Hpack { .. })));
        let table = with(&[frame(
            HEADERS,
            FLAG_END_HEADERS,
            1,
            &[0x3f, 0xe1, 0x3f, 0x82],
        )]);
        assert!(matches!(table, Err(ShimError::Hpack { .. })));
        let chunk = vec![0; MAX_FRAME_PAYLOAD_BYTES];
        let mut big = vec![frame(HEADERS, 0, 1, &chunk)];
        big.extend((0..70).map(|_| frame(CONTINUATION, 0, 1, &chunk)));
        assert!(matches!(with(&big), Err(ShimError::BlockTooLarge { .. })));
    }

    /// A small block may decode into a huge list by repeating an index.
    #[test]
    fn bounds_the_decoded_header_list() {
        let mut client = Encoder::new();
        let mut block = encode(&mut client, &[("x-a".into(), "v".repeat(3000))]);
        let again = encode(&mut client, &[("x-a".into(), "v".repeat(3000))]);
        assert_eq!(again.len(), 1);
        block.extend(std::iter::repeat_n(again[0], 400));
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &block));
        assert!(matches!(
            rewrite(&input, 1000),
            Err(ShimError::ListTooLarge { .. })
        ));
    }

    proptest! {
        /// Arbitrary bytes after the preface end in output or an error, never
        /// a panic.
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..64) {
            let mut input = PREFACE.to_vec();
            input.extend(body);
            let _ = rewrite(&input, chunk);
        }

        /// Well-framed input with random frame kinds and payloads: whatever is
        /// not a header frame comes out byte for byte.
        #[test]
        fn passes_other_frames_through(frames in proptest::collection::vec(
            (prop_oneof![Just(0u8), Just(2), Just(3), Just(6), Just(8)], any::<u8>(), 0u32..9,
             proptest::collection::vec(any::<u8>(), 0..300)), 0..20)) {
            let mut input = PREFACE.to_vec();
            for (kind, flags, stream, payload) in &frames {
                input.extend(frame(*kind, *flags, *stream, payload));
            }
            prop_assert_eq!(rewrite(&input, 13).unwrap(), input[PREFACE.len()..].to_vec());
        }
    }
}
