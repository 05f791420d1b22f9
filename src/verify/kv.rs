//! The key-value clients of `cairn verify`: single-key operations the
//! linearizability checker judges (put, get, delete, compare-and-swap), and
//! the final durability reads.
//!
//! Every operation is recorded with its invocation and completion time and
//! its outcome. An error that proves the request did nothing (etcd's "no
//! leader", "leader changed", an invalid argument) is [`Ret::Failed`]; any
//! other error, a timeout included, is [`Ret::Unknown`]: the request may
//! have been applied, at any time after it was sent.

use super::Recorder;
use cairn::check::history::{Call, Kv, Op, Ret};
use cairn::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::request_op::Request as OpRequest;
use cairn::proto::etcdserverpb::response_op::Response as OpResponse;
use cairn::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn::rng::SplitMix64;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// What a KV client needs to know.
#[derive(Clone)]
pub(crate) struct KvPlan {
    /// The run's keys (the prefix included).
    pub keys: Vec<String>,
    /// Send gets as serializable reads (which need not be linearizable: a
    /// way to prove the checker catches stale reads).
    pub serializable: bool,
    /// How long one request may take before its outcome is unknown.
    pub timeout: Duration,
    /// Kubernetes' mix: mostly optimistic-concurrency updates.
    pub kubernetes: bool,
}

pub(crate) fn kv_of(kv: &cairn::proto::mvccpb::KeyValue) -> Kv {
    Kv {
        value: String::from_utf8_lossy(&kv.value).into_owned(),
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
        version: kv.version,
    }
}

/// The outcome of a request that failed with `status`: failed only when
/// the error proves it was never applied.
pub(crate) fn failed_ret(status: &tonic::Status) -> Ret {
    let msg = status.message();
    let not_applied = msg == "etcdserver: no leader"
        || msg == "etcdserver: leader changed"
        || matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange
        );
    if not_applied {
        Ret::Failed
    } else {
        Ret::Unknown
    }
}

fn header_rev(h: Option<&cairn::proto::etcdserverpb::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision)
}

/// Sends `call` and turns the response into a [`Ret`].
pub(crate) async fn perform(
    client: &mut KvClient<Channel>,
    call: &Call,
    serializable: bool,
) -> Result<Ret, tonic::Status> {
    let key = bytes::Bytes::from(call.key().to_string());
    match call {
        Call::Put { value, .. } => {
            let req = PutRequest {
                key,
                value: value.clone().into(),
                ..Default::default()
            };
            let r = client.put(req).await?.into_inner();
            Ok(Ret::Put {
                revision: header_rev(r.header.as_ref()),
            })
        }
        Call::Get { .. } => {
            let req = RangeRequest {
                key,
                serializable,
                ..Default::default()
            };
            let r = client.range(req).await?.into_inner();
            Ok(Ret::Get {
                revision: header_rev(r.header.as_ref()),
                kv: r.kvs.first().map(kv_of),
            })
        }
        Call::Delete { .. } => {
            let req = DeleteRangeRequest {
                key,
                ..Default::default()
            };
            let r = client.delete_range(req).await?.into_inner();
            Ok(Ret::Delete {
                revision: header_rev(r.header.as_ref()),
                deleted: r.deleted,
            })
        }
        Call::Cas {
            expect_mod_revision,
            value,
            ..
        } => {
            let r = client
                .txn(cas_txn(key, *expect_mod_revision, value))
                .await?
                .into_inner();
            let kv = match r.responses.first().and_then(|o| o.response.as_ref()) {
                Some(OpResponse::ResponseRange(rr)) => rr.kvs.first().map(kv_of),
                _ => None,
            };
            Ok(Ret::Cas {
                revision: header_rev(r.header.as_ref()),
                succeeded: r.succeeded,
                kv,
            })
        }
    }
}

/// If `key`'s mod_revision is `expect` then put `value`, else get `key`.
fn cas_txn(key: bytes::Bytes, expect: i64, value: &str) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            key: key.clone(),
            target: CompareTarget::Mod as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::ModRevision(expect)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(OpRequest::RequestPut(PutRequest {
                key: key.clone(),
                value: value.to_owned().into(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(OpRequest::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    }
}

/// Sends `call` through `channel` within `timeout` and records it.
pub(crate) async fn record(
    rec: &Recorder,
    client_id: u32,
    channel: Channel,
    call: Call,
    plan: &KvPlan,
) -> Ret {
    let mut client = KvClient::new(channel);
    let invoke = rec.now();
    let sent = Instant::now();
    let ret =
        match tokio::time::timeout(plan.timeout, perform(&mut client, &call, plan.serializable))
            .await
        {
            Ok(Ok(ret)) => ret,
            Ok(Err(status)) => {
                rec.error(&status);
                failed_ret(&status)
            }
            Err(_) => {
                rec.error_kind("timeout");
                Ret::Unknown
            }
        };
    let complete = (!matches!(ret, Ret::Unknown)).then(|| rec.now());
    if let Ret::Put { revision }
    | Ret::Get { revision, .. }
    | Ret::Delete { revision, .. }
    | Ret::Cas { revision, .. } = ret
    {
        rec.head
            .fetch_max(revision, std::sync::atomic::Ordering::Relaxed);
    }
    if complete.is_some() && ret != Ret::Failed {
        rec.latency(sent.elapsed());
    }
    rec.history.lock().expect("lock").push(Op {
        client: client_id,
        invoke,
        complete,
        call,
        ret: ret.clone(),
    });
    ret
}

/// One client: random operations on random endpoints until `until`.
pub(crate) async fn client_loop(
    id: u32,
    rec: Arc<Recorder>,
    channels: Vec<Channel>,
    plan: KvPlan,
    seed: u64,
    until: Instant,
) {
    let mut rng = SplitMix64::new(seed);
    let mut seen: BTreeMap<String, i64> = BTreeMap::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let key = plan.keys[pick(&mut rng, plan.keys.len())].clone();
        let value = format!("c{id}-{n}");
        let choice = pick(&mut rng, 10);
        let call = match choice {
            // kube-apiserver never puts blindly: its updates and creates
            // are compare-and-swaps, its deletes are rare.
            _ if plan.kubernetes && choice < 6 => Call::Cas {
                expect_mod_revision: seen.get(&key).copied().unwrap_or(0),
                key,
                value,
            },
            _ if plan.kubernetes && choice < 9 => Call::Get { key },
            0..=2 => Call::Put { key, value },
            3..=5 => Call::Get { key },
            6 => Call::Delete { key },
            _ => Call::Cas {
                expect_mod_revision: seen.get(&key).copied().unwrap_or(0),
                key,
                value,
            },
        };
        let channel = channels[pick(&mut rng, channels.len())].clone();
        let ret = record(&rec, id, channel, call.clone(), &plan).await;
        if let Ret::Get { kv, .. } | Ret::Cas { kv, .. } = &ret {
            seen.insert(
                call.key().to_owned(),
                kv.as_ref().map_or(0, |k| k.mod_revision),
            );
        }
        if matches!(ret, Ret::Unknown | Ret::Failed) {
            // Let a failing-over cluster settle rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// After the run: every key read linearizably through every endpoint, the
/// reads joining the history, so an acknowledged write that was lost fails
/// the linearizability check (durability). Retries each read a few times
/// while the cluster recovers.
pub(crate) async fn durability_reads(rec: &Recorder, channels: &[Channel], plan: &KvPlan) -> usize {
    let plan = KvPlan {
        serializable: false,
        ..plan.clone()
    };
    let mut done = 0;
    for (e, channel) in channels.iter().enumerate() {
        for key in &plan.keys {
            for _attempt in 0..5 {
                let call = Call::Get { key: key.clone() };
                let client = 1_000_000 + e as u32;
                match record(rec, client, channel.clone(), call, &plan).await {
                    Ret::Get { .. } => {
                        done += 1;
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
    }
    done
}

/// A number in `0..n` (n > 0).
pub(crate) fn pick(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}
