//! `/version`, `/health`, `/livez` and `/readyz`, as etcd serves them.
//!
//! - `/version`: `{"etcdserver":"3.4.0","etcdcluster":"3.4.0"}`, the etcd API
//!   level cairn implements ([`VERSION`]), which clients read to choose their
//!   API path prefix. The cluster version is its major.minor with patch 0.
//! - `/health`: etcd's checks in etcd's order: a leader is known (skipped
//!   with `?serializable=true`), then a read with `limit: 1`, linearizable
//!   unless `?serializable=true`. Healthy is etcd 3.4's body exactly,
//!   `{"health":"true"}`; unhealthy is 503 with etcd 3.5's reason added,
//!   `{"health":"false","reason":"RAFT NO LEADER"}` (3.4 gives no reason).
//!   Before both, as etcd, the member's alarms: an active one makes it
//!   `{"health":"false","reason":"ALARM NOSPACE"}` (or `ALARM CORRUPT`)
//!   unless `?exclude=NOSPACE` (or `CORRUPT`) names it. The alarms come from
//!   `Maintenance.Status`'s `errors`, the member's own view, so the check
//!   works without a leader as etcd's does.
//! - `/metrics`: [`crate::metrics`] in Prometheus's text format.
//! - `/livez` (a serializable read) and `/readyz` (no CORRUPT alarm, a
//!   serializable and a linearizable read): etcd 3.5.11's probes, `ok` or, with `?verbose`, one
//!   `[+]name ok` line per check first; a failure is 503 with the `[-]name
//!   failed: reason` lines; `?exclude=name` skips a check and `/livez/<name>`
//!   runs one. The checks run in a fixed order (etcd's come from a Go map).
//!
//! Every check goes through the same services as gRPC (`Maintenance.Status`
//! for the leader, `KV.Range` for the reads).

use super::{go_http_error, method_not_allowed, not_found_page, query_has, query_values, respond};
use super::{Body, HttpApi};
use crate::proto::etcdserverpb::{
    kv_server::Kv, maintenance_server::Maintenance, RangeRequest, StatusRequest,
};
use crate::server::services::{KvService, MaintenanceService, VERSION};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

/// `GET /version`.
pub fn version(req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return method_not_allowed(Method::GET);
    }
    let body = Versions {
        etcdserver: VERSION,
        etcdcluster: &cluster_version(VERSION),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    respond(StatusCode::OK, "application/json", json)
}

/// The body of `/version`, fields in etcd's order.
#[derive(serde::Serialize)]
struct Versions<'a> {
    etcdserver: &'a str,
    etcdcluster: &'a str,
}

/// `3.4.7` → `3.4.0`.
fn cluster_version(server: &str) -> String {
    let mut parts = server.splitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}.0"),
        _ => server.to_string(),
    }
}

/// `GET /metrics`: Prometheus's text format, the status sampled first so
/// the raft gauges are current.
pub async fn metrics(api: &HttpApi, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return method_not_allowed(Method::GET);
    }
    sample_status(api).await;
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        crate::metrics::gather(),
    )
}

/// Feeds `Maintenance.Status` into the metrics.
pub async fn sample_status(api: &HttpApi) {
    let Ok(resp) = MaintenanceService(api.handle.clone())
        .status(tonic::Request::new(StatusRequest {}))
        .await
    else {
        return;
    };
    let s = resp.get_ref();
    let member_id = api.handle.member_id;
    crate::metrics::observe_status(&crate::metrics::StatusSample {
        member_id,
        leader: s.leader,
        is_leader: s.leader == member_id,
        commit: s.raft_index,
        applied: s.raft_applied_index,
        db_size: s.db_size.max(0) as u64,
        quota_backend_bytes: api.quota_backend_bytes,
    });
}

/// `GET /health`.
pub async fn health(api: &HttpApi, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return method_not_allowed(Method::GET);
    }
    let serializable = query_values(req, "serializable").first() == Some(&"true");
    let excluded = query_values(req, "exclude");
    match check_health(api, serializable, &excluded).await {
        Ok(()) => respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            r#"{"health":"true"}"#,
        ),
        Err(reason) => {
            let body = serde_json::json!({"health": "false", "reason": reason});
            go_http_error(StatusCode::SERVICE_UNAVAILABLE, &body.to_string())
        }
    }
}

/// The alarms active on this member, by etcd's names (`NOSPACE`,
/// `CORRUPT`), read from `Maintenance.Status`'s `errors`
/// (`memberID:N alarm:NAME `).
async fn active_alarms(api: &HttpApi) -> Result<(Vec<String>, u64), String> {
    let status = MaintenanceService(api.handle.clone())
        .status(tonic::Request::new(StatusRequest {}))
        .await
        .map_err(|e| e.message().to_string())?;
    let status = status.into_inner();
    let alarms = status
        .errors
        .iter()
        .filter_map(|e| e.split("alarm:").nth(1))
        .map(|a| a.trim().to_string())
        .collect();
    Ok((alarms, status.leader))
}

/// etcd's `/health` checks; the reason of the first that fails.
async fn check_health(api: &HttpApi, serializable: bool, excluded: &[&str]) -> Result<(), String> {
    let (alarms, leader) = active_alarms(api)
        .await
        .map_err(|e| format!("RANGE ERROR:{e}"))?;
    if let Some(alarm) = alarms.iter().find(|a| !excluded.contains(&a.as_str())) {
        return Err(match alarm.as_str() {
            "NOSPACE" | "CORRUPT" => format!("ALARM {alarm}"),
            _ => "ALARM UNKNOWN".into(),
        });
    }
    if !serializable && leader == 0 {
        return Err("RAFT NO LEADER".into());
    }
    read(api, serializable)
        .await
        .map_err(|e| format!("RANGE ERROR:{e}"))
}

/// The read etcd's probes make: one key, keys only.
async fn read(api: &HttpApi, serializable: bool) -> Result<(), String> {
    let req = RangeRequest {
        key: bytes::Bytes::from_static(b"health"),
        limit: 1,
        keys_only: true,
        serializable,
        ..Default::default()
    };
    KvService(api.handle.clone())
        .range(tonic::Request::new(req))
        .await
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// A named check of `/livez` or `/readyz`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
        }
    }

    async fn run(self, api: &HttpApi) -> Result<(), String> {
        match self {
            Check::DataCorruption => {
                match active_alarms(api).await?.0.iter().any(|a| a == "CORRUPT") {
                    true => Err("alarm activated: CORRUPT".into()),
                    false => Ok(()),
                }
            }
            _ => read(api, self == Check::SerializableRead).await,
        }
    }
}

/// The checks behind `/livez` and `/readyz`, in the order they run.
fn checks_of(kind: &str) -> &'static [Check] {
    match kind {
        "livez" => &[Check::SerializableRead],
        _ => &[
            Check::DataCorruption,
            Check::SerializableRead,
            Check::LinearizableRead,
        ],
    }
}

/// `GET /livez`, `/readyz`, and `/livez/<check>`, `/readyz/<check>`.
pub async fn livez_readyz(api: &HttpApi, req: &Request<Incoming>, path: &str) -> Response<Body> {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let kind = parts.next().unwrap_or("");
    let all = checks_of(kind);
    let run: Vec<Check> = match parts.next() {
        None => {
            let excluded = query_values(req, "exclude");
            all.iter()
                .copied()
                .filter(|c| !excluded.contains(&c.name()))
                .collect()
        }
        Some(one) => match all.iter().find(|c| c.name() == one) {
            Some(c) => vec![*c],
            None => return not_found_page(),
        },
    };
    if req.method() != Method::GET {
        return method_not_allowed(Method::GET);
    }
    let mut report = String::new();
    let mut failed = false;
    for check in run {
        match check.run(api).await {
            Ok(()) => report.push_str(&format!("[+]{} ok\n", check.name())),
            Err(e) => {
                failed = true;
                report.push_str(&format!("[-]{} failed: {e}\n", check.name()));
            }
        }
    }
    if failed {
        // etcd always gives the reasons of a failure.
        return go_http_error(StatusCode::SERVICE_UNAVAILABLE, &report);
    }
    let body = match query_has(req, "verbose") {
        true => format!("{report}ok\n"),
        false => "ok\n".to_string(),
    };
    let mut resp = respond(StatusCode::OK, "text/plain; charset=utf-8", body);
    resp.headers_mut().insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_version_is_major_minor_zero() {
        assert_eq!(cluster_version("3.4.23"), "3.4.0");
        assert_eq!(cluster_version("3.5.0"), "3.5.0");
        assert_eq!(cluster_version("dev"), "dev");
    }
}
