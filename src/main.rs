//! The `cairn` command.
//!
//! `cairn check` recovers a data directory exactly as a starting node will
//! (newest valid snapshot, then the WAL after it) and prints what it found:
//! the first thing to run on a node that will not start. The server
//! (`cairn serve`) arrives with the replicated node (issue #3).
// The binary is driver code: it reads the environment and the file system.
#![allow(clippy::disallowed_methods)]

use cairn::disk::FsDisk;
use cairn::storage::{recover, SNAP_DIR, WAL_DIR};
use cairn::wal::WalOptions;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "A distributed key-value store that speaks the etcd v3 API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Recover a data directory as a starting node would, and report on it.
    ///
    /// Creates the directory if it does not exist. Like a starting node, it
    /// truncates a torn tail of the last WAL segment; any other damage is
    /// reported with its file and offset, and the exit code is 1.
    Check {
        /// Path to the data directory.
        #[arg(long, env = "CAIRN_DATA_DIR", default_value = "default.cairn")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { data_dir } => match check(&data_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cairn: {}: {e}", data_dir.display());
                ExitCode::FAILURE
            }
        },
    }
}

fn check(data_dir: &Path) -> Result<(), cairn::Error> {
    let open = |sub: &str| {
        let dir = data_dir.join(sub);
        FsDisk::open(&dir).map_err(|e| cairn::Error::io("open", dir.display().to_string(), e))
    };
    let (wal, _snaps, rec) = recover(open(WAL_DIR)?, open(SNAP_DIR)?, WalOptions::default())?;
    println!("data dir      {}", data_dir.display());
    for (file, err) in &rec.rejected_snapshots {
        println!("rejected      snap/{file}: {err}");
    }
    match &rec.snapshot {
        Some((file, s)) => println!(
            "snapshot      snap/{file} (index {}, term {})",
            s.meta.index, s.meta.term
        ),
        None => println!("snapshot      none"),
    }
    let hash = rec.store.hash_kv(0).map_err(|e| cairn::Error::Corrupt {
        file: "snapshot".into(),
        offset: 0,
        reason: e.to_string(),
    })?;
    println!(
        "mvcc          revision {}, compacted {}, {} keys, hash {:08x}",
        rec.store.current_revision(),
        rec.store.compact_revision(),
        rec.store.key_count(),
        hash.hash
    );
    let hs = rec.wal.hard_state;
    println!(
        "hard state    term {}, vote {}, commit {}",
        hs.term, hs.vote, hs.commit
    );
    println!(
        "wal           {} segments, {} entries after the snapshot, last index {}",
        wal.segment_names().len(),
        rec.wal.entries.len(),
        wal.last_index()
    );
    if let Some(t) = &rec.wal.torn_tail {
        println!(
            "torn tail     wal/{} cut at offset {} ({} bytes dropped)",
            t.file, t.offset, t.dropped_bytes
        );
    }
    Ok(())
}
