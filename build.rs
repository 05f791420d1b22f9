//! Generates the etcd v3 wire types and gRPC services from `proto/`.
//!
//! madsim-tonic-build writes two versions of every service: one for tonic and
//! one for madsim's simulated network (under `OUT_DIR/sim`), and
//! `tonic::include_proto!` picks the right one by `cfg(madsim)`. protoc comes
//! from the `protoc-bin-vendored` crate, so a fresh machine needs no system
//! package. Every `bytes` field becomes `bytes::Bytes`, so keys and values
//! decoded from a request share its buffer instead of being copied.
//!
//! For the HTTP JSON gateway (src/server/http/), pbjson-build writes serde
//! impls for `etcdserverpb` and `mvccpb` from the same protos, with
//! grpc-gateway's mapping as etcd 3.4 configures it: proto field names
//! (`OrigName`), 64-bit integers as strings, bytes as base64, enums by name,
//! zero values left out, unknown fields ignored.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", &protoc);
    let protos = [
        "proto/mvccpb/kv.proto",
        "proto/etcdserverpb/rpc.proto",
        "proto/grpc/health/v1/health.proto",
        "proto/cairnpb/cairn.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    git_sha();
    madsim_tonic_build::configure()
        .bytes(["."])
        .compile_protos(&protos, &["proto"])?;
    json_mapping(&protoc, &protos[..2])?;
    Ok(())
}

/// Writes `OUT_DIR/{etcdserverpb,mvccpb}.serde.rs` from a descriptor set
/// protoc makes of `protos`.
// A build script reads its own output files, not a member's storage.
#[allow(clippy::disallowed_methods)]
fn json_mapping(
    protoc: &std::path::Path,
    protos: &[&str],
) -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let set = out.join("json_descriptors.bin");
    let status = std::process::Command::new(protoc)
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", set.display()))
        .arg("-Iproto")
        .args(protos)
        .status()?;
    if !status.success() {
        return Err(format!("protoc for the JSON mapping: {status}").into());
    }
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&set)?)?
        .out_dir(&out)
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb"])?;
    Ok(())
}

/// The commit being built, for `cairn --version` (etcd prints its Git SHA):
/// `CAIRN_GIT_SHA`, or "unknown" outside a git checkout.
fn git_sha() {
    let sha = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CAIRN_GIT_SHA={sha}");
    // Rebuilt when HEAD moves (a commit or a checkout).
    if let Ok(dir) = std::process::Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        let dir = String::from_utf8_lossy(&dir.stdout).trim().to_string();
        if !dir.is_empty() {
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/logs/HEAD");
        }
    }
}
