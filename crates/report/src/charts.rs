//! SVG charts (plotters, SVG backend only). Log axes are drawn as a linear axis over log values
//! with labels mapped back, so every chart shares one coordinate type.

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (760, 420);
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];

/// One line of a chart: a name for the legend and its (x, y) points in data units.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn as a flat reference line (a ceiling) instead of points.
    pub reference: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            reference: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Axis {
    Linear,
    /// Linear, for counts (nodes): only whole numbers get a label.
    Count,
    /// Base-2 log: client counts and batch sizes.
    Log2,
    /// Base-10 log: latencies spanning decades.
    Log10,
}

impl Axis {
    fn to_plot(self, v: f64) -> f64 {
        match self {
            Axis::Linear | Axis::Count => v,
            Axis::Log2 => v.max(f64::MIN_POSITIVE).log2(),
            Axis::Log10 => v.max(f64::MIN_POSITIVE).log10(),
        }
    }

    fn label(self, v: f64) -> String {
        let data = match self {
            Axis::Count if (v - v.round()).abs() > 1e-9 => return String::new(),
            Axis::Linear | Axis::Count => v,
            Axis::Log2 => 2f64.powf(v),
            Axis::Log10 => 10f64.powf(v),
        };
        short_number(data)
    }

    /// Plot-space range covering `lo..=hi` (data units), widened to whole powers on log axes.
    fn range(self, lo: f64, hi: f64) -> (f64, f64) {
        let (lo, hi) = (self.to_plot(lo), self.to_plot(hi));
        match self {
            Axis::Linear | Axis::Count => {
                let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.05).max(1e-9);
                ((lo - pad).max(0.0).min(lo), hi + pad)
            }
            Axis::Log2 | Axis::Log10 => {
                let (lo, hi) = (lo.floor(), hi.ceil());
                (lo, if hi > lo { hi } else { lo + 1.0 })
            }
        }
    }
}

fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || (v.fract() == 0.0 && a >= 1.0) {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.2}")
    }
}

pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_axis: Axis,
    pub y_axis: Axis,
    pub series: &'a [Series],
    /// Where the legend goes: a corner the data leaves empty.
    pub legend: Legend,
}

/// Legend corners (plotters' position type is not `Copy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Legend {
    UpperLeft,
    LowerRight,
}

fn plotting<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// Draws `chart` to `path`. Series without points are left out of the chart and its legend.
pub fn draw_lines(path: &Path, chart: &LineChart) -> anyhow::Result<()> {
    let all: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if all.is_empty() {
        return Err(anyhow!("chart {:?} has no points", chart.title));
    }
    let (xmin, xmax) = min_max(all.iter().map(|p| p.0));
    let (ymin, ymax) = min_max(all.iter().map(|p| p.1));
    let (x0, x1) = chart.x_axis.range(xmin, xmax);
    let y_floor = if chart.y_axis == Axis::Linear {
        0.0
    } else {
        ymin
    };
    let (y0, y1) = chart.y_axis.range(y_floor, ymax);

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plotting)?;
    let mut ctx = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(46)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plotting)?;
    let x_ticks = if chart.x_axis == Axis::Linear {
        8
    } else {
        (x1 - x0) as usize + 1
    };
    let y_ticks = if chart.y_axis == Axis::Linear {
        8
    } else {
        (y1 - y0) as usize + 1
    };
    let (xa, ya) = (chart.x_axis, chart.y_axis);
    ctx.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .x_labels(x_ticks)
        .y_labels(y_ticks)
        .x_label_formatter(&|v| xa.label(*v))
        .y_label_formatter(&|v| ya.label(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plotting)?;

    for (i, series) in chart.series.iter().enumerate() {
        if series.points.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let mut points: Vec<(f64, f64)> = series
            .points
            .iter()
            .map(|&(x, y)| (xa.to_plot(x), ya.to_plot(y)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if series.reference {
            let y = points[0].1;
            ctx.draw_series(LineSeries::new(
                [(x0, y), (x1, y)],
                ShapeStyle::from(&color).stroke_width(2),
            ))
            .map_err(plotting)?
            .label(&series.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
            continue;
        }
        ctx.draw_series(LineSeries::new(
            points.clone(),
            ShapeStyle::from(&color).stroke_width(2),
        ))
        .map_err(plotting)?
        .label(&series.name)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        ctx.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, 3, ShapeStyle::from(&color).filled())),
        )
        .map_err(plotting)?;
    }
    ctx.configure_series_labels()
        .position(match chart.legend {
            Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        })
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(plotting)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))
}

/// A histogram of `samples` in `bins` equal-width bins.
pub fn draw_histogram(
    path: &Path,
    title: &str,
    x_label: &str,
    samples: &[f64],
    bins: usize,
) -> anyhow::Result<()> {
    if samples.is_empty() || bins == 0 {
        return Err(anyhow!("histogram {title:?} has no samples"));
    }
    let (lo, hi) = min_max(samples.iter().copied());
    let width = ((hi - lo) / bins as f64).max(1e-9);
    let mut counts = vec![0u32; bins];
    for &s in samples {
        let bin = (((s - lo) / width) as usize).min(bins - 1);
        counts[bin] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1) as f64;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plotting)?;
    let mut ctx = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(46)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..lo + width * bins as f64, 0f64..top * 1.15)
        .map_err(plotting)?;
    ctx.configure_mesh()
        .x_desc(x_label)
        .y_desc("trials")
        .x_labels(8)
        .y_labels((top as usize + 1).min(6))
        .x_label_formatter(&|v| short_number(*v))
        .y_label_formatter(&|v| short_number(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plotting)?;
    ctx.draw_series(counts.iter().enumerate().map(|(i, &c)| {
        let x = lo + width * i as f64;
        Rectangle::new(
            [(x, 0.0), (x + width, c as f64)],
            ShapeStyle::from(&COLORS[0]).filled(),
        )
    }))
    .map_err(plotting)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))
}

/// Empirical CDF points of `samples`: (value, fraction of samples ≤ value).
pub fn cdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, (i + 1) as f64 / n))
        .collect()
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_ends_at_one_and_is_sorted() {
        let points = cdf(&[3.0, 1.0, 2.0, 2.0]);
        assert_eq!(points.first(), Some(&(1.0, 0.25)));
        assert_eq!(points.last(), Some(&(3.0, 1.0)));
    }

    #[test]
    fn a_count_axis_labels_whole_numbers_only() {
        // A chart of 1 and 3 nodes must not read "1.5 nodes".
        assert_eq!(Axis::Count.label(1.5), "");
        assert_eq!(Axis::Count.label(3.0), "3");
    }

    #[test]
    fn log_axis_labels_map_back_to_data() {
        assert_eq!(Axis::Log2.label(Axis::Log2.to_plot(64.0)), "64");
        assert_eq!(Axis::Log10.label(-1.0), "0.10");
        assert_eq!(Axis::Log2.range(1.0, 256.0), (0.0, 8.0));
    }

    #[test]
    fn chart_is_an_svg_with_its_title_and_legend() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let series = [Series::new(
            "distsync 3 nodes",
            vec![(1.0, 900.0), (16.0, 3300.0)],
        )];
        draw_lines(
            &path,
            &LineChart {
                title: "throughput",
                x_label: "clients",
                y_label: "pairs/s",
                x_axis: Axis::Log2,
                y_axis: Axis::Linear,
                series: &series,
                legend: Legend::UpperLeft,
            },
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("throughput") && svg.contains("distsync 3 nodes"));
    }

    #[test]
    fn empty_chart_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let chart = LineChart {
            title: "t",
            x_label: "x",
            y_label: "y",
            x_axis: Axis::Linear,
            y_axis: Axis::Linear,
            series: &[],
            legend: Legend::UpperLeft,
        };
        assert!(draw_lines(&dir.path().join("c.svg"), &chart).is_err());
    }
}
