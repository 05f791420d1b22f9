//! etcd 3.5's server flags that cairn does not act on (yet), so that an etcd
//! deployment's unit file or manifest starts cairn unchanged.
//!
//! Each flag is accepted as etcd spells it (`--flag=value`, `--flag value`,
//! and for booleans `--flag` or `--flag=true|false`), also from its `ETCD_*`
//! variable, and has one of two fates:
//! - [`Fate::Warn`]: ignoring it changes nothing an etcd user relies on for
//!   safety (bbolt tuning, the v2 proxy, tracing). One startup warning says
//!   it has no effect and why.
//! - [`Fate::Refuse`]: ignoring it would be unsafe or would silently do the
//!   opposite of what was asked (TLS flags: serving plain text to someone who
//!   asked for TLS). cairn stops with an error that says so.
//!
//! Flags cairn implements are declared in `main.rs` with the rest of its
//! configuration; a flag moves from here to there when it starts working.
//! Unknown flags still fail, with clap's suggestion.

use clap::{Arg, ArgAction, ArgMatches, Command};

/// What cairn does with a flag it does not implement.
#[derive(Clone, Copy)]
pub enum Fate {
    /// Accepted with a startup warning giving the reason.
    Warn(&'static str),
    /// Refused at startup with this reason.
    Refuse(&'static str),
}

/// One etcd flag: its name, whether it is a boolean, its fate.
pub struct Flag {
    pub name: &'static str,
    pub boolean: bool,
    pub fate: Fate,
}

const fn warn(name: &'static str, boolean: bool, why: &'static str) -> Flag {
    Flag {
        name,
        boolean,
        fate: Fate::Warn(why),
    }
}

const fn refuse(name: &'static str, boolean: bool, why: &'static str) -> Flag {
    Flag {
        name,
        boolean,
        fate: Fate::Refuse(why),
    }
}

const BBOLT: &str =
    "cairn has no bbolt backend (its store is the WAL, snapshots and an in-memory MVCC index)";
const V2: &str = "cairn serves only the v3 API (etcd 3.5 deprecates v2 and 3.6 removes it)";
const PROXY: &str = "cairn has no v2 proxy mode (deprecated in etcd 3.5)";
const TLS: &str =
    "cairn does not implement it yet; ignoring it could let in connections it was meant to keep out";
const DISCOVERY: &str = "discovery is not implemented; bootstrap with --initial-cluster";
const TRACING: &str = "cairn has no OpenTelemetry tracing";
const HTTP: &str =
    "cairn's HTTP side has no such setting (HTTP/1.1 beside gRPC on the client URLs, one metrics level, etcd's default CORS, no pprof)";

const AUTH: &str = "cairn has no authentication yet; the flag matters only once auth is enabled";
const NO_MEMBERSHIP: &str = "cairn's membership is fixed at bootstrap (no member add/remove yet)";
const LOGGING: &str =
    "cairn does not rotate its log files (use logrotate with copytruncate, or the journal)";
const CORRUPTION: &str = "cairn has no corruption check against peers yet (every WAL record and snapshot is checksummed)";
const NOT_NEEDED: &str = "cairn has no such tuning knob";

/// Every etcd 3.5 flag cairn accepts without acting on it, and the etcd 3.4
/// flags that 3.5 removed (a 3.4 unit file keeps working).
pub const FLAGS: &[Flag] = &[
    // Member.
    warn(
        "wal-dir",
        false,
        "cairn keeps its WAL under --data-dir (data-dir/wal)",
    ),
    warn("initial-election-tick-advance", true, NOT_NEEDED),
    warn("backend-bbolt-freelist-type", false, BBOLT),
    warn("backend-batch-interval", false, BBOLT),
    warn("backend-batch-limit", false, BBOLT),
    warn(
        "grpc-keepalive-min-time",
        false,
        "cairn's HTTP/2 server (h2) answers client pings at any rate; it never sends too_many_pings",
    ),
    warn("socket-reuse-port", true, NOT_NEEDED),
    warn("socket-reuse-address", true, NOT_NEEDED),
    warn(
        "raft-read-timeout",
        false,
        "cairn's peer transport has its own timeouts",
    ),
    warn(
        "raft-write-timeout",
        false,
        "cairn's peer transport has its own timeouts",
    ),
    warn("listen-client-http-urls", false, HTTP),
    // Clustering.
    refuse("discovery", false, DISCOVERY),
    warn("discovery-fallback", false, DISCOVERY),
    warn("discovery-proxy", false, DISCOVERY),
    refuse("discovery-srv", false, DISCOVERY),
    warn("discovery-srv-name", false, DISCOVERY),
    warn("strict-reconfig-check", true, NO_MEMBERSHIP),
    warn(
        "pre-vote",
        true,
        "cairn always runs raft with pre-vote and check-quorum",
    ),
    warn("enable-v2", true, V2),
    warn("v2-deprecation", false, V2),
    warn("experimental-enable-v2v3", false, V2),
    // Security: refused, since ignoring them would serve plain text.
    refuse("client-cert-file", false, TLS),
    refuse("client-key-file", false, TLS),
    refuse("client-crl-file", false, TLS),
    refuse("client-cert-allowed-hostname", false, TLS),
    refuse("peer-client-cert-file", false, TLS),
    refuse("peer-client-key-file", false, TLS),
    refuse("peer-cert-allowed-cn", false, TLS),
    refuse("peer-cert-allowed-hostname", false, TLS),
    refuse("peer-crl-file", false, TLS),
    warn(
        "experimental-peer-skip-client-san-verification",
        true,
        "cairn does not check a connecting peer's certificate names against its address yet (it verifies the chain only), so there is nothing to skip",
    ),
    warn("cors", false, HTTP),
    warn("host-whitelist", false, HTTP),
    // Auth.
    warn("auth-token", false, AUTH),
    warn("bcrypt-cost", false, AUTH),
    warn("auth-token-ttl", false, AUTH),
    // Profiling and monitoring.
    warn("enable-pprof", true, HTTP),
    warn("metrics", false, HTTP),
    // Logging.
    warn("enable-log-rotation", true, LOGGING),
    warn("log-rotation-config-json", false, LOGGING),
    // Distributed tracing.
    warn("experimental-enable-distributed-tracing", true, TRACING),
    warn("experimental-distributed-tracing-address", false, TRACING),
    warn(
        "experimental-distributed-tracing-service-name",
        false,
        TRACING,
    ),
    warn(
        "experimental-distributed-tracing-instance-id",
        false,
        TRACING,
    ),
    warn(
        "experimental-distributed-tracing-sampling-rate",
        false,
        TRACING,
    ),
    // The v2 proxy.
    warn("proxy", false, PROXY),
    warn("proxy-failure-wait", false, PROXY),
    warn("proxy-refresh-interval", false, PROXY),
    warn("proxy-dial-timeout", false, PROXY),
    warn("proxy-write-timeout", false, PROXY),
    warn("proxy-read-timeout", false, PROXY),
    // Experimental.
    warn("experimental-initial-corrupt-check", true, CORRUPTION),
    warn("experimental-corrupt-check-time", false, CORRUPTION),
    warn("experimental-compact-hash-check-enabled", true, CORRUPTION),
    warn("experimental-compact-hash-check-time", false, CORRUPTION),
    warn(
        "experimental-enable-lease-checkpoint",
        true,
        "cairn restarts a lease's countdown on a new leader, as etcd without checkpoints",
    ),
    warn(
        "experimental-enable-lease-checkpoint-persist",
        true,
        "cairn restarts a lease's countdown on a new leader, as etcd without checkpoints",
    ),
    warn(
        "experimental-compaction-batch-limit",
        false,
        "cairn compacts its in-memory index in one step",
    ),
    warn(
        "experimental-compaction-sleep-interval",
        false,
        "cairn compacts its in-memory index in one step",
    ),
    warn(
        "experimental-downgrade-check-time",
        false,
        "cairn has no cluster downgrade",
    ),
    warn("experimental-warning-apply-duration", false, NOT_NEEDED),
    warn("experimental-memory-mlock", true, NOT_NEEDED),
    warn(
        "experimental-txn-mode-write-with-shared-buffer",
        true,
        BBOLT,
    ),
    warn(
        "experimental-bootstrap-defrag-threshold-megabytes",
        false,
        BBOLT,
    ),
    warn(
        "experimental-stop-grpc-service-on-defrag",
        true,
        "cairn has no defragment yet",
    ),
    // Unsafe: refused rather than ignored, since the operator expects the
    // cluster to be rebuilt around this member.
    refuse(
        "force-new-cluster",
        true,
        "--force-new-cluster is not implemented yet",
    ),
    // etcd 3.4 flags that 3.5 removed.
    warn("debug", true, "use --log-level=debug"),
    warn(
        "log-package-levels",
        false,
        "use RUST_LOG to set levels per module",
    ),
    warn(
        "log-output",
        false,
        "use --log-outputs (etcd 3.5 removed --log-output)",
    ),
    warn("experimental-backend-bbolt-freelist-type", false, BBOLT),
];

/// `ETCD_FOO_BAR` for `foo-bar`.
pub fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_uppercase().replace('-', "_"))
}

/// The clap arguments for [`FLAGS`], hidden from `--help` (which lists what
/// cairn implements).
pub fn args() -> Vec<Arg> {
    FLAGS
        .iter()
        .map(|f| {
            let arg = Arg::new(f.name)
                .long(f.name)
                // Built once at start-up: the leak is bounded by the table.
                .env(&*Box::leak(env_name(f.name).into_boxed_str()))
                .hide(true)
                .action(ArgAction::Set);
            if f.boolean {
                arg.num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .value_parser(clap::builder::BoolishValueParser::new())
            } else {
                arg.num_args(1)
            }
        })
        .collect()
}

/// Adds [`args`] to the top-level command and to `serve`.
pub fn extend(cmd: Command) -> Command {
    cmd.args(args()).mut_subcommand("serve", |s| s.args(args()))
}

/// The warnings for the flags of [`FLAGS`] that were given, or the first
/// refusal. A boolean given as false asks for nothing and is not reported.
pub fn check(matches: &ArgMatches) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    for f in FLAGS {
        // None of these flags has a default: a source means it was given.
        if matches.value_source(f.name).is_none() {
            continue;
        }
        if f.boolean && matches.get_one::<bool>(f.name) == Some(&false) {
            continue;
        }
        match f.fate {
            Fate::Warn(why) => warnings.push(format!("--{} has no effect in cairn: {why}", f.name)),
            Fate::Refuse(why) => return Err(format!("--{} is not supported: {why}", f.name)),
        }
    }
    Ok(warnings)
}
