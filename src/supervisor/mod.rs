//! bootstrap-supervisor: Bottlerocket's boot-time job. The operator's [`settings`] (model,
//! validation, in-place edits), the [`plan`] they give for a boot, each container's [`spec`]
//! and [`bundle`], their [`execute`]ion through bootstrap-runc, same-boot [`markers`], the
//! [`report`] kept per boot ([`boots`]), the [`journal`] and Prometheus [`metrics`], the containers' [`cgroup`] on v2, and the CLI's [`commands`]. Images are
//! [`crate::image`]'s.

pub(crate) mod boots;
pub(crate) mod bundle;
pub(crate) mod cgroup;
pub mod commands;
pub(crate) mod execute;
pub(crate) mod journal;
pub(crate) mod markers;
pub(crate) mod metrics;
pub(crate) mod node_report;
pub mod plan;
pub(crate) mod report;
pub mod settings;
pub(crate) mod spec;
pub(crate) mod status;
