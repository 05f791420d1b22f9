//! `cairn-sim`: runs cairn's deterministic simulation for one seed or a sweep.
//!
//! Build and run it with madsim (its own target dir):
//!
//! ```sh
//! RUSTFLAGS="--cfg madsim" cargo run -p cairn-sim --release --target-dir target/madsim -- --seeds 0..50
//! ```
// The runner measures wall time to report simulated seconds per wall second.
#![allow(clippy::disallowed_methods)]

use clap::Parser;
#[cfg(madsim)]
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-sim",
    about = "Deterministic simulation of a cairn cluster under faults"
)]
struct Cli {
    /// Run exactly this seed (replays it).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run a range of seeds, `A..B` (B excluded).
    #[arg(long, value_parser = parse_range)]
    seeds: Option<std::ops::Range<u64>>,
    /// Simulated seconds of client load per seed.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Run each seed twice and require identical trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Print the whole fault log of every seed, not just of failures.
    #[arg(long)]
    verbose: bool,
    /// Switch on a planted bug (needs `--features planted`): ack-before-fsync,
    /// reads-without-read-index, skip-hard-state-sync,
    /// apply-twice-after-restart, compaction-drops-newest.
    #[arg(long)]
    plant: Option<String>,
    /// Succeed only if some seed fails (proves a planted bug is caught), and
    /// stop at the first failure.
    #[arg(long)]
    expect_failure: bool,
}

fn parse_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s.split_once("..").ok_or("expected A..B")?;
    let a: u64 = a.parse().map_err(|_| "bad start")?;
    let b: u64 = b.parse().map_err(|_| "bad end")?;
    if a >= b {
        return Err("empty range".into());
    }
    Ok(a..b)
}

#[cfg(not(madsim))]
fn main() {
    let _ = Cli::parse();
    eprintln!(
        "cairn-sim must be built with madsim:\n  RUSTFLAGS=\"--cfg madsim\" cargo run -p cairn-sim --release --target-dir target/madsim -- --seeds 0..50"
    );
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    use cairn_sim::runner::{scenario, Options, Outcome};
    use std::io::Write;
    use tracing_subscriber::EnvFilter;

    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(name) = &cli.plant {
        let Some(bug) = cairn::planted::Bug::from_name(name) else {
            eprintln!("cairn-sim: unknown planted bug {name:?}");
            std::process::exit(2);
        };
        plant(bug);
    }
    let seeds = match (cli.seed, cli.seeds.clone()) {
        (Some(s), _) => s..s + 1,
        (None, Some(r)) => r,
        (None, None) => 0..1,
    };
    let duration = Duration::from_secs(cli.duration);
    let run = |seed: u64| -> Outcome {
        let opts = Options {
            seed,
            duration,
            ..Options::default()
        };
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.block_on(scenario(opts))
    };
    let total = seeds.end - seeds.start;
    let wall = std::time::Instant::now();
    let mut sim = Duration::ZERO;
    let mut failed = Vec::new();
    for (done, seed) in seeds.clone().enumerate() {
        let outcome = run(seed);
        sim += outcome.sim_elapsed;
        let mut ok = outcome.result.is_ok();
        let mut note = String::new();
        if cli.check_determinism {
            let again = run(seed);
            if again.trace_hash != outcome.trace_hash {
                ok = false;
                note = format!(
                    " NOT DETERMINISTIC: trace {:016x} then {:016x}",
                    outcome.trace_hash, again.trace_hash
                );
            }
        }
        if total == 1 || !ok || cli.verbose {
            eprintln!();
            report(&outcome, duration, &note, cli.verbose || !ok);
        }
        if !ok {
            failed.push(seed);
            if cli.expect_failure {
                println!("caught at seed {seed} after {} seeds", done + 1);
                std::process::exit(0);
            }
        }
        if total > 1 {
            let width = 30;
            let filled = ((done + 1) as u64 * width / total) as usize;
            eprint!(
                "\r[{}{}] {}/{} seeds, {} failed, {:.0}x real time",
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                done + 1,
                total,
                failed.len(),
                sim.as_secs_f64() / wall.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    let secs = wall.elapsed().as_secs_f64();
    eprintln!();
    println!(
        "{} seeds, {} passed, {} failed; {:.0} simulated s in {:.1} wall s ({:.0}x real time)",
        total,
        total - failed.len() as u64,
        failed.len(),
        sim.as_secs_f64(),
        secs,
        sim.as_secs_f64() / secs
    );
    if cli.expect_failure {
        println!("expected a failure, but every seed passed");
        std::process::exit(1);
    }
    if !failed.is_empty() {
        println!("failed seeds: {failed:?}");
        std::process::exit(1);
    }
}

#[cfg(all(madsim, feature = "planted"))]
fn plant(bug: cairn::planted::Bug) {
    cairn::planted::plant(bug);
}

#[cfg(all(madsim, not(feature = "planted")))]
fn plant(_bug: cairn::planted::Bug) {
    eprintln!("cairn-sim: --plant needs a build with `--features planted`");
    std::process::exit(2);
}

#[cfg(madsim)]
fn report(o: &cairn_sim::runner::Outcome, duration: Duration, note: &str, faults: bool) {
    let verdict = match &o.result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("FAILED: {e}"),
    };
    println!(
        "seed {}: {verdict}{note}\n  faults enabled: {}\n  {} ops ({} unknown), trace {:016x}, {:.1} simulated s",
        o.seed,
        o.swarm.names().join(", "),
        o.ops,
        o.unknown,
        o.trace_hash,
        o.sim_elapsed.as_secs_f64()
    );
    for d in &o.detected_corruption {
        println!("  detected corruption and stopped: {d}");
    }
    if faults {
        for f in &o.faults {
            println!("  nemesis {f}");
        }
    }
    if o.result.is_err() || !note.is_empty() {
        println!(
            "  reproduce: RUSTFLAGS=\"--cfg madsim\" cargo run -p cairn-sim --release --target-dir target/madsim -- --seed {} --duration {}",
            o.seed,
            duration.as_secs()
        );
    }
}
