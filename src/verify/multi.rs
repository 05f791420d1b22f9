//! The multi-key clients of `cairn verify`: txns that compare the mod
//! revisions of two keys and put both, and ranges over all the txn keys at
//! the current revision or at one in the past, judged by
//! `cairn::check::multi` against the watchers' event log.
//!
//! They use their own keys (`<prefix>t0..`), which no single-key op touches,
//! so the per-key linearizability checker never sees a value it cannot
//! explain.

use super::kv::{failed_ret, kv_of, pick};
use super::Recorder;
use cairn::check::history::{MultiCall, MultiOp, MultiRet};
use cairn::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::request_op::Request as OpRequest;
use cairn::proto::etcdserverpb::response_op::Response as OpResponse;
use cairn::proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use cairn::rng::SplitMix64;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The multi-key clients' keys and range.
#[derive(Clone)]
pub(crate) struct MultiPlan {
    pub keys: Vec<String>,
    /// `[start, end)` holding exactly `keys`.
    pub range: (String, String),
    pub timeout: Duration,
}

fn txn(keys: &[(String, i64)], value: &str) -> TxnRequest {
    let bytes = |k: &String| bytes::Bytes::from(k.clone());
    TxnRequest {
        compare: keys
            .iter()
            .map(|(k, expect)| Compare {
                key: bytes(k),
                target: CompareTarget::Mod as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::ModRevision(*expect)),
                ..Default::default()
            })
            .collect(),
        success: keys
            .iter()
            .map(|(k, _)| RequestOp {
                request: Some(OpRequest::RequestPut(PutRequest {
                    key: bytes(k),
                    value: value.to_owned().into(),
                    ..Default::default()
                })),
            })
            .collect(),
        failure: keys
            .iter()
            .map(|(k, _)| RequestOp {
                request: Some(OpRequest::RequestRange(RangeRequest {
                    key: bytes(k),
                    ..Default::default()
                })),
            })
            .collect(),
    }
}

async fn perform(
    client: &mut KvClient<Channel>,
    call: &MultiCall,
) -> Result<MultiRet, tonic::Status> {
    match call {
        MultiCall::Range {
            key,
            range_end,
            revision,
        } => {
            let req = RangeRequest {
                key: key.clone().into_bytes().into(),
                range_end: range_end.clone().into_bytes().into(),
                revision: *revision,
                ..Default::default()
            };
            let r = client.range(req).await?.into_inner();
            Ok(MultiRet::Range {
                revision: r.header.map_or(0, |h| h.revision),
                kvs: r
                    .kvs
                    .iter()
                    .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv_of(kv)))
                    .collect(),
            })
        }
        MultiCall::Txn { keys, value } => {
            let r = client.txn(txn(keys, value)).await?.into_inner();
            let kvs = if r.succeeded {
                Vec::new()
            } else {
                keys.iter()
                    .zip(&r.responses)
                    .map(|((k, _), resp)| match &resp.response {
                        Some(OpResponse::ResponseRange(rr)) => {
                            (k.clone(), rr.kvs.first().map(kv_of))
                        }
                        _ => (k.clone(), None),
                    })
                    .collect()
            };
            Ok(MultiRet::Txn {
                revision: r.header.map_or(0, |h| h.revision),
                succeeded: r.succeeded,
                kvs,
            })
        }
    }
}

/// One multi-key client until `until`.
pub(crate) async fn client_loop(
    id: u32,
    rec: Arc<Recorder>,
    channels: Vec<Channel>,
    plan: MultiPlan,
    seed: u64,
    until: Instant,
) {
    let mut rng = SplitMix64::new(seed);
    // The mod revision each key had when this client last read it.
    let mut seen: BTreeMap<String, i64> = BTreeMap::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let call = match pick(&mut rng, 10) {
            0..=4 => {
                let a = pick(&mut rng, plan.keys.len());
                let b = (a + 1 + pick(&mut rng, plan.keys.len() - 1)) % plan.keys.len();
                let mut pair = [a, b];
                pair.sort_unstable();
                let keys = pair
                    .iter()
                    .map(|&i| {
                        let k = plan.keys[i].clone();
                        let expect = seen.get(&k).copied().unwrap_or(0);
                        (k, expect)
                    })
                    .collect();
                MultiCall::Txn {
                    keys,
                    value: format!("m{id}-{n}"),
                }
            }
            r => {
                let head = rec.head.load(Ordering::Relaxed);
                let revision = if r < 8 {
                    0
                } else {
                    (head - pick(&mut rng, 50) as i64).max(1)
                };
                MultiCall::Range {
                    key: plan.range.0.clone(),
                    range_end: plan.range.1.clone(),
                    revision,
                }
            }
        };
        let mut client = KvClient::new(channels[pick(&mut rng, channels.len())].clone());
        let invoke = rec.now();
        let sent = Instant::now();
        let ret = match tokio::time::timeout(plan.timeout, perform(&mut client, &call)).await {
            Ok(Ok(ret)) => ret,
            Ok(Err(status)) => {
                rec.error(&status);
                if failed_ret(&status) == cairn::check::history::Ret::Failed {
                    MultiRet::Failed
                } else {
                    MultiRet::Unknown
                }
            }
            Err(_) => {
                rec.error_kind("timeout");
                MultiRet::Unknown
            }
        };
        let complete = (ret != MultiRet::Unknown).then(|| rec.now());
        match (&call, &ret) {
            (MultiCall::Range { revision: 0, .. }, MultiRet::Range { revision, kvs }) => {
                rec.head.fetch_max(*revision, Ordering::Relaxed);
                rec.latency(sent.elapsed());
                for k in &plan.keys {
                    let m = kvs
                        .iter()
                        .find(|(key, _)| key == k)
                        .map_or(0, |(_, kv)| kv.mod_revision);
                    seen.insert(k.clone(), m);
                }
            }
            (_, MultiRet::Txn { revision, kvs, .. }) => {
                rec.head.fetch_max(*revision, Ordering::Relaxed);
                rec.latency(sent.elapsed());
                for (k, kv) in kvs {
                    seen.insert(k.clone(), kv.as_ref().map_or(0, |kv| kv.mod_revision));
                }
            }
            (_, MultiRet::Range { .. }) => rec.latency(sent.elapsed()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        if let (
            MultiCall::Txn { keys, .. },
            MultiRet::Txn {
                succeeded: true,
                revision,
                ..
            },
        ) = (&call, &ret)
        {
            for (k, _) in keys {
                seen.insert(k.clone(), *revision);
            }
        }
        rec.multi.lock().expect("lock").push(MultiOp {
            client: id,
            invoke,
            complete,
            call,
            ret,
        });
    }
}
