//! The scale report's charts, as SVG: the p50 and p99 ratios against the
//! baseline and the server connections held, over the number of tenants
//! (log scale), one line per strategy and scope mode, Zipf traffic at one
//! concurrency.

use std::path::Path;

use plotters::prelude::*;

use crate::{Access, Cell};

/// One line: a strategy in one mode, its points in tenant order.
fn lines(
    cells: &[Cell],
    clients: usize,
    value: fn(&Cell) -> f64,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for cell in cells
        .iter()
        .filter(|c| c.access == Access::Zipf && c.clients == clients)
    {
        let name = format!("{} · {:?}", cell.strategy, cell.mode);
        let point = (cell.tenants as f64, value(cell));
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push(point),
            None => out.push((name, vec![point])),
        }
    }
    for (_, points) in &mut out {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x));
    let x_max = xs.fold(10.0_f64, f64::max) * 1.5;
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0_f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((5.0_f64..x_max).log_scale(), 0.0_f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("tenants")
        .y_desc(y_label)
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A chart: its file, title, y axis, and the value plotted.
type ChartSpec = (&'static str, String, &'static str, fn(&Cell) -> f64);

/// Writes `scale-p50.svg`, `scale-p99.svg` and `scale-connections.svg`
/// into `dir`, for Zipf traffic at `clients` clients.
pub(crate) fn write_all(dir: &Path, cells: &[Cell], clients: usize) {
    let charts: [ChartSpec; 3] = [
        (
            "scale-p50.svg",
            format!("p50 latency / baseline, Zipf, {clients} clients"),
            "ratio",
            Cell::ratio50,
        ),
        (
            "scale-p99.svg",
            format!("p99 latency / baseline, Zipf, {clients} clients"),
            "ratio",
            Cell::ratio99,
        ),
        (
            "scale-connections.svg",
            format!("server connections held, Zipf, {clients} clients"),
            "connections",
            |c| c.connections as f64,
        ),
    ];
    for (file, title, y, value) in charts {
        if let Err(error) = chart(&dir.join(file), &title, y, &lines(cells, clients, value)) {
            eprintln!("scale: chart {file} not written: {error}");
        }
    }
}
