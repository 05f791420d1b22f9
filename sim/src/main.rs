//! `cairn-sim`: cairn's deterministic simulator.
//!
//! The simulator runs the real server under madsim (`RUSTFLAGS="--cfg madsim"`,
//! its own target dir) on simulated networks and on `cairn::disk::MemDisk`
//! disks that survive a node's crash. It is built in every CI run so the
//! simulation build never rots; the runner itself arrives with issue #4,
//! once there is a server to run (issue #3).

fn main() {
    let mode = if cfg!(madsim) { "madsim" } else { "std" };
    eprintln!("cairn-sim ({mode} build): no scenarios yet; the simulator lands with issue #4");
    std::process::exit(2);
}
