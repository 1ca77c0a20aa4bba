//! `cargo xtask bench --report DIR`: an HTML page with one bar chart per
//! result (baseline and value, the target marked as a line) drawn by
//! plotters' SVG backend, and the results as JSON beside it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::BenchResult;

pub fn write(dir: &Path, machine: &str, results: &[BenchResult]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let document = serde_json::json!({ "machine": machine, "results": results });
    std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&document)?)?;
    std::fs::write(dir.join("index.html"), page(machine, results)?)?;
    Ok(())
}

fn page(machine: &str, results: &[BenchResult]) -> Result<String> {
    let met = results.iter().filter(|r| r.meets).count();
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Benchmarks</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; color: #222; }}\n\
         .result {{ margin: 1.5em 0; }} .meets {{ color: #1a7f37; }} .misses {{ color: #c62828; font-weight: bold; }}\n\
         .settings {{ color: #666; font-size: 0.9em; }}\n</style></head><body>\n\
         <h1>Benchmarks</h1>\n<p>{} &mdash; {met} of {} results meet their target. JSON: <a href=\"bench.json\">bench.json</a></p>\n",
        escape(machine),
        results.len()
    );
    let mut suite = "";
    for result in results {
        if result.suite != suite {
            suite = &result.suite;
            writeln!(html, "<h2>{}</h2>", escape(suite))?;
        }
        let verdict =
            if result.meets { "<span class=\"meets\">meets</span>" } else { "<span class=\"misses\">misses</span>" };
        let mut ratio = result.ratio.map(|r| format!("ratio {r:.2}x, ")).unwrap_or_default();
        if result.repetitions > 1 {
            write!(ratio, "median of {} runs (min {:.3}, max {:.3}), ", result.repetitions, result.min, result.max)?;
        }
        writeln!(
            html,
            "<div class=\"result\">{}\n<div>{ratio}target {}: {verdict}</div><div class=\"settings\">{}</div></div>",
            chart(result)?,
            escape(&result.target),
            escape(&result.settings)
        )?;
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

/// Horizontal bars: the baseline (grey) and the value (green when it meets
/// the target, red when not); the target value as a dashed line.
fn chart(result: &BenchResult) -> Result<String> {
    let mut bars: Vec<(String, f64, RGBColor)> = Vec::new();
    if let (Some(name), Some(value)) = (&result.baseline_name, result.baseline_value) {
        bars.push((format!("baseline ({name})"), value, RGBColor(150, 150, 150)));
    }
    let colour = if result.meets { RGBColor(46, 160, 67) } else { RGBColor(198, 40, 40) };
    bars.push(("value".to_owned(), result.value, colour));
    let largest = bars.iter().map(|(_, v, _)| *v).chain(result.target_value).fold(0.0_f64, f64::max);
    let x_max = if largest > 0.0 { largest * 1.15 } else { 1.0 };
    let height = 70 + 40 * bars.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&result.name, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .build_cartesian_2d(0.0..x_max, 0.0..bars.len() as f64)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc(result.unit.as_str())
            .x_label_formatter(&|x| axis_label(*x))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let rows = bars.iter().enumerate().map(|(i, (_, value, colour))| {
            let top = (bars.len() - i) as f64;
            Rectangle::new([(0.0, top - 0.15), (*value, top - 0.85)], colour.filled())
        });
        chart.draw_series(rows).map_err(|e| anyhow!("{e}"))?;
        let labels = bars.iter().enumerate().map(|(i, (name, value, _))| {
            let top = (bars.len() - i) as f64;
            Text::new(
                format!("{name}: {}", super::format_figure(*value)),
                (x_max * 0.01, top - 0.35),
                ("sans-serif", 14),
            )
        });
        chart.draw_series(labels).map_err(|e| anyhow!("{e}"))?;
        if let Some(target) = result.target_value {
            let line = PathElement::new(vec![(target, 0.0), (target, bars.len() as f64)], BLACK.stroke_width(2));
            let label = Text::new(format!("target {}", result.target), (target, 0.05), ("sans-serif", 12));
            chart.draw_series([line]).map_err(|e| anyhow!("{e}"))?;
            chart.draw_series([label]).map_err(|e| anyhow!("{e}"))?;
        }
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(svg)
}

/// Whole numbers without decimals (axis ticks are round), others as the table shows them.
fn axis_label(x: f64) -> String {
    if x.fract() == 0.0 { format!("{x:.0}") } else { super::format_figure(x) }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Direction, Measurement, Target};

    #[test]
    fn the_page_charts_every_result_with_its_target() {
        let results = vec![
            Measurement {
                suite: "tools",
                name: "batch_add <vs> one",
                unit: "docs/s",
                value: 2_000.0,
                baseline: Some(("single", 100.0)),
                direction: Direction::HigherIsBetter,
                target: Target::RatioAtLeast(20.0),
                settings: "5000 docs".into(),
            }
            .finish(),
            Measurement {
                suite: "sync",
                name: "registration",
                unit: "ms",
                value: 12.0,
                baseline: None,
                direction: Direction::LowerIsBetter,
                target: Target::ValueAtMost(10.0),
                settings: String::new(),
            }
            .finish(),
        ];
        assert_eq!(results[0].target_value, Some(2_000.0));
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "test machine", &results).unwrap();
        let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert_eq!(html.matches("<svg").count(), 2, "one chart per result");
        assert!(html.contains("batch_add &lt;vs&gt; one") && !html.contains("batch_add <vs>"), "names escaped");
        assert!(html.contains("1 of 2 results meet their target"));
        assert!(html.contains("target ratio &gt;= 20") && html.contains("misses"), "targets and verdicts shown");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("bench.json")).unwrap()).unwrap();
        assert_eq!(json["results"].as_array().unwrap().len(), 2);
    }
}
