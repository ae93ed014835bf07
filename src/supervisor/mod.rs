//! bootstrap-supervisor's pure core: the operator's settings, the plan they give for a boot,
//! and in-place edits of the settings file (the once → off write-back, `get` and `set`).

pub mod bundle;
pub mod commands;
pub mod edit;
pub mod execute;
pub mod image;
pub mod markers;
pub mod plan;
pub mod report;
pub mod settings;

#[cfg(test)]
mod tests_edit;
#[cfg(test)]
mod tests_plan;
#[cfg(test)]
mod tests_settings;
