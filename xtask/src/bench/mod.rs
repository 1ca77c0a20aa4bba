//! `cargo xtask bench`: suites of measurements, each against a baseline
//! measured in the same run.

pub(crate) mod core;
mod embed;
mod queue;
mod report;
mod store;
pub mod sync;
pub mod tools;
mod vault;
mod vector_search;

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
    /// Every repetition meets the target (the slowest counts, not the median).
    pub meets: bool,
    /// Sizes, settings and machine facts that the figure depends on.
    pub settings: String,
    /// Runs of the suite this result is the median of.
    pub repetitions: usize,
    /// The lowest and highest value over the repetitions.
    pub min: f64,
    /// See `min`.
    pub max: f64,
    /// Each repetition's value, in the order run.
    pub values: Vec<f64>,
    /// Each repetition's own ratio to the baseline measured beside it, in
    /// the order run (empty without a baseline): what `meets` is judged on.
    pub ratios: Vec<f64>,
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
            repetitions: 1,
            min: self.value,
            max: self.value,
            values: vec![self.value],
            ratios: ratio.into_iter().collect(),
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) { f64::midpoint(sorted[mid - 1], sorted[mid]) } else { sorted[mid] }
}

/// One result per name from several runs of a suite: value, baseline,
/// ratio and target value are medians (the ratio is the median of each
/// run's own ratio, so a baseline and value measured together stay
/// paired), `min` and `max` span the values, and the result meets its
/// target only if every run did. A name missing from some run is an error.
pub fn merge(runs: &[Vec<BenchResult>]) -> Result<Vec<BenchResult>> {
    let Some(first) = runs.first() else { return Ok(Vec::new()) };
    let mut merged = Vec::with_capacity(first.len());
    for result in first {
        let same: Vec<&BenchResult> = runs
            .iter()
            .map(|run| {
                run.iter()
                    .find(|r| r.suite == result.suite && r.name == result.name)
                    .ok_or_else(|| anyhow::anyhow!("{} {}: missing from a repetition", result.suite, result.name))
            })
            .collect::<Result<_>>()?;
        let values: Vec<f64> = same.iter().map(|r| r.value).collect();
        let of = |pick: fn(&BenchResult) -> Option<f64>| -> Option<f64> {
            let picked: Vec<f64> = same.iter().filter_map(|r| pick(r)).collect();
            (picked.len() == same.len()).then(|| median(&picked))
        };
        merged.push(BenchResult {
            value: median(&values),
            baseline_value: of(|r| r.baseline_value),
            ratio: of(|r| r.ratio),
            target_value: of(|r| r.target_value),
            meets: same.iter().all(|r| r.meets),
            repetitions: same.len(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            values,
            ratios: same.iter().filter_map(|r| r.ratio).collect(),
            ..result.clone()
        });
    }
    Ok(merged)
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

/// Parts of a suite that can also be run alone by name; a full run gets
/// them from their suite (`vault` from `sync`).
const PARTS: &[(&str, Suite)] = &[("vault", |_quick| vault::run())];

/// Runs `names` (all suites when empty), each `repeat` times, and prints
/// (and writes) the merged results.
pub fn run(names: &[String], quick: bool, repeat: usize, json: Option<&Path>, report_dir: Option<&Path>) -> Result<()> {
    anyhow::ensure!(repeat >= 1, "--repeat must be at least 1");
    let selected: Vec<&(&str, Suite)> = if names.is_empty() {
        SUITES.iter().collect()
    } else {
        names
            .iter()
            .map(|name| {
                SUITES.iter().chain(PARTS).find(|(known, _)| known == name).ok_or_else(|| {
                    let known: Vec<&str> = SUITES.iter().chain(PARTS).map(|(n, _)| *n).collect();
                    anyhow::anyhow!("unknown suite `{name}`; known suites: {}", known.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    println!("machine: {}", machine_description());
    let mut results = Vec::new();
    for (name, suite) in selected {
        let mut runs = Vec::with_capacity(repeat);
        for round in 1..=repeat {
            eprintln!("running suite {name}{}, repetition {round} of {repeat}", if quick { " (quick)" } else { "" });
            runs.push(suite(quick)?);
        }
        results.extend(merge(&runs)?);
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
        if r.repetitions > 1 {
            let spread = if r.min > 0.0 { (r.max / r.min - 1.0) * 100.0 } else { 0.0 };
            let ratios: Vec<String> = r.ratios.iter().map(|ratio| format!("{ratio:.2}")).collect();
            let ratios =
                if ratios.is_empty() { String::new() } else { format!("; ratio per run {}", ratios.join(" ")) };
            println!(
                "         median of {}: min {}, max {} (spread {spread:.0}%){ratios}",
                r.repetitions,
                format_figure(r.min),
                format_figure(r.max)
            );
        }
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
    fn repetitions_merge_into_medians_and_meet_only_if_every_one_does() {
        let run = |value: f64, baseline: f64| {
            vec![measure(value, baseline, Direction::HigherIsBetter, Target::RatioAtLeast(2.0))]
        };
        let merged = merge(&[run(300.0, 100.0), run(100.0, 100.0), run(250.0, 100.0), run(500.0, 200.0)]).unwrap();
        let r = &merged[0];
        assert_eq!((r.repetitions, r.min, r.max), (4, 100.0, 500.0));
        assert_eq!(r.values, vec![300.0, 100.0, 250.0, 500.0]);
        assert!((r.value - 275.0).abs() < 1e-9, "median of an even count: mean of the middle two, got {}", r.value);
        assert_eq!(r.ratio, Some(2.5), "median of the paired ratios 3, 1, 2.5, 2.5");
        assert_eq!(r.ratios, vec![3.0, 1.0, 2.5, 2.5]);
        assert_eq!(r.baseline_value, Some(100.0));
        assert!(!r.meets, "one repetition at ratio 1 misses the target of 2");
        let all_meet = merge(&[run(300.0, 100.0), run(200.0, 100.0)]).unwrap();
        assert!(all_meet[0].meets);
        let mut renamed = run(1.0, 1.0);
        renamed[0].name = "other".into();
        assert!(merge(&[run(1.0, 1.0), renamed]).is_err());
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
