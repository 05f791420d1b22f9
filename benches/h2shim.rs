//! What the HTTP/2 shim in front of the client listeners costs.
//!
//! Serves a stub KV service (every call answers at once, no raft, no disk)
//! twice: once with plain tonic on a TCP listener, once through
//! `server::h2shim`. Then 2,000 sequential `Put`s through one `KvClient`
//! against each, after 200 to warm up, in alternating rounds, for small and
//! large values. The difference is the shim's cost per request: one extra
//! pass over every byte the client sends and an in-process pipe hop each way.
//!
//! With `CAIRN_BENCH_PORT` set, it also times the same Puts against a real
//! member listening on that local port, for scale (raft and the WAL's fsync
//! dominate there).
//!
//! ```text
//! cargo bench --bench h2shim
//! ```
// A benchmark measures wall-clock time: it needs the clock the core may not use.
#![allow(clippy::disallowed_methods)]

#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
fn main() {
    imp::main();
}

#[cfg(not(madsim))]
mod imp {
    use cairn::proto::etcdserverpb::kv_client::KvClient;
    use cairn::proto::etcdserverpb::kv_server::{Kv, KvServer};
    use cairn::proto::etcdserverpb::{
        CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
        PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
    };
    use hdrhistogram::Histogram;
    use std::time::Instant;
    use tonic::{Request, Response, Status};

    const PUTS: usize = 2_000;
    const WARMUP: usize = 200;
    const ROUNDS: usize = 3;
    const VALUE_BYTES: [usize; 2] = [100, 64 * 1024];

    struct Stub;

    #[tonic::async_trait]
    impl Kv for Stub {
        async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
            Ok(Response::new(RangeResponse::default()))
        }
        async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            Ok(Response::new(PutResponse::default()))
        }
        async fn delete_range(
            &self,
            _: Request<DeleteRangeRequest>,
        ) -> Result<Response<DeleteRangeResponse>, Status> {
            Ok(Response::new(DeleteRangeResponse::default()))
        }
        async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
            Ok(Response::new(TxnResponse::default()))
        }
        async fn compact(
            &self,
            _: Request<CompactionRequest>,
        ) -> Result<Response<CompactionResponse>, Status> {
            Ok(Response::new(CompactionResponse::default()))
        }
    }

    fn router() -> tonic::transport::server::Router<cairn::server::ClientLayers> {
        cairn::server::client_server_builder().add_service(KvServer::new(Stub))
    }

    /// Puts through one connection; the latency of each, in microseconds.
    async fn run(port: u16, value_bytes: usize) -> Histogram<u64> {
        let mut client = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let put = || PutRequest {
            key: bytes::Bytes::from_static(b"bench"),
            value: vec![b'v'; value_bytes].into(),
            ..Default::default()
        };
        for _ in 0..WARMUP {
            client.put(put()).await.expect("put");
        }
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        for _ in 0..PUTS {
            let start = Instant::now();
            client.put(put()).await.expect("put");
            let _ = hist.record(start.elapsed().as_micros() as u64);
        }
        hist
    }

    pub fn main() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let plain = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let shimmed = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let mut ports = vec![
                ("plain tonic", plain.local_addr().expect("addr").port()),
                ("through shim", shimmed.local_addr().expect("addr").port()),
            ];
            if let Some(port) = std::env::var("CAIRN_BENCH_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
            {
                ports.push(("cairn member", port));
            }
            tokio::spawn(router().serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(plain).with_nodelay(Some(true)),
            ));
            tokio::spawn(cairn::server::h2shim::serve(
                shimmed,
                router(),
                None,
                std::future::pending(),
            ));
            println!(
                "{:<13} {:>7} {:>5} {:>9} {:>8} {:>8} {:>8}",
                "server", "value", "round", "total ms", "mean us", "p50 us", "p99 us"
            );
            for value_bytes in VALUE_BYTES {
                for round in 1..=ROUNDS {
                    for &(name, port) in &ports {
                        let start = Instant::now();
                        let h = run(port, value_bytes).await;
                        let total = start.elapsed();
                        println!(
                            "{name:<13} {value_bytes:>7} {round:>5} {:>9.1} {:>8.1} {:>8} {:>8}",
                            total.as_secs_f64() * 1e3,
                            h.mean(),
                            h.value_at_quantile(0.5),
                            h.value_at_quantile(0.99)
                        );
                    }
                }
            }
        });
    }
}
