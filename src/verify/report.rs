//! `cairn verify`'s verdicts and report: a table (one line per checker),
//! throughput and latency, the faults injected, and on a violation the
//! smallest failing sub-history found; `--json` prints the same as one JSON
//! object, `--html` writes the failing sub-history as a timeline.

use super::Recorder;
use cairn::check::durability::check_final_reads;
use cairn::check::history::{Extra, History, Op};
use cairn::check::lease::check_leases;
use cairn::check::multi::check_multi;
use cairn::check::shrink::{self, Shrunk};
use cairn::check::watch::check_watches;
use cairn::check::{self, Mark};
use std::fmt::Write as _;
use std::time::Duration;

/// What the run was, besides its history.
pub(crate) struct RunInfo {
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// The range the multi-key checker's event log covers.
    pub multi_range: (String, String),
    pub seed: u64,
    pub duration: Duration,
    pub durability_reads: usize,
    /// The cluster's heartbeat interval (the lease checker's tolerance).
    pub tick: Duration,
    pub durability_expected: usize,
    /// `HashKV` agreement: the revision compared, or what disagreed.
    pub replicas: Result<i64, String>,
}

/// One checker's verdict.
pub(crate) struct Verdict {
    pub checker: &'static str,
    pub passed: bool,
    /// What it looked at, or what failed.
    pub summary: String,
}

/// A judged run.
pub(crate) struct Outcome {
    pub info: RunInfo,
    pub verdicts: Vec<Verdict>,
    /// The failing sub-history of a linearizability violation, shrunk.
    pub failing: Option<Shrunk>,
    /// The KV history (for the failing sub-history's ops).
    pub history: History,
    pub ops: usize,
    /// Multi-key ops (not in `ops`).
    pub multi_ops: usize,
    pub unknown: usize,
    pub failed: usize,
    pub watchers: usize,
    pub events: usize,
    pub faults: Vec<(u64, String)>,
    pub compactions: u64,
    pub errors: Vec<(String, u64)>,
    /// Latency percentiles of KV ops with a known outcome: p50, p90, p99,
    /// p99.9, max, in ms.
    pub latency_ms: [f64; 5],
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn percentiles(mut v: Vec<u64>) -> [f64; 5] {
    if v.is_empty() {
        return [0.0; 5];
    }
    v.sort_unstable();
    let q = |p: f64| ms(v[((v.len() - 1) as f64 * p).round() as usize]);
    [q(0.5), q(0.9), q(0.99), q(0.999), q(1.0)]
}

impl Outcome {
    /// Runs every checker over what `rec` recorded.
    pub fn judge(rec: Recorder, info: RunInfo) -> Outcome {
        let history: History = rec.history.into_inner().expect("lock");
        let extra = Extra {
            watches: rec.watches.into_inner().expect("lock"),
            leases: rec.leases.into_inner().expect("lock"),
            // A real cluster's clock runs at one second a second.
            min_tick_factor: 1.0,
            max_tick_nanos: info.tick.as_nanos() as u64,
            multi: rec.multi.into_inner().expect("lock"),
        };
        let multi_ops = extra.multi.len();
        let mut verdicts = Vec::new();
        let mut failing = None;
        match &check::check(&history) {
            Ok(stats) => {
                verdicts.push(Verdict {
                    checker: "linearizability",
                    passed: true,
                    summary: format!(
                        "{} ops on {} keys ({} unknown, {} failed), {} search states",
                        stats.ops, stats.keys, stats.unknown, stats.failed, stats.states
                    ),
                });
            }
            Err(v) => {
                // Each trial costs about one check of the key: bound the
                // total for keys with many ops.
                let key_ops = history
                    .iter()
                    .filter(|o| Some(o.call.key()) == v.key.as_deref())
                    .count()
                    .max(1);
                let trials = (100_000 / key_ops).clamp(8, 200);
                let shrunk = shrink::shrink(&history, v, trials);
                // The search stops at the first key that fails: check each
                // key alone too, to name every failing one.
                let per_key = failing_keys(&history);
                let names: Vec<&str> = per_key.iter().map(|(k, _)| k.as_str()).collect();
                verdicts.push(Verdict {
                    checker: "linearizability",
                    passed: false,
                    summary: format!(
                        "{}: {}; keys failing by themselves: {} of {}",
                        v.check,
                        v.message,
                        if names.is_empty() {
                            "none (only across keys)".to_owned()
                        } else {
                            names.join(", ")
                        },
                        history
                            .iter()
                            .map(|o| o.call.key())
                            .collect::<std::collections::BTreeSet<_>>()
                            .len()
                    ),
                });
                failing = Some(shrunk);
            }
        }
        verdicts.push(durability(&info, &history));
        verdicts.push(match check_watches(&history, &extra) {
            Ok(s) => Verdict {
                checker: "watch",
                passed: true,
                summary: format!(
                    "{} watchers ({} resumed, {} from the past), {} events, {} progress responses, {} \
                     required deliveries",
                    s.watchers, s.resumed, s.from_past, s.events, s.progress, s.required
                ),
            },
            Err(v) => Verdict {
                checker: "watch",
                passed: false,
                summary: v.to_string(),
            },
        });
        verdicts.push(match check_leases(&extra) {
            Ok(s) => Verdict {
                checker: "lease",
                passed: true,
                summary: format!(
                    "{} leases, {} lease ops, {} expiries observed",
                    s.leases, s.ops, s.expiries_observed
                ),
            },
            Err(v) => Verdict {
                checker: "lease",
                passed: false,
                summary: v.to_string(),
            },
        });
        let range = (info.multi_range.0.as_str(), info.multi_range.1.as_str());
        verdicts.push(match check_multi(&history, &extra, range) {
            Ok(s) => Verdict {
                checker: "multi-key",
                // Nothing checked is not a pass.
                passed: s.ops == 0 || s.ranges + s.txns > 0,
                summary: format!(
                    "{} ops: {} ranges and {} txns matched the watchers' event log (complete up to \
                     revision {}), {} above it unchecked",
                    s.ops, s.ranges, s.txns, s.covered, s.unchecked
                ),
            },
            Err(v) => Verdict {
                checker: "multi-key",
                passed: false,
                summary: v.to_string(),
            },
        });
        verdicts.push(match &info.replicas {
            Ok(rev) => Verdict {
                checker: "replicas",
                passed: true,
                summary: format!(
                    "HashKV of all {} endpoints agrees at revision {rev}",
                    info.endpoints.len()
                ),
            },
            Err(e) => Verdict {
                checker: "replicas",
                passed: false,
                summary: e.clone(),
            },
        });
        let anomalies = rec.anomalies.into_inner().expect("lock");
        verdicts.push(Verdict {
            checker: "responses",
            passed: anomalies.is_empty(),
            summary: match anomalies.first() {
                None => "no response contradicted itself".into(),
                Some(a) => format!("{} anomalies; first: {a}", anomalies.len()),
            },
        });
        let events = extra
            .watches
            .iter()
            .map(|w| w.responses.iter().map(|r| r.events.len()).sum::<usize>())
            .sum();
        Outcome {
            ops: history.len(),
            multi_ops,
            unknown: history.iter().filter(|o| o.complete.is_none()).count(),
            failed: history
                .iter()
                .filter(|o| o.ret == check::history::Ret::Failed)
                .count(),
            watchers: extra.watches.len(),
            events,
            faults: rec.faults.into_inner().expect("lock"),
            compactions: rec.compactions.into_inner().expect("lock"),
            errors: rec.errors.into_inner().expect("lock").into_iter().collect(),
            latency_ms: percentiles(rec.latencies.into_inner().expect("lock")),
            info,
            verdicts,
            failing,
            history,
        }
    }

    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }

    fn throughput(&self) -> f64 {
        ((self.ops + self.multi_ops) as f64) / self.info.duration.as_secs_f64().max(1e-9)
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cairn verify: {} for {:.0}s, endpoints {}, prefix {}, seed {}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.info.duration.as_secs_f64(),
            self.info.endpoints.join(","),
            self.info.prefix,
            self.info.seed
        );
        let _ = writeln!(
            out,
            "  {} KV ops + {} multi-key ops ({:.1}/s; of the KV ops {} unknown outcome, {} failed), {} \
             watchers, {} events, {} compactions, {} fault events (faults, heals, commands)",
            self.ops,
            self.multi_ops,
            self.throughput(),
            self.unknown,
            self.failed,
            self.watchers,
            self.events,
            self.compactions,
            self.faults.len()
        );
        let l = self.latency_ms;
        let _ = writeln!(
            out,
            "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l[0], l[1], l[2], l[3], l[4]
        );
        if !self.errors.is_empty() {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(out, "  errors: {}", errors.join(", "));
        }
        let _ = writeln!(out, "\n  {:<16} {:<7} details", "checker", "verdict");
        for v in &self.verdicts {
            let verdict = if v.passed { "pass" } else { "FAIL" };
            let _ = writeln!(out, "  {:<16} {:<7} {}", v.checker, verdict, v.summary);
        }
        if !self.faults.is_empty() {
            let _ = writeln!(out, "\n  faults:");
            for (at, what) in &self.faults {
                let _ = writeln!(out, "    {:>9.3}s  {what}", *at as f64 / 1e9);
            }
        }
        if let Some(s) = &self.failing {
            let what = if s.violation.check == check::Check::Linearizability {
                "every write to the key, and the reads that cannot be left out; the search's view of it"
            } else {
                "the ops the failed check is about"
            };
            let _ = writeln!(
                out,
                "\n  smallest failing sub-history found: {} ops ({what}; times in ns since the start):",
                s.ops.len()
            );
            for line in s.violation.to_string().lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        out
    }

    pub fn to_json(&self) -> String {
        let mut o = String::from("{");
        let _ = write!(
            o,
            "\"passed\":{},\"endpoints\":[{}],\"prefix\":{},\"seed\":{},\"duration_s\":{},",
            self.passed(),
            self.info
                .endpoints
                .iter()
                .map(|e| json_str(e))
                .collect::<Vec<_>>()
                .join(","),
            json_str(&self.info.prefix),
            self.info.seed,
            self.info.duration.as_secs_f64()
        );
        let _ = write!(
            o,
            "\"ops\":{},\"multi_ops\":{},\"unknown\":{},\"failed\":{},\"throughput\":{:.3},\"watchers\":{},\"events\":{},\"compactions\":{},",
            self.ops,
            self.multi_ops,
            self.unknown,
            self.failed,
            self.throughput(),
            self.watchers,
            self.events,
            self.compactions
        );
        let l = self.latency_ms;
        let _ = write!(
            o,
            "\"latency_ms\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}},",
            l[0], l[1], l[2], l[3], l[4]
        );
        let checkers: Vec<String> = self
            .verdicts
            .iter()
            .map(|v| {
                format!(
                    "{{\"checker\":{},\"passed\":{},\"summary\":{}}}",
                    json_str(v.checker),
                    v.passed,
                    json_str(&v.summary)
                )
            })
            .collect();
        let _ = write!(o, "\"checkers\":[{}],", checkers.join(","));
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(at, what)| format!("{{\"at_ns\":{at},\"fault\":{}}}", json_str(what)))
            .collect();
        let _ = write!(o, "\"faults\":[{}],", faults.join(","));
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, n)| format!("{}:{n}", json_str(k)))
            .collect();
        let _ = write!(o, "\"errors\":{{{}}},", errors.join(","));
        match &self.failing {
            None => o.push_str("\"failing\":null"),
            Some(s) => {
                let v = &s.violation;
                let ops: Vec<String> = s
                    .ops
                    .iter()
                    .map(|&i| op_json(i, &self.history[i], mark(s, i)))
                    .collect();
                let _ = write!(
                    o,
                    "\"failing\":{{\"check\":{},\"key\":{},\"message\":{},\"ops\":[{}]}}",
                    json_str(&v.check.to_string()),
                    v.key.as_deref().map_or("null".into(), json_str),
                    json_str(&v.message),
                    ops.join(",")
                );
            }
        }
        o.push('}');
        o
    }

    /// An HTML page with the failing sub-history as a timeline: one row per
    /// client, one bar per op from invocation to completion (to the end of
    /// the window when its outcome is unknown).
    pub fn to_html(&self) -> String {
        let Some(s) = &self.failing else {
            return String::new();
        };
        super::timeline::html(s, &self.history, &self.to_text())
    }
}

/// How the violation marks op `i` of the sub-history: "involved",
/// "placed", "stuck", or "" (not in the search's window).
pub(crate) fn mark(s: &Shrunk, i: usize) -> &'static str {
    match s
        .violation
        .window
        .iter()
        .find(|w| w.index == i)
        .map(|w| w.mark)
    {
        Some(Mark::Involved) => "involved",
        Some(Mark::Placed) => "placed",
        Some(Mark::Stuck) => "stuck",
        None => "",
    }
}

fn op_json(index: usize, op: &Op, mark: &str) -> String {
    format!(
        "{{\"index\":{index},\"mark\":{},\"client\":{},\"invoke_ns\":{},\"complete_ns\":{},\"call\":{},\"ret\":{}}}",
        json_str(mark),
        op.client,
        op.invoke,
        op.complete.map_or("null".into(), |c| c.to_string()),
        json_str(&format!("{:?}", op.call)),
        json_str(&format!("{:?}", op.ret))
    )
}

/// `s` as a JSON string.
pub(crate) fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Each key's ops checked alone: the keys that fail, with their violations.
fn failing_keys(history: &History) -> Vec<(String, check::Violation)> {
    let mut by_key: std::collections::BTreeMap<&str, History> = std::collections::BTreeMap::new();
    for op in history {
        by_key.entry(op.call.key()).or_default().push(op.clone());
    }
    by_key
        .into_iter()
        .filter_map(|(key, ops)| {
            let v = check::check(&ops).err().filter(|v| !v.is_inconclusive())?;
            Some((key.to_owned(), v))
        })
        .collect()
}

fn durability(info: &RunInfo, history: &History) -> Verdict {
    let read = format!(
        "{} of {} final reads (every key through every endpoint) answered",
        info.durability_reads, info.durability_expected
    );
    match check_final_reads(history, |o| o.client >= 1_000_000) {
        Err(lost) => Verdict {
            checker: "durability",
            passed: false,
            summary: format!(
                "{read}; {} keys lost an acknowledged write; first: {}",
                lost.len(),
                lost[0].message
            ),
        },
        Ok(_) if info.durability_reads < info.durability_expected => Verdict {
            checker: "durability",
            passed: false,
            summary: format!("{read}: not every acknowledged write could be checked"),
        },
        Ok(_) => Verdict {
            checker: "durability",
            passed: true,
            summary: format!("{read}; every acknowledged write present or overwritten"),
        },
    }
}
