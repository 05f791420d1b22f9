//! Generates the etcd v3 wire types from `proto/` with prost.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs no
//! system package. Every `bytes` field becomes `bytes::Bytes`, so keys and values
//! decoded from a request share its buffer instead of being copied.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let protos = ["proto/mvccpb/kv.proto", "proto/etcdserverpb/rpc.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::Config::new()
        .bytes(["."])
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
