//! `bench/results.svg`: throughput and p99 latency per scenario, side by
//! side, as horizontal bars (plotters, SVG backend).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::record::Measured;
use crate::report::{Bar, Row};
use crate::stats::summary;

const BASELINE: RGBColor = RGBColor(150, 150, 150);
const RPCGUARD: RGBColor = RGBColor(45, 110, 190);
const FLOOD: RGBColor = RGBColor(200, 80, 60);

/// Writes the plot of `rows` (those with a [`Bar`] colour and runs).
pub fn svg(m: &Measured, rows: &[&Row], path: &Path) -> anyhow::Result<()> {
    let rows: Vec<(&str, f64, f64, RGBColor)> = rows
        .iter()
        .filter_map(|r| {
            let color = colour(r.bar)?;
            let runs = m.runs.of(r.id);
            if runs.is_empty() {
                return None;
            }
            let s = summary(runs);
            Some((r.label, s.rps, s.p99_us / 1000.0, color))
        })
        .collect();
    let n = rows.len().max(1);
    let height = 170 + 44 * n as u32;
    let root = SVGBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "rpcguard vs bare jsonrpsee — {} cores ({}), {} conns, medians of {} × {} s — commit {}",
        m.machine.cores,
        m.machine.model,
        m.args.connections,
        m.args.rounds,
        m.args.duration,
        m.commit
    );
    let root = root.titled(&title, ("sans-serif", 18))?;
    let (charts, legend) = root.split_vertically(height - 70);
    let legend_style = TextStyle::from(("sans-serif", 13).into_font());
    for (i, (color, text)) in [
        (
            BASELINE,
            "bare jsonrpsee baseline (bench/src/bin/baseline.rs)",
        ),
        (
            RPCGUARD,
            "rpcguard (security layer, JWT, SQLite user lookup)",
        ),
        (
            FLOOD,
            "rpcguard get_caller while a sign_in flood keeps bcrypt busy",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let x = 40 + 450 * i as i32;
        legend.draw(&Rectangle::new([(x, 12), (x + 18, 26)], color.filled()))?;
        legend.draw_text(text, &legend_style, (x + 26, 13))?;
    }
    let (left, right) = charts.split_horizontally(760);
    panel(
        &left,
        &rows,
        "throughput (requests/s)",
        |r| r.1,
        |v| format!("{v:.0}"),
        230,
    )?;
    panel(
        &right,
        &rows,
        "p99 latency (ms)",
        |r| r.2,
        |v| format!("{v:.2}"),
        20,
    )?;
    root.present()?;
    Ok(())
}

/// The colour of a row's bars, or `None` when it is not plotted.
fn colour(bar: Bar) -> Option<RGBColor> {
    match bar {
        Bar::Baseline => Some(BASELINE),
        Bar::Rpcguard => Some(RPCGUARD),
        Bar::DuringFlood => Some(FLOOD),
        Bar::NotPlotted => None,
    }
}

/// One chart: a horizontal bar per row of `value(row)`, labelled with `fmt`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    rows: &[(&str, f64, f64, RGBColor)],
    caption: &str,
    value: fn(&(&str, f64, f64, RGBColor)) -> f64,
    fmt: fn(f64) -> String,
    label_width: u32,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let n = rows.len().max(1);
    let max = rows.iter().map(value).fold(0.0f64, f64::max).max(1e-9) * 1.18;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .margin_left(label_width)
        .x_label_area_size(30)
        .build_cartesian_2d(0.0..max, 0.0..n as f64)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(6)
        .light_line_style(RGBColor(242, 242, 242))
        .x_label_formatter(&|v| fmt(*v))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, row) in rows.iter().enumerate() {
        // First row at the top.
        let y = (n - 1 - i) as f64;
        let v = value(row);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.18), (v, y + 0.82)],
                row.3.filled(),
            )))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let value_style =
            TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((v, y + 0.5)) + Text::new(fmt(v), (5, 0), value_style),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if label_width > 100 {
            let label_style = TextStyle::from(("sans-serif", 13).into_font())
                .pos(Pos::new(HPos::Right, VPos::Center));
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((0.0, y + 0.5))
                        + Text::new(row.0.to_owned(), (-8, 0), label_style),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(())
}
