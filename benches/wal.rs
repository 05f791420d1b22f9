//! WAL throughput on a real disk, with group commit.
//!
//! First the disk's raw `fdatasync` rate (append 4 KiB, sync, repeat): the
//! ceiling for syncs per second. Then the WAL with batches of 1, 8, 64 and
//! 512 entries of 256 bytes, each batch one `append` + one `sync`: how far
//! group commit lifts entries per second above that ceiling.
//!
//! Runs in `target/bench-wal` (or `$CAIRN_BENCH_DIR`), which it empties
//! first. About 22 seconds in all.
//!
//! ```text
//! cargo bench --bench wal
//! ```
// A benchmark measures wall-clock time on a real directory: it needs the
// clock and std::fs (to clear its scratch directory) that the core may not use.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use cairn::disk::{Disk, FsDisk};
use cairn::wal::{Entry, Wal, WalOptions};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const RAW_TIME: Duration = Duration::from_secs(2);
const BATCH_TIME: Duration = Duration::from_secs(5);
const BATCH_SIZES: [usize; 4] = [1, 8, 64, 512];
const DATA_LEN: usize = 256;

/// One row of the result table.
struct Row {
    /// What was measured.
    label: String,
    /// Entries made durable per second.
    entries_per_s: f64,
    /// Syncs per second.
    syncs_per_s: f64,
    /// Payload megabytes (10^6) made durable per second.
    mb_per_s: f64,
    /// Sync latency, microseconds.
    latency_us: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is valid")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_micros().try_into().unwrap_or(u64::MAX));
}

fn raw_fdatasync(dir: PathBuf) -> std::io::Result<Row> {
    let mut disk = FsDisk::open(dir)?;
    disk.create("raw.dat")?;
    let block = vec![0x5a_u8; 4096];
    let mut latency_us = histogram();
    let mut syncs = 0u64;
    let start = Instant::now();
    while start.elapsed() < RAW_TIME {
        disk.append("raw.dat", &block)?;
        let t = Instant::now();
        disk.sync("raw.dat")?;
        record(&mut latency_us, t.elapsed());
        syncs += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Row {
        label: "raw 4 KiB + fdatasync".into(),
        entries_per_s: 0.0,
        syncs_per_s: syncs as f64 / secs,
        mb_per_s: (syncs * 4096) as f64 / secs / 1e6,
        latency_us,
    })
}

fn wal_batches(dir: PathBuf, batch: usize) -> cairn::Result<Row> {
    let disk = FsDisk::open(dir).map_err(|e| cairn::Error::io("open", "bench dir", e))?;
    let (mut wal, _) = Wal::open(disk, WalOptions::default(), 0)?;
    let data = Bytes::from(vec![0xab_u8; DATA_LEN]);
    let mut latency_us = histogram();
    let (mut syncs, mut entries) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(batch);
    let start = Instant::now();
    while start.elapsed() < BATCH_TIME {
        buf.clear();
        let first = wal.last_index() + 1;
        buf.extend((0..batch as u64).map(|i| Entry {
            index: first + i,
            term: 1,
            data: data.clone(),
            ..Entry::default()
        }));
        wal.append(&buf)?;
        let t = Instant::now();
        wal.sync()?;
        record(&mut latency_us, t.elapsed());
        syncs += 1;
        entries += batch as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Row {
        label: format!("wal batch {batch}"),
        entries_per_s: entries as f64 / secs,
        syncs_per_s: syncs as f64 / secs,
        mb_per_s: (entries * DATA_LEN as u64) as f64 / secs / 1e6,
        latency_us,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::var_os("CAIRN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench-wal"));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    println!("directory: {}", root.display());
    let mut rows = vec![raw_fdatasync(root.join("raw"))?];
    for batch in BATCH_SIZES {
        rows.push(wal_batches(root.join(format!("wal-{batch}")), batch)?);
    }
    println!(
        "| {:<22} | {:>10} | {:>8} | {:>7} | {:>9} | {:>9} |",
        "run", "entries/s", "syncs/s", "MB/s", "p50 sync", "p99 sync"
    );
    println!(
        "|{:-<24}|{:->12}|{:->10}|{:->9}|{:->11}|{:->11}|",
        "", "", "", "", "", ""
    );
    for r in &rows {
        let entries = if r.entries_per_s > 0.0 {
            format!("{:.0}", r.entries_per_s)
        } else {
            "-".into()
        };
        println!(
            "| {:<22} | {:>10} | {:>8.0} | {:>7.2} | {:>7}us | {:>7}us |",
            r.label,
            entries,
            r.syncs_per_s,
            r.mb_per_s,
            r.latency_us.value_at_quantile(0.50),
            r.latency_us.value_at_quantile(0.99),
        );
    }
    println!("(MB/s counts entry data, 256 B per entry, or the raw 4 KiB blocks; 1 MB = 10^6 B)");
    Ok(())
}
