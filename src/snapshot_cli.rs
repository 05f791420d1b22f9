//! `cairn snapshot status|restore`: etcdutl's snapshot commands for backup
//! images that `etcdctl snapshot save` wrote from a cairn member (see
//! `cairn::backup` and docs/operations.md).

use cairn::backup::{self, humanize_bytes, RestoreOptions};
use cairn::server::config::{parse_initial_cluster, split_list};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Print a backup image's hash, revision, total keys and size.
    Status {
        /// The image (`etcdctl snapshot save` output).
        file: PathBuf,
        /// Output format: simple, table or json.
        #[arg(short = 'w', long = "write-out", default_value = "table")]
        write_out: String,
    },
    /// Restore a member's data directory from a backup image.
    Restore(RestoreArgs),
}

/// etcdutl's `snapshot restore` flags and defaults.
#[derive(Args)]
pub struct RestoreArgs {
    /// The image (`etcdctl snapshot save` output).
    file: PathBuf,
    /// Path to the data directory (default: `<name>.etcd`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Initial cluster configuration for restore bootstrap.
    #[arg(long, default_value = "default=http://localhost:2380")]
    initial_cluster: String,
    /// Initial cluster token for the etcd cluster during restore bootstrap.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: String,
    /// How much to increase the latest revision after restore.
    #[arg(long, default_value_t = 0)]
    bump_revision: u64,
    /// Mark the latest revision after restore as the point of compaction
    /// (required if --bump-revision > 0, disallowed otherwise).
    #[arg(long)]
    mark_compacted: bool,
}

pub fn main(cmd: SnapshotCommand) -> ExitCode {
    match cmd {
        SnapshotCommand::Status { file, write_out } => status(&file, &write_out),
        SnapshotCommand::Restore(args) => restore(&args),
    }
}

fn status(file: &std::path::Path, write_out: &str) -> ExitCode {
    let s = match backup::status(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hash = format!("{:x}", s.hash);
    let size = humanize_bytes(s.total_size);
    match write_out {
        "json" => println!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}",
            s.hash, s.revision, s.total_key, s.total_size
        ),
        "simple" => println!("{hash}, {}, {}, {size}", s.revision, s.total_key),
        "table" => print_table(&[
            &hash,
            &s.revision.to_string(),
            &s.total_key.to_string(),
            &size,
        ]),
        other => {
            eprintln!("Error: unknown output format {other:?} (simple, table or json)");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// etcdctl's table (tablewriter): centred headers, numbers to the right.
fn print_table(cells: &[&str; 4]) {
    let heads = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
    let widths: Vec<usize> = (0..4).map(|i| heads[i].len().max(cells[i].len())).collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    let head: String = (0..4)
        .map(|i| format!("| {:^w$} ", heads[i], w = widths[i]))
        .collect::<String>()
        + "|";
    let row: String = (0..4)
        .map(|i| {
            if i == 1 || i == 2 {
                format!("| {:>w$} ", cells[i], w = widths[i])
            } else {
                format!("| {:<w$} ", cells[i], w = widths[i])
            }
        })
        .collect::<String>()
        + "|";
    println!("{rule}\n{head}\n{rule}\n{row}\n{rule}");
}

fn restore(args: &RestoreArgs) -> ExitCode {
    let initial_cluster = match parse_initial_cluster(&args.initial_cluster) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = RestoreOptions {
        data_dir: (args.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", args.name))),
        name: args.name.clone(),
        initial_cluster,
        initial_cluster_token: args.initial_cluster_token.clone(),
        initial_advertise_peer_urls: split_list(&args.initial_advertise_peer_urls),
        bump_revision: args.bump_revision,
        mark_compacted: args.mark_compacted,
    };
    match backup::restore(&args.file, &opts) {
        Ok(revision) => {
            println!(
                "restored snapshot {} to {} (member {}, revision {revision})",
                args.file.display(),
                opts.data_dir.display(),
                opts.name
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
