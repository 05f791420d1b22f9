//! `cairn verify --workload kubernetes`: what kube-apiserver does to etcd.
//!
//! - Updates are optimistic: a txn comparing the key's mod_revision with the
//!   one last read, putting on success and reading on failure
//!   (GuaranteedUpdate); creates compare with 0 (absent). They are the
//!   single-key compare-and-swaps the linearizability checker judges.
//! - Reflectors list the prefix in pages (limit 2: the first page at the
//!   current revision, the rest at that page's revision, each from the key
//!   after the last one), then watch the prefix from the list's revision + 1,
//!   and relist when the watch is canceled for compaction. A whole paged list
//!   is recorded as one range at its revision, so the multi-key checker
//!   judges it against the watchers' event log as one snapshot.
//! - A compactor compacts a little behind the head every `--compact-interval`
//!   (kube-apiserver does it every 5 minutes), so resumed watchers and paged
//!   lists meet compaction.

use super::kv::{failed_ret, kv_of};
use super::Recorder;
use cairn::check::history::{Kv, MultiCall, MultiOp, MultiRet, Ret};
use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::{CompactionRequest, RangeRequest};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Keys per page of a list.
const PAGE: i64 = 2;
/// How far behind the head the compactor compacts.
const COMPACT_BEHIND: i64 = 50;

/// One page: the header revision, the kvs, and whether more follow.
async fn page(
    client: &mut KvClient<Channel>,
    from: &str,
    end: &str,
    revision: i64,
) -> Result<(i64, Vec<(String, Kv)>, bool), tonic::Status> {
    let req = RangeRequest {
        key: from.to_owned().into_bytes().into(),
        range_end: end.to_owned().into_bytes().into(),
        revision,
        limit: PAGE,
        ..Default::default()
    };
    let r = client.range(req).await?.into_inner();
    let kvs = r
        .kvs
        .iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv_of(kv)))
        .collect();
    Ok((r.header.map_or(0, |h| h.revision), kvs, r.more))
}

/// A paged list of `[prefix, end)`, recorded as one multi-key range at the
/// first page's revision; returns that revision when the list completed.
pub(crate) async fn list(
    rec: &Recorder,
    client_id: u32,
    channel: Channel,
    prefix: &str,
    end: &str,
    timeout: Duration,
) -> Option<i64> {
    let mut client = KvClient::new(channel);
    let invoke = rec.now();
    let sent = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let (revision, mut kvs, mut more) = page(&mut client, prefix, end, 0).await?;
        while more {
            let Some((last, _)) = kvs.last() else { break };
            let from = format!("{last}\0");
            let (_, next, m) = page(&mut client, &from, end, revision).await?;
            kvs.extend(next);
            more = m;
        }
        Ok::<_, tonic::Status>((revision, kvs))
    })
    .await;
    let ret = match result {
        Ok(Ok((revision, kvs))) => {
            rec.head.fetch_max(revision, Ordering::Relaxed);
            rec.latency(sent.elapsed());
            MultiRet::Range { revision, kvs }
        }
        Ok(Err(status)) => {
            rec.error(&status);
            if failed_ret(&status) == Ret::Failed {
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
    let listed = match &ret {
        MultiRet::Range { revision, .. } => Some(*revision),
        _ => None,
    };
    rec.multi.lock().expect("lock").push(MultiOp {
        client: client_id,
        invoke,
        complete,
        call: MultiCall::Range {
            key: prefix.to_owned(),
            range_end: end.to_owned(),
            revision: 0,
        },
        ret,
    });
    listed
}

/// Compacts `COMPACT_BEHIND` revisions behind the head every `interval`
/// until `until`.
pub(crate) async fn compactor(
    rec: &Recorder,
    channels: Vec<Channel>,
    interval: Duration,
    until: Instant,
) {
    let mut i = 0;
    loop {
        tokio::time::sleep(interval).await;
        if Instant::now() >= until {
            return;
        }
        let revision = rec.head.load(Ordering::Relaxed) - COMPACT_BEHIND;
        if revision <= 1 {
            continue;
        }
        i += 1;
        let mut client = KvClient::new(channels[i % channels.len()].clone());
        let call = client.compact(CompactionRequest {
            revision,
            physical: false,
        });
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(_)) => *rec.compactions.lock().expect("lock") += 1,
            Ok(Err(status)) => rec.error(&status),
            Err(_) => rec.error_kind("timeout"),
        }
    }
}
