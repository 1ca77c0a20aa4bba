//! One module per command, as cargo's `src/bin/cargo/commands/`.

pub(crate) mod dashboard;
pub(crate) mod folder_job;
pub(crate) mod jobs;
pub(crate) mod search;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod tool;
pub(crate) mod watch;
pub(crate) mod worker;
