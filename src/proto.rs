//! The wire types and gRPC services, generated from `proto/` (see `build.rs`).
//! Package, message and field numbers match etcd's, so the bytes are etcd's.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `mvccpb`: KeyValue and Event.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// `etcdserverpb`: the etcd v3 services, requests, responses and headers.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// `grpc.health.v1`: the standard health check.
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// `cairnpb`: raft entry payloads and the peer transport.
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}
