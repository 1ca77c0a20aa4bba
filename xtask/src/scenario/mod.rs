//! `cargo xtask scenario NAME [--quick]`: reliability scenarios with real
//! processes. Each prints PASS/FAIL lines with figures and fails the command
//! when any check fails.
//!
//! Scenarios: `crash`, `db-restart`, `workers`, `scale`, `hostile`, `roundtrip`, `servers`.

mod agreement;
mod crash;
mod db_restart;
mod hostile;
mod roundtrip;
mod scale;
mod servers;
mod sync_worker;
mod workers;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

/// Collects check results and prints each as it is made.
#[derive(Default)]
pub struct Checks {
    failed: usize,
}

impl Checks {
    pub fn check(&mut self, ok: bool, what: &str) {
        println!("{} {what}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            self.failed += 1;
        }
    }

    pub fn finish(self) -> Result<()> {
        if self.failed > 0 {
            bail!("{} checks failed", self.failed);
        }
        Ok(())
    }
}

pub fn run(name: &str, quick: bool) -> Result<()> {
    match name {
        "crash" => crash::run(quick),
        "db-restart" => db_restart::run(quick),
        "workers" => workers::run(quick),
        "hostile" => hostile::run(quick),
        "scale" => scale::run(quick),
        "roundtrip" => roundtrip::run(quick),
        "servers" => servers::run(quick),
        other => bail!(
            "unknown scenario `{other}`; expected crash, db-restart, workers, scale, hostile, roundtrip or servers"
        ),
    }
}

/// A workspace binary beside this xtask, built on demand in the same profile.
pub fn workspace_binary(package: &str, binary: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| anyhow::anyhow!("xtask has no folder"))?;
    let path = dir.join(binary);
    let mut build = Command::new(env!("CARGO"));
    if dir.ends_with("release") {
        build.args(["build", "-q", "--release", "-p", package, "--bin", binary]);
    } else {
        // The whole workspace with its test features, as `cargo test --workspace`
        // and `cargo build --workspace --all-targets` build it: one feature set,
        // so nothing is compiled twice (and in CI nothing is left to build).
        build.args(["build", "-q", "--workspace", "--all-targets"]);
    }
    anyhow::ensure!(build.status()?.success(), "building {binary} failed");
    Ok(path)
}
