//! bootstrap-supervisor: Bottlerocket's boot-time job. The operator's [`settings`] (model,
//! validation, in-place edits), the [`plan`] they give for a boot, each container's [`spec`]
//! and [`bundle`], their [`execute`]ion through bootstrap-runc, same-boot [`markers`], the
//! [`report`] kept per boot ([`boots`]), the [`journal`] and Prometheus [`metrics`], the containers' [`cgroup`] on v2, and the CLI's [`commands`]. Images are
//! [`crate::image`]'s.

pub mod boots;
pub mod bundle;
pub mod cgroup;
pub mod commands;
pub mod execute;
pub mod journal;
pub mod markers;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod settings;
pub mod spec;
pub mod status;
