//! `cargo xtask bench`: suites of measurements, each against a baseline
//! measured in the same run.

pub(crate) mod core;
mod embed;
mod queue;
mod report;
mod store;
pub mod sync;
pub mod tools;

use std::path::Path;

use anyhow::{Result, bail};
use serde::Serialize;

/// Is a bigger value better (a throughput) or a smaller one (a latency)?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
}

/// What a result must reach to meet its target.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// `ratio >= x` against the baseline (higher-is-better figures) or
    /// `baseline / value >= x` (lower-is-better).
    RatioAtLeast(f64),
    /// The value itself must be at least this.
    ValueAtLeast(f64),
    /// The value itself must be at most this.
    ValueAtMost(f64),
}

/// One measured figure, ready to print and serialise.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub suite: String,
    pub name: String,
    pub unit: String,
    pub value: f64,
    pub baseline_name: Option<String>,
    pub baseline_value: Option<f64>,
    pub ratio: Option<f64>,
    pub target: String,
    /// The value the target asks for (for charts), when it names one.
    pub target_value: Option<f64>,
    pub meets: bool,
    /// Sizes, settings and machine facts that the figure depends on.
    pub settings: String,
}

/// Builds a result; ratio and target check follow from the inputs.
pub struct Measurement<'a> {
    pub suite: &'a str,
    pub name: &'a str,
    pub unit: &'a str,
    pub value: f64,
    pub baseline: Option<(&'a str, f64)>,
    pub direction: Direction,
    pub target: Target,
    pub settings: String,
}

/// A number with at most three decimals and no trailing zeros: 5, 0.909.
fn short(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl Measurement<'_> {
    pub fn finish(self) -> BenchResult {
        let ratio = self.baseline.map(|(_, base)| match self.direction {
            Direction::HigherIsBetter => self.value / base,
            Direction::LowerIsBetter => base / self.value,
        });
        let target_value = match self.target {
            Target::RatioAtLeast(x) => self.baseline.map(|(_, base)| match self.direction {
                Direction::HigherIsBetter => base * x,
                Direction::LowerIsBetter => base / x,
            }),
            Target::ValueAtLeast(x) | Target::ValueAtMost(x) => Some(x),
        };
        let (meets, target) = match self.target {
            Target::RatioAtLeast(x) => (ratio.is_some_and(|r| r >= x), format!("ratio >= {}", short(x))),
            Target::ValueAtLeast(x) => (self.value >= x, format!(">= {x} {}", self.unit)),
            Target::ValueAtMost(x) => (self.value <= x, format!("<= {x} {}", self.unit)),
        };
        BenchResult {
            suite: self.suite.to_owned(),
            name: self.name.to_owned(),
            unit: self.unit.to_owned(),
            value: self.value,
            baseline_name: self.baseline.map(|(name, _)| name.to_owned()),
            baseline_value: self.baseline.map(|(_, value)| value),
            ratio,
            target,
            target_value,
            meets,
            settings: self.settings,
        }
    }
}

type Suite = fn(bool) -> Result<Vec<BenchResult>>;

const SUITES: &[(&str, Suite)] = &[
    ("core", core::run),
    ("store", store::run),
    ("queue", queue::run),
    ("embed", embed::run),
    ("sync", sync::run),
    ("tools", tools::run),
];

pub fn run(names: &[String], quick: bool, json: Option<&Path>, report_dir: Option<&Path>) -> Result<()> {
    let selected: Vec<&(&str, Suite)> = if names.is_empty() {
        SUITES.iter().collect()
    } else {
        names
            .iter()
            .map(|name| {
                SUITES.iter().find(|(known, _)| known == name).ok_or_else(|| {
                    let known: Vec<&str> = SUITES.iter().map(|(n, _)| *n).collect();
                    anyhow::anyhow!("unknown suite `{name}`; known suites: {}", known.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    println!("machine: {}", machine_description());
    let mut results = Vec::new();
    for (name, suite) in selected {
        eprintln!("running suite {name}{}", if quick { " (quick)" } else { "" });
        results.extend(suite(quick)?);
    }
    print_table(&results);
    if let Some(path) = json {
        let document = serde_json::json!({ "machine": machine_description(), "results": results });
        std::fs::write(path, serde_json::to_string_pretty(&document)?)?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = report_dir {
        report::write(dir, &machine_description(), &results)?;
        println!("wrote {}", dir.join("index.html").display());
    }
    let missed = results.iter().filter(|r| !r.meets).count();
    if missed > 0 {
        println!("{missed} of {} results miss their target", results.len());
    }
    if results.is_empty() {
        bail!("no results");
    }
    Ok(())
}

fn print_table(results: &[BenchResult]) {
    println!(
        "{:<8} {:<34} {:>14} {:>14} {:<10} {:>8} {:<16} meets",
        "suite", "name", "baseline", "value", "unit", "ratio", "target"
    );
    for r in results {
        let baseline = r.baseline_value.map_or_else(|| "-".to_owned(), format_figure);
        let ratio = r.ratio.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x"));
        println!(
            "{:<8} {:<34} {:>14} {:>14} {:<10} {:>8} {:<16} {}",
            r.suite,
            r.name,
            baseline,
            format_figure(r.value),
            r.unit,
            ratio,
            r.target,
            if r.meets { "yes" } else { "NO" }
        );
        println!("         {}", r.settings);
    }
}

fn format_figure(value: f64) -> String {
    if value.abs() >= 100.0 { format!("{value:.0}") } else { format!("{value:.3}") }
}

fn machine_description() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".to_owned());
    format!("{cores} cores, {cpu}, {} build", if cfg!(debug_assertions) { "debug" } else { "release" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(value: f64, baseline: f64, direction: Direction, target: Target) -> BenchResult {
        Measurement {
            suite: "t",
            name: "n",
            unit: "u",
            value,
            baseline: Some(("base", baseline)),
            direction,
            target,
            settings: String::new(),
        }
        .finish()
    }

    #[test]
    fn ratio_follows_direction_and_target_decides_meets() {
        let faster = measure(300.0, 100.0, Direction::HigherIsBetter, Target::RatioAtLeast(2.0));
        assert_eq!((faster.ratio, faster.meets), (Some(3.0), true));
        let slower_latency = measure(4.0, 2.0, Direction::LowerIsBetter, Target::RatioAtLeast(1.0));
        assert_eq!((slower_latency.ratio, slower_latency.meets), (Some(0.5), false));
        assert!(!measure(3.5, 1.0, Direction::LowerIsBetter, Target::ValueAtMost(3.0)).meets);
        assert!(measure(50.0, 1.0, Direction::HigherIsBetter, Target::ValueAtLeast(50.0)).meets);
    }
}
