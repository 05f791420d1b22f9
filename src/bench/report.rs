//! A finished run's figures, as text for people or JSON for scripts.
//!
//! The JSON is written by hand (a flat object of numbers, strings and maps of
//! numbers), so the bench needs no serialisation crate. Latencies are in
//! microseconds; `throughput` is successful requests per second of the run.

use super::Tally;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// Latency and throughput of one set of requests.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Successful requests.
    pub count: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first error message of each kind.
    pub error_examples: BTreeMap<String, String>,
    /// Workload-specific counters (e.g. CAS conflicts).
    pub counters: BTreeMap<String, u64>,
    /// Length of the run in seconds.
    pub duration_s: f64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Latency percentiles in microseconds: min, p50, p90, p99, p99.9, max, mean.
    pub latency_us: [f64; 7],
}

const LATENCY_NAMES: [&str; 7] = ["min", "p50", "p90", "p99", "p999", "max", "mean"];

impl Stats {
    pub(crate) fn from_hist(h: &Histogram<u64>, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        let count = h.len();
        let us = |ns: u64| ns as f64 / 1000.0;
        let latency_us = if count == 0 {
            [0.0; 7]
        } else {
            [
                us(h.min()),
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.9)),
                us(h.value_at_quantile(0.99)),
                us(h.value_at_quantile(0.999)),
                us(h.max()),
                h.mean() / 1000.0,
            ]
        };
        Self {
            count,
            errors: BTreeMap::new(),
            error_examples: BTreeMap::new(),
            counters: BTreeMap::new(),
            duration_s: secs,
            throughput: if secs > 0.0 { count as f64 / secs } else { 0.0 },
            latency_us,
        }
    }

    pub(crate) fn from_tally(t: &Tally, elapsed: Duration) -> Self {
        let mut s = Self::from_hist(&t.hist, elapsed);
        s.errors = t.errors.clone();
        s.error_examples = t.examples.clone();
        s.counters = t.counters.clone();
        s
    }

    /// Failed requests of every kind.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What `cairn bench` prints.
#[derive(Clone, Debug)]
pub struct Report {
    pub workload: String,
    pub endpoints: String,
    pub conns: usize,
    pub clients: usize,
    /// The workload's main measure (for `watch`, event delivery).
    pub stats: Stats,
    /// Further figures a workload reports (e.g. puts sent, events expected).
    pub extra: BTreeMap<String, f64>,
    /// Per-operation figures for mixed workloads.
    pub by_op: BTreeMap<String, Stats>,
}

impl Report {
    pub fn to_text(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} conns, {} clients, endpoints {}",
            self.workload, self.conns, self.clients, self.endpoints
        );
        let _ = writeln!(
            out,
            "  {} ok, {} errors in {:.2}s: {:.1}/s",
            s.count,
            s.error_total(),
            s.duration_s,
            s.throughput
        );
        let l = s.latency_us;
        let _ = writeln!(
            out,
            "  latency ms: min {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            l[0] / 1e3, l[1] / 1e3, l[2] / 1e3, l[3] / 1e3, l[4] / 1e3, l[5] / 1e3, l[6] / 1e3
        );
        for (k, v) in &s.errors {
            let example = s.error_examples.get(k).map(String::as_str).unwrap_or("");
            let _ = writeln!(out, "  error {k}: {v} (first: {example})");
        }
        for (k, v) in &s.counters {
            let _ = writeln!(out, "  {k}: {v}");
        }
        for (k, v) in &self.extra {
            let _ = writeln!(out, "  {k}: {v}");
        }
        for (op, o) in &self.by_op {
            let _ = writeln!(
                out,
                "  {op}: {} ok, {:.1}/s, p50 {:.3} ms, p99 {:.3} ms",
                o.count,
                o.throughput,
                o.latency_us[1] / 1e3,
                o.latency_us[3] / 1e3
            );
        }
        out
    }

    pub fn to_json(&self) -> String {
        let mut o = String::from("{");
        let _ = write!(
            o,
            "\"workload\":{},\"endpoints\":{},\"conns\":{},\"clients\":{},",
            quote(&self.workload),
            quote(&self.endpoints),
            self.conns,
            self.clients
        );
        stats_fields(&mut o, &self.stats);
        let _ = write!(o, ",\"extra\":{}", num_map(&self.extra));
        o.push_str(",\"by_op\":{");
        for (i, (k, v)) in self.by_op.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let _ = write!(o, "{}:{{", quote(k));
            stats_fields(&mut o, v);
            o.push('}');
        }
        o.push_str("}}");
        o
    }
}

fn stats_fields(o: &mut String, s: &Stats) {
    let _ = write!(
        o,
        "\"count\":{},\"errors\":{},\"error_kinds\":{},\"error_examples\":{},\"counters\":{},\"duration_s\":{},\"throughput\":{},\"latency_us\":{{",
        s.count,
        s.error_total(),
        num_map(&s.errors),
        str_map(&s.error_examples),
        num_map(&s.counters),
        num(s.duration_s),
        num(s.throughput)
    );
    for (i, (name, v)) in LATENCY_NAMES.iter().zip(s.latency_us).enumerate() {
        if i > 0 {
            o.push(',');
        }
        let _ = write!(o, "\"{name}\":{}", num(v));
    }
    o.push('}');
}

fn num_map<V: ToF64>(m: &BTreeMap<String, V>) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}:{}", quote(k), num(v.to_f64())))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn str_map(m: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

trait ToF64 {
    fn to_f64(&self) -> f64;
}

impl ToF64 for u64 {
    fn to_f64(&self) -> f64 {
        *self as f64
    }
}

impl ToF64 for f64 {
    fn to_f64(&self) -> f64 {
        *self
    }
}

/// A JSON number; non-finite values (which JSON lacks) become 0.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(q, "\\u{:04x}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
