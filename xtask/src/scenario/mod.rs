//! `cargo xtask scenario NAME [--quick]`: reliability scenarios with real
//! processes. Each prints PASS/FAIL lines with figures and fails the command
//! when any check fails.
//!
//! Built so far: `workers`, `hostile`. The others of issue 8 (`crash`,
//! `db-restart`, `scale`) are not written yet.

mod hostile;
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
        "workers" => workers::run(quick),
        "hostile" => hostile::run(quick),
        other => bail!("unknown scenario `{other}`; built so far: workers, hostile"),
    }
}

/// A workspace binary beside this xtask, built on demand in the same profile.
pub fn workspace_binary(package: &str, binary: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| anyhow::anyhow!("xtask has no folder"))?;
    let path = dir.join(binary);
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "-q", "-p", package, "--bin", binary]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    anyhow::ensure!(build.status()?.success(), "building {binary} failed");
    Ok(path)
}
