//! bootstrap-runc: a runc-compatible OCI runtime that forces the bootstrap-container policy.

pub mod atomic_file;
pub mod cli;
pub mod commands;
pub mod container_id;
pub mod image;
pub mod logging;
pub mod policy;
pub mod private_file;
pub mod runtime;
pub mod supervisor;
