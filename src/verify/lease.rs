//! The lease clients of `cairn verify`, recording what the lease checker
//! (`cairn::check::lease`) judges; the simulator's lease workload
//! (`sim/src/runner/watch_lease.rs`) on the real clock.
//!
//! A lease client grants leases (TTL 5–10 s; a quarter with a client-chosen
//! ID), attaches its own keys (`<prefix>lease/<client>/<0..4>`) with puts,
//! keeps 60% of its leases alive every TTL/3 on a keep-alive stream and lets
//! the rest lapse (probing each once, 2 × TTL + 3 s after the grant),
//! revokes some, detaches keys with a put without a lease, reads its keys,
//! and now and then puts with a lease it knows is gone. The lease keys are
//! under the run's prefix, so the prefix watchers see their deletions.

use super::kv::{failed_ret, pick};
use super::Recorder;
use cairn::check::history::{Kv, LeaseCall, LeaseOp, LeaseRet, Ret};
use cairn::proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseRevokeRequest, PutRequest, RangeRequest,
};
use cairn::rng::SplitMix64;
use futures::channel::mpsc::{unbounded, UnboundedSender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codec::Streaming;
use tonic::transport::Channel;

/// Keys each lease client owns.
pub(crate) const LEASE_KEYS: usize = 4;

pub(crate) fn lease_key(prefix: &str, client: u32, i: usize) -> String {
    format!("{prefix}lease/{client}/{i}")
}

/// A lease the client holds.
struct Held {
    id: i64,
    ttl: i64,
    keep: bool,
    granted: Instant,
    next_keepalive: Instant,
}

/// How a failed lease request is recorded.
fn lease_failed(status: &tonic::Status) -> LeaseRet {
    let msg = status.message();
    if failed_ret(status) == Ret::Failed
        || status.code() == tonic::Code::NotFound
        || msg.contains("lease not found")
        || msg.contains("lease already exists")
    {
        LeaseRet::Refused(msg.to_owned())
    } else {
        LeaseRet::Unknown
    }
}

type KeepAlive = (
    UnboundedSender<LeaseKeepAliveRequest>,
    Streaming<LeaseKeepAliveResponse>,
);

/// One keep-alive on the client's stream (opened if needed).
async fn keep_alive(ch: &Channel, stream: &mut Option<KeepAlive>, id: i64) -> LeaseRet {
    if stream.is_none() {
        let (tx, rx) = unbounded();
        // The first request goes in before the stream opens: grpc-go sends
        // no headers before it has something to say.
        let _ = tx.unbounded_send(LeaseKeepAliveRequest { id });
        let mut client = LeaseClient::new(ch.clone());
        let call = client.lease_keep_alive(rx);
        let mut s = match tokio::time::timeout(Duration::from_secs(3), call).await {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(status)) => return lease_failed(&status),
            Err(_) => return LeaseRet::Unknown,
        };
        return match tokio::time::timeout(Duration::from_secs(3), s.message()).await {
            Ok(Ok(Some(r))) if r.id == id => {
                *stream = Some((tx, s));
                LeaseRet::Alive { ttl: r.ttl }
            }
            _ => LeaseRet::Unknown,
        };
    }
    let Some((tx, s)) = stream.as_mut() else {
        return LeaseRet::Unknown;
    };
    if tx.unbounded_send(LeaseKeepAliveRequest { id }).is_err() {
        *stream = None;
        return LeaseRet::Refused("keep-alive stream closed".into());
    }
    match tokio::time::timeout(Duration::from_secs(3), s.message()).await {
        Ok(Ok(Some(r))) if r.id == id => LeaseRet::Alive { ttl: r.ttl },
        _ => {
            *stream = None;
            LeaseRet::Unknown
        }
    }
}

/// A linearizable read of one key, as a lease op's return.
pub(crate) async fn read(ch: &Channel, key: &str) -> LeaseRet {
    let req = RangeRequest {
        key: key.to_owned().into_bytes().into(),
        ..Default::default()
    };
    let mut client = KvClient::new(ch.clone());
    match tokio::time::timeout(Duration::from_secs(3), client.range(req)).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            LeaseRet::Get {
                revision: r.header.map_or(0, |h| h.revision),
                kv: r.kvs.first().map(|kv| {
                    let value = String::from_utf8_lossy(&kv.value).into_owned();
                    let k = Kv {
                        value,
                        mod_revision: kv.mod_revision,
                        create_revision: kv.create_revision,
                        version: kv.version,
                    };
                    (k, kv.lease)
                }),
            }
        }
        Ok(Err(status)) => lease_failed(&status),
        Err(_) => LeaseRet::Unknown,
    }
}

async fn grant(ch: &Channel, id: i64, ttl: i64) -> LeaseRet {
    let mut client = LeaseClient::new(ch.clone());
    let call = client.lease_grant(LeaseGrantRequest { ttl, id });
    match tokio::time::timeout(Duration::from_secs(3), call).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            if r.error.is_empty() {
                LeaseRet::Granted {
                    id: r.id,
                    ttl: r.ttl,
                    revision: r.header.map_or(0, |h| h.revision),
                }
            } else {
                LeaseRet::Refused(r.error)
            }
        }
        Ok(Err(status)) => lease_failed(&status),
        Err(_) => LeaseRet::Unknown,
    }
}

async fn revoke(ch: &Channel, id: i64) -> LeaseRet {
    let mut client = LeaseClient::new(ch.clone());
    let call = client.lease_revoke(LeaseRevokeRequest { id });
    match tokio::time::timeout(Duration::from_secs(3), call).await {
        Ok(Ok(r)) => LeaseRet::Revoked {
            revision: r.into_inner().header.map_or(0, |h| h.revision),
        },
        Ok(Err(status)) => lease_failed(&status),
        Err(_) => LeaseRet::Unknown,
    }
}

async fn put(ch: &Channel, key: &str, value: &str, lease: i64) -> LeaseRet {
    let req = PutRequest {
        key: key.to_owned().into_bytes().into(),
        value: value.to_owned().into_bytes().into(),
        lease,
        ..Default::default()
    };
    let mut client = KvClient::new(ch.clone());
    match tokio::time::timeout(Duration::from_secs(3), client.put(req)).await {
        Ok(Ok(r)) => LeaseRet::Put {
            revision: r.into_inner().header.map_or(0, |h| h.revision),
        },
        Ok(Err(status)) => lease_failed(&status),
        Err(_) => LeaseRet::Unknown,
    }
}

/// What the client does next, given what it holds.
fn next_call(
    rng: &mut SplitMix64,
    held: &mut [Held],
    gone: &[i64],
    prefix: &str,
    id: u32,
    n: u64,
    tag: i64,
) -> Option<LeaseCall> {
    let now = Instant::now();
    let due = held
        .iter()
        .position(|h| h.keep && h.next_keepalive <= now)
        .or_else(|| {
            held.iter().position(|h| {
                !h.keep && now > h.granted + Duration::from_secs(2 * h.ttl as u64 + 3)
            })
        });
    if let Some(i) = due {
        return Some(LeaseCall::KeepAlive { id: held[i].id });
    }
    let key = lease_key(prefix, id, pick(rng, LEASE_KEYS));
    match pick(rng, 20) {
        0..=2 if held.len() < 3 => Some(LeaseCall::Grant {
            id: if pick(rng, 4) == 0 {
                tag | (i64::from(id) << 24) | (n as i64 & 0xff_ffff)
            } else {
                0
            },
            ttl: 5 + pick(rng, 6) as i64,
        }),
        3..=10 => {
            let lease = match pick(rng, 10) {
                0 => 0,
                1 if !gone.is_empty() => gone[pick(rng, gone.len())],
                _ if !held.is_empty() => held[pick(rng, held.len())].id,
                _ => 0,
            };
            Some(LeaseCall::Put {
                key,
                value: format!("l{id}-{n}"),
                lease,
            })
        }
        11..=15 => Some(LeaseCall::Get { key }),
        16 if !held.is_empty() => Some(LeaseCall::Revoke {
            id: held[pick(rng, held.len())].id,
        }),
        17 if !held.is_empty() => {
            // Stop keeping one alive: let it lapse.
            let i = pick(rng, held.len());
            held[i].keep = false;
            None
        }
        _ => None,
    }
}

/// A lease client, until `until`.
pub(crate) async fn lease_loop(
    id: u32,
    rec: Arc<Recorder>,
    channels: Vec<Channel>,
    prefix: String,
    seed: u64,
    until: Instant,
) {
    let mut rng = SplitMix64::new(seed);
    // Client-chosen IDs: a run's own high bits, so runs do not collide.
    let tag = ((rng.next_u64() & 0x3fff) as i64 + 1) << 40;
    let mut target = pick(&mut rng, channels.len());
    let mut ka: Option<KeepAlive> = None;
    let mut held: Vec<Held> = Vec::new();
    let mut gone: Vec<i64> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let Some(call) = next_call(&mut rng, &mut held, &gone, &prefix, id, n, tag) else {
            tokio::time::sleep(Duration::from_millis(20 + pick(&mut rng, 180) as u64)).await;
            continue;
        };
        let ch = &channels[target];
        let invoke = rec.now();
        let ret = match &call {
            LeaseCall::KeepAlive { id: lease } => keep_alive(ch, &mut ka, *lease).await,
            LeaseCall::Grant { id: lease, ttl } => grant(ch, *lease, *ttl).await,
            LeaseCall::Revoke { id: lease } => revoke(ch, *lease).await,
            LeaseCall::Put { key, value, lease } => put(ch, key, value, *lease).await,
            LeaseCall::Get { key } => read(ch, key).await,
        };
        let complete = (ret != LeaseRet::Unknown).then(|| rec.now());
        if ret == LeaseRet::Unknown
            || matches!(&ret, LeaseRet::Refused(m) if m.contains("no leader") || m.contains("stream"))
        {
            ka = None;
            target = pick(&mut rng, channels.len());
        }
        match (&call, &ret) {
            (LeaseCall::Grant { .. }, LeaseRet::Granted { id: lease, ttl, .. }) => {
                let now = Instant::now();
                held.push(Held {
                    id: *lease,
                    ttl: *ttl,
                    keep: pick(&mut rng, 10) < 6,
                    granted: now,
                    next_keepalive: now + Duration::from_secs_f64(*ttl as f64 / 3.0),
                });
            }
            (LeaseCall::KeepAlive { id: lease }, _) => {
                if let Some(i) = held.iter().position(|h| h.id == *lease) {
                    if !held[i].keep || matches!(ret, LeaseRet::Alive { ttl: 0 }) {
                        gone.push(*lease);
                        held.remove(i);
                    } else {
                        let wait = if matches!(ret, LeaseRet::Alive { .. }) {
                            held[i].ttl as f64 / 3.0
                        } else {
                            0.3
                        };
                        held[i].next_keepalive = Instant::now() + Duration::from_secs_f64(wait);
                    }
                }
            }
            (LeaseCall::Revoke { id: lease }, _) => {
                held.retain(|h| h.id != *lease);
                gone.push(*lease);
            }
            _ => {}
        }
        rec.leases.lock().expect("lock").push(LeaseOp {
            client: id,
            invoke,
            complete,
            call,
            ret,
        });
        tokio::time::sleep(Duration::from_millis(10 + pick(&mut rng, 90) as u64)).await;
    }
}

/// After the run: every lease key read through every endpoint, so a key
/// that outlived its lease fails the lease check.
pub(crate) async fn final_reads(rec: &Recorder, channels: &[Channel], prefix: &str, clients: u32) {
    for (e, ch) in channels.iter().enumerate() {
        for c in 0..clients {
            for i in 0..LEASE_KEYS {
                let key = lease_key(prefix, c, i);
                let invoke = rec.now();
                let ret = read(ch, &key).await;
                if matches!(ret, LeaseRet::Get { .. }) {
                    let complete = Some(rec.now());
                    rec.leases.lock().expect("lock").push(LeaseOp {
                        client: 1_000_000 + e as u32,
                        invoke,
                        complete,
                        call: LeaseCall::Get { key },
                        ret,
                    });
                }
            }
        }
    }
}
