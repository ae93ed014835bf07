//! bootstrap-runc: a runc-compatible OCI runtime that forces the bootstrap-container policy.

// Items are `pub(crate)` unless a binary, an integration test or a fuzz target needs them: the
// compiler then finds what nothing uses.
#![warn(unreachable_pub)]

pub(crate) mod atomic_file;
pub mod cli;
pub mod commands;
pub mod container_id;
pub mod image;
#[cfg(test)]
mod layers;
pub(crate) mod locks;
pub mod logging;
pub mod policy;
pub(crate) mod private_file;
pub mod runtime;
pub(crate) mod stop;
pub mod supervisor;
