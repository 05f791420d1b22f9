//! Code shared by integration tests (and the fuzz targets, by path).
pub mod model;
