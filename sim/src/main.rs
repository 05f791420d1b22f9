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
    /// Internal: run exactly `--seed` in this process and print a summary line
    /// for the parent (every seed of a sweep runs in its own process).
    #[arg(long, hide = true)]
    child: bool,
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

/// One seed's result as a child process reports it.
#[cfg(madsim)]
struct Summary {
    ok: bool,
    trace: u64,
    sim: Duration,
    /// The child's report, printed by the parent when the seed fails.
    text: String,
}

/// Runs `seed` in a fresh process. Some state outside madsim's control lives
/// for a whole process (tokio's `select!` draws its branch order from a
/// global counter), so a seed only replays exactly as the first run of a
/// process: every seed of a sweep gets its own, just like the reproduce
/// command does.
#[cfg(madsim)]
fn run_child(cli: &Cli, seed: u64) -> Summary {
    let exe = std::env::current_exe().expect("own executable");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--child",
        "--seed",
        &seed.to_string(),
        "--duration",
        &cli.duration.to_string(),
    ]);
    if let Some(bug) = &cli.plant {
        cmd.args(["--plant", bug]);
    }
    if cli.verbose {
        cmd.arg("--verbose");
    }
    let out = cmd
        .stderr(std::process::Stdio::null())
        .output()
        .expect("run a seed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = text
        .lines()
        .find_map(|l| l.strip_prefix("@@ "))
        .map(|l| l.split(' ').collect::<Vec<_>>());
    match summary.as_deref() {
        Some([ok, trace, sim_ns]) => Summary {
            ok: *ok == "ok",
            trace: u64::from_str_radix(trace, 16).unwrap_or(0),
            sim: Duration::from_nanos(sim_ns.parse().unwrap_or(0)),
            text,
        },
        _ => Summary {
            ok: false,
            trace: 0,
            sim: Duration::ZERO,
            text: format!(
                "seed {seed}: the seed's process died ({})\n{text}",
                out.status
            ),
        },
    }
}

/// Runs `seed` in this process and prints its report and summary line.
#[cfg(madsim)]
fn run_here(cli: &Cli, seed: u64) -> bool {
    use cairn_sim::runner::{scenario, Options, Outcome};
    let duration = Duration::from_secs(cli.duration);
    let opts = Options {
        seed,
        duration,
        ..Options::default()
    };
    // A fresh thread draws std's HashMap keys inside the runtime, from the seed.
    let outcome = std::thread::spawn(move || {
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        // A panic anywhere (an invariant assert in raft-rs or cairn) fails the seed.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(scenario(opts))))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "non-string panic".into());
                Outcome::panicked(seed, msg)
            })
    })
    .join()
    .unwrap_or_else(|_| Outcome::panicked(seed, "the runner thread died".into()));
    let ok = outcome.result.is_ok();
    report(&outcome, duration, cli.plant.as_deref(), cli.verbose || !ok);
    println!(
        "@@ {} {:016x} {}",
        if ok { "ok" } else { "failed" },
        outcome.trace_hash,
        outcome.sim_elapsed.as_nanos()
    );
    ok
}

#[cfg(madsim)]
fn main() {
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
    if cli.child || (cli.seed.is_some() && !cli.check_determinism) {
        let ok = run_here(&cli, cli.seed.unwrap_or(0));
        std::process::exit(if ok { 0 } else { 1 });
    }
    let seeds = match (cli.seed, cli.seeds.clone()) {
        (Some(s), _) => s..s + 1,
        (None, Some(r)) => r,
        (None, None) => 0..1,
    };
    let total = seeds.end - seeds.start;
    let wall = std::time::Instant::now();
    let mut sim = Duration::ZERO;
    let mut failed = Vec::new();
    for (done, seed) in seeds.clone().enumerate() {
        let first = run_child(&cli, seed);
        sim += first.sim;
        let mut ok = first.ok;
        let mut text = first.text.clone();
        if cli.check_determinism {
            let again = run_child(&cli, seed);
            if again.trace != first.trace {
                ok = false;
                text = format!(
                    "seed {seed}: NOT DETERMINISTIC: trace {:016x} then {:016x}\n{}",
                    first.trace, again.trace, first.text
                );
            }
        }
        if !ok || cli.verbose {
            eprintln!();
            print!(
                "{}",
                text.lines()
                    .filter(|l| !l.starts_with("@@ "))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            );
        }
        if !ok {
            failed.push(seed);
            if cli.expect_failure {
                println!("caught at seed {seed} after {} seeds", done + 1);
                std::process::exit(0);
            }
        }
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
fn report(o: &cairn_sim::runner::Outcome, duration: Duration, plant: Option<&str>, faults: bool) {
    let verdict = match &o.result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("FAILED: {e}"),
    };
    println!(
        "seed {}: {verdict}\n  faults enabled: {}\n  {} ops ({} unknown), {} watchers ({} events), {} lease ops, trace {:016x}, {:.1} simulated s",
        o.seed,
        o.swarm.names().join(", "),
        o.ops,
        o.unknown,
        o.watchers,
        o.watch_events,
        o.lease_ops,
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
    if o.result.is_err() {
        let plant = plant.map_or(String::new(), |p| format!(" --plant {p}"));
        let features = if plant.is_empty() {
            ""
        } else {
            " --features planted"
        };
        println!(
            "  reproduce: RUSTFLAGS=\"--cfg madsim\" cargo run -p cairn-sim --release{features} --target-dir target/madsim -- --seed {}{plant} --duration {}",
            o.seed,
            duration.as_secs()
        );
    }
}
