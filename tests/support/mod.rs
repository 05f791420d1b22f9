//! Code shared by integration tests (and the fuzz targets, by path).
pub mod cluster;
pub mod model;
