//! bootstrap-supervisor's pure core: the operator's settings, the plan they give for a boot,
//! and in-place edits of the settings file (the once → off write-back, `get` and `set`).

pub mod bundle;
pub mod cgroup;
pub mod commands;
pub mod edit;
pub mod execute;
pub mod image;
pub mod image_cache;
pub mod markers;
pub mod overlay;
pub mod plan;
pub mod registry;
pub mod report;
pub mod settings;
pub mod unpack;

#[cfg(test)]
mod tests_edit;
#[cfg(test)]
mod tests_plan;
#[cfg(test)]
mod tests_settings;
