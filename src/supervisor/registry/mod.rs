//! Pulling images from OCI registries: per-registry settings, credentials, retries, the pull.

pub mod backoff;
pub mod config;
pub mod credentials;
pub mod progress;
pub mod pull;
