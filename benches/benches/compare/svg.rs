//! The SVG plots, drawn with `plotters` (its SVG backend only): each function here only says
//! what a chart shows.

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::PathBuf;

const SIZE: (u32, u32) = (760, 440);
/// The legend sits in this much room right of the plot.
const LEGEND_WIDTH: u32 = 250;
const COLORS: [RGBColor; 7] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x17, 0xbe, 0xcf),
];

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// One line of a chart.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// Where the plots go: the workspace's `target/plots/`, or with `--write-plots` the published
/// `docs/plots/` (so that a quick or partial run never replaces the published figures).
pub(crate) fn write(file: &str, svg: &str) {
    let publish = std::env::args().any(|a| a == "--write-plots");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(if publish {
        "../docs/plots"
    } else {
        "../target/plots"
    });
    std::fs::create_dir_all(&dir).expect("create the plots folder");
    let path = dir.join(file);
    std::fs::write(&path, svg).expect("write plot");
    println!("\nwrote {}", path.display());
}

/// A chart drawn by `draw` on a white page, with a legend of `names` at its right, as SVG.
fn svg(names: &[&str], draw: impl FnOnce(&Area<'_>) -> Drawn) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        root.fill(&WHITE)
            .and_then(|()| draw(&plot))
            .and_then(|()| draw_legend(&legend, names))
            .and_then(|()| root.present())
            .expect("draw the plot into a string");
    }
    out
}

/// Each name beside a square of its series' colour.
fn draw_legend(area: &Area<'_>, names: &[&str]) -> Drawn {
    let style = ("sans-serif", 15)
        .into_text_style(area)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, name) in names.iter().enumerate() {
        let (x, y) = (15, 45 + 20 * i as i32);
        let color = COLORS[i % COLORS.len()].filled();
        area.draw(&Rectangle::new([(x, y - 5), (x + 14, y + 5)], color))?;
        area.draw(&Text::new(*name, (x + 20, y), &style))?;
    }
    Ok(())
}

/// A chart's title, margins and room for the axes' labels.
fn chart<'a, 'b>(area: &'a Area<'b>, title: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60);
    builder
}

/// Text of `size` centred on its point, with the point at the text's `side`.
fn centred(size: u32, side: VPos) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_text_style(&SIZE)
        .pos(Pos::new(HPos::Center, side))
}

/// `v` with at most two decimals and no trailing zeros.
fn trim(v: &f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Latency (ms, y) by percentile (x, on a "nines" scale from p0 to p99.9).
pub(crate) fn percentile_chart(title: &str, series: &[Series]) -> String {
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1e-3, f64::max);
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    svg(&names, |area| {
        // The nines scale is a log scale of 1 / (1 - q): p0 at 1, p90 at 10, p99 at 100, …
        let x = (1.0..1e3)
            .log_scale()
            .with_key_points(vec![1.0, 10.0, 100.0, 1e3]);
        let mut chart = chart(area, title).build_cartesian_2d(x, 0.0..max * 1.05)?;
        chart
            .configure_mesh()
            .max_light_lines(0)
            .x_label_formatter(&|one_in| format!("p{}", trim(&(100.0 - 100.0 / one_in))))
            .y_label_formatter(&trim)
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .bold_line_style(RGBColor(0xe0, 0xe0, 0xe0))
            .label_style(("sans-serif", 15))
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let points = s.points.iter().map(|&(nines, ms)| (10f64.powf(nines), ms));
            chart.draw_series(LineSeries::new(
                points,
                COLORS[i % COLORS.len()].stroke_width(2),
            ))?;
        }
        Ok(())
    })
}

/// Grouped bars: `values[series][group]`, each bar with its value on top.
pub(crate) fn bar_chart(
    title: &str,
    groups: &[&str],
    names: &[&str],
    values: &[Vec<f64>],
) -> String {
    let max = values.iter().flatten().copied().fold(1e-3, f64::max);
    let bar = 0.8 / names.len() as f64;
    svg(names, |area| {
        let x = 0.0..groups.len() as f64;
        let mut chart = chart(area, title).build_cartesian_2d(x, 0.0..max * 1.1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .max_light_lines(0)
            .y_label_formatter(&trim)
            .y_desc("calls per logical request")
            .bold_line_style(RGBColor(0xe0, 0xe0, 0xe0))
            .label_style(("sans-serif", 15))
            .draw()?;
        // The groups' names under the axis, each bar's value on top of it.
        let under = centred(15, VPos::Top);
        chart.draw_series(groups.iter().enumerate().map(|(g, group)| {
            EmptyElement::at((g as f64 + 0.5, 0.0)) + Text::new(group.to_string(), (0, 8), &under)
        }))?;
        let on_top = centred(12, VPos::Bottom);
        for (s, series) in values.iter().enumerate() {
            let color = COLORS[s % COLORS.len()];
            let left = |g: usize| g as f64 + 0.1 + s as f64 * bar;
            chart.draw_series(series.iter().enumerate().map(|(g, &v)| {
                Rectangle::new([(left(g), 0.0), (left(g) + bar * 0.95, v)], color.filled())
            }))?;
            chart.draw_series(series.iter().enumerate().map(|(g, &v)| {
                EmptyElement::at((left(g) + bar * 0.475, v))
                    + Text::new(format!("{v:.2}"), (0, -4), &on_top)
            }))?;
        }
        Ok(())
    })
}

/// Lines over a logarithmic x axis (`x_desc`, e.g. a count of endpoints) and a linear y axis
/// from zero (`y_desc`), each point marked. Used by the `scale` bench, which includes this file.
#[allow(dead_code)]
pub(crate) fn log_x_chart(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> String {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (x_min, x_max) =
        points().fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let y_max = points().map(|p| p.1).fold(1e-3, f64::max);
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    svg(&names, |area| {
        let keys: Vec<f64> = series
            .first()
            .map(|s| s.points.iter().map(|p| p.0).collect())
            .unwrap_or_default();
        let x = (x_min.min(x_max) * 0.7..x_max * 1.4)
            .log_scale()
            .with_key_points(keys);
        let mut chart = chart(area, title).build_cartesian_2d(x, 0.0..y_max * 1.1)?;
        let whole = |v: &f64| format!("{v:.0}");
        mesh_and_lines(&mut chart, (x_desc, &whole), y_desc, series)
    })
}

type Chart<'a, X> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>;

/// The mesh (the x axis labelled by `x_label`, the y axis trimmed) and one marked line per
/// series, in the chart's colours.
fn mesh_and_lines<'a, X>(
    chart: &mut Chart<'a, X>,
    (x_desc, x_label): (&str, &dyn Fn(&f64) -> String),
    y_desc: &str,
    series: &[Series],
) -> Drawn
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .max_light_lines(0)
        .x_label_formatter(x_label)
        .y_label_formatter(&trim)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .bold_line_style(RGBColor(0xe0, 0xe0, 0xe0))
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart.draw_series(LineSeries::new(
            s.points.iter().copied(),
            color.stroke_width(2),
        ))?;
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    Ok(())
}

/// Lines over linear axes from zero (`x_desc`, `y_desc`), each point marked.
pub(crate) fn line_chart(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> String {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let x_max = points().map(|p| p.0).fold(1e-3, f64::max);
    let y_max = points().map(|p| p.1).fold(1e-3, f64::max);
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    svg(&names, |area| {
        let mut chart =
            chart(area, title).build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max * 1.1)?;
        mesh_and_lines(&mut chart, (x_desc, &trim), y_desc, series)
    })
}
