//! The integration tests: one binary (each test binary would link the whole crate again), a
//! module per area. `hack/test.sh` runs the areas one after another, the tests of one area in
//! parallel, as separate binaries ran before: `cargo test --release --test integration boot::`
//! runs one area.

mod common;

mod advisories;
mod boot;
mod cli;
mod compatibility;
mod containerd;
mod environment;
mod escapes;
mod faults;
mod hostile;
mod images;
mod load;
mod node_report;
mod operating;
mod packages;
mod promise;
mod pulls;
mod registry;
mod runtime;
mod supervisor;
mod usecases;
