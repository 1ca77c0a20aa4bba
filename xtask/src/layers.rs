//! The layer rule of ARCHITECTURE.md, checked against `cargo metadata`.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result};

/// Workspace crates each crate may depend on (normal, dev and build
/// dependencies alike). Dependencies point down only.
pub const ALLOWED: &[(&str, &[&str])] = &[
    ("batch-core", &[]),
    ("sql-migrations", &[]),
    ("entity-store", &["batch-core", "sql-migrations"]),
    ("job-queue", &["batch-core", "sql-migrations"]),
    ("embedding", &["batch-core", "sql-migrations", "entity-store", "job-queue"]),
    ("local-embedder", &["embedding"]),
    ("batch-tools", &["batch-core", "entity-store", "job-queue", "embedding"]),
    ("directory-sync", &["batch-core", "sql-migrations", "entity-store", "job-queue", "embedding", "batch-tools"]),
    ("scratch-pg", &[]),
    ("workspace-hack", &[]),
    (
        "xtask",
        &[
            "batch-core",
            "entity-store",
            "job-queue",
            "embedding",
            "local-embedder",
            "batch-tools",
            "directory-sync",
            "scratch-pg",
        ],
    ),
];

/// Test-support crates every crate may use as a dev-dependency (and only
/// so: a normal dependency on one is checked against [`ALLOWED`]).
pub const TEST_SUPPORT: &[&str] = &["scratch-pg"];

/// Crates every crate depends on and no rule applies to: `workspace-hack`
/// only pins the features of third-party dependencies (`cargo hakari`).
pub const EVERYWHERE: &[&str] = &["workspace-hack"];

/// An edge `from -> to` between workspace crates.
pub type Edge = (String, String);

/// Reads the workspace's dependency edges between its own crates.
pub fn workspace_edges() -> Result<Vec<Edge>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let packages = metadata["packages"].as_array().context("no packages in cargo metadata")?;
    let members: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut edges = Vec::new();
    for package in packages {
        let from = package["name"].as_str().context("package without name")?;
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let to = dependency["name"].as_str().context("dependency without name")?;
            let test_support = dependency["kind"] == "dev" && TEST_SUPPORT.contains(&to);
            // A crate's dev-dependency on itself only turns features on for its tests.
            let itself = dependency["kind"] == "dev" && to == from;
            if members.contains(to) && !test_support && !itself && !EVERYWHERE.contains(&to) {
                edges.push((from.to_owned(), to.to_owned()));
            }
        }
    }
    Ok(edges)
}

/// Edges the rule forbids, described for a human; unknown crates are
/// violations too, so a new crate must be placed in the rule.
pub fn violations(edges: &[Edge]) -> Vec<String> {
    edges
        .iter()
        .filter_map(|(from, to)| match ALLOWED.iter().find(|(name, _)| name == from) {
            None => Some(format!("{from} is not in the layer rule (xtask/src/layers.rs)")),
            Some((_, allowed)) if !allowed.contains(&to.as_str()) => {
                Some(format!("{from} depends on {to}, which the layer rule forbids"))
            }
            Some(_) => None,
        })
        .collect()
}

pub fn check_workspace() -> Result<Vec<String>> {
    Ok(violations(&workspace_edges()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str) -> Edge {
        (from.to_owned(), to.to_owned())
    }

    #[test]
    fn the_workspace_obeys_the_layer_rule() {
        let edges = workspace_edges().unwrap();
        assert!(!edges.is_empty(), "expected some edges between workspace crates");
        let broken = violations(&edges);
        assert!(broken.is_empty(), "layer rule broken:\n{}", broken.join("\n"));
    }

    #[test]
    fn forbidden_edges_are_caught() {
        let broken = violations(&[
            edge("entity-store", "job-queue"),
            edge("job-queue", "entity-store"),
            edge("batch-core", "entity-store"),
            edge("embedding", "directory-sync"),
            edge("embedding", "entity-store"),
            edge("entity-store", "scratch-pg"),
            edge("new-crate", "batch-core"),
        ]);
        assert_eq!(
            broken,
            vec![
                "entity-store depends on job-queue, which the layer rule forbids",
                "job-queue depends on entity-store, which the layer rule forbids",
                "batch-core depends on entity-store, which the layer rule forbids",
                "embedding depends on directory-sync, which the layer rule forbids",
                "entity-store depends on scratch-pg, which the layer rule forbids",
                "new-crate is not in the layer rule (xtask/src/layers.rs)",
            ]
        );
    }
}
