//! `cargo xtask scenario NAME [--quick]`: reliability scenarios with real
//! processes. Each prints PASS/FAIL lines with figures and fails the command
//! when any check fails.
//!
//! Built so far: `workers`. The others of issue 8 (`crash`, `db-restart`,
//! `scale`, `hostile`) are not written yet.

mod workers;

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
        other => bail!("unknown scenario `{other}`; built so far: workers"),
    }
}
