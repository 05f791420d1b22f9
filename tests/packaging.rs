//! The packaging under `contrib/`: the systemd unit passes `systemd-analyze
//! verify` (with its ExecStart pointed at the binary this package builds).
//! The container build file cannot be built here: no image registry is
//! reachable.
// The test runs a process and writes a file.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/systemd/cairn.service"
    ))
    .expect("read the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/cairn serve"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/cairn", env!("CARGO_BIN_EXE_cairn")),
    )
    .unwrap();
    // .ci/test installs systemd where systemd-analyze is missing.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze (Debian's systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cairn.service"))
        .collect();
    assert!(
        problems.is_empty(),
        "systemd-analyze verify complained:\n{stderr}"
    );
}
