//! Latency by percentile as a small SVG, drawn with `plotters`: one line per series,
//! percentiles on a "nines" scale (50, 90, 99, 99.9 … equally spaced, so the tail is as wide
//! as the body) and latency on a log scale.

use hdrhistogram::Histogram;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

const COLORS: [RGBColor; 4] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];
/// The percentile axis ends at p99.99: one request in 10⁴.
const ONE_IN_MAX: f64 = 1e4;

/// The nines scale is a log scale of "one request in N" = 1 / (1 - q): p0 at 1, p50 at 2,
/// p90 at 10, p99 at 100, …
fn one_in(q: f64) -> f64 {
    (1.0 / (1.0 - q)).min(ONE_IN_MAX)
}

/// An SVG of each series' latency at every percentile, `series` being
/// (label, histogram of latencies in microseconds).
pub fn latency_by_percentile_svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        // The legend sits under the axis, out of the curves' way.
        let (plot, legend) = root.split_vertically(400 - 20 * series.len() as u32);
        root.fill(&WHITE)
            .and_then(|()| draw(&plot, title, series))
            .and_then(|()| draw_legend(&legend, series))
            .and_then(|()| root.present())
            .expect("draw the plot into a string");
    }
    svg
}

fn draw(root: &Area<'_>, title: &str, series: &[(&str, &Histogram<u64>)]) -> Drawn {
    // Whole decades of microseconds, at least one.
    let max = series.iter().map(|(_, h)| h.max()).max().unwrap_or(1);
    let min = series.iter().map(|(_, h)| h.min()).min().unwrap_or(1);
    let lo = (min.max(1) as f64).log10().floor() as i32;
    let hi = ((max.max(10) as f64).log10().ceil() as i32).max(lo + 1);
    let x = (1.0..ONE_IN_MAX)
        .log_scale()
        .with_key_points(vec![1.0, 2.0, 10.0, 100.0, 1e3, 1e4]);
    let y = (10f64.powi(lo)..10f64.powi(hi))
        .log_scale()
        .with_key_points((lo..=hi).map(|d| 10f64.powi(d)).collect());
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .margin_right(30)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|one_in| {
            let percent = format!("{:.2}", 100.0 - 100.0 / one_in);
            format!("p{}", percent.trim_end_matches('0').trim_end_matches('.'))
        })
        .y_label_formatter(&|micros| match *micros {
            m if m >= 1000.0 => format!("{} ms", m / 1000.0),
            m => format!("{m} µs"),
        })
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (_, histogram)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = histogram
            .iter_quantiles(8)
            .filter(|v| v.quantile_iterated_to() <= 1.0 - 1.0 / ONE_IN_MAX)
            .map(|v| {
                let micros = (v.value_iterated_to() as f64).max(1.0);
                (one_in(v.quantile_iterated_to()), micros)
            });
        chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
    }
    Ok(())
}

/// Each series' label beside a line of its colour.
fn draw_legend(area: &Area<'_>, series: &[(&str, &Histogram<u64>)]) -> Drawn {
    for (i, (label, _)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let y = 20 * i as i32;
        area.draw(&PathElement::new([(70, y), (94, y)], color.stroke_width(3)))?;
        let style = ("sans-serif", 15)
            .into_text_style(area)
            .pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(*label, (100, y), style))?;
    }
    Ok(())
}
