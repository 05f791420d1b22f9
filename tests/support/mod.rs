//! Code shared by integration tests (and the fuzz targets, by path).
pub mod certs;
pub mod cluster;
pub mod compat;
pub mod http;
pub mod model;
pub mod streaming;
