//! Latency by percentile as a small hand-written SVG: one line per series, percentiles on a
//! "nines" scale (50, 90, 99, 99.9 … equally spaced, so the tail is as wide as the body) and
//! latency on a log scale.

use hdrhistogram::Histogram;
use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 90.0;
const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
/// The percentile axis ends at 99.99 (four nines).
const MAX_NINES: f64 = 4.0;

/// An SVG of each series' latency at every percentile, `series` being
/// (label, histogram of latencies in microseconds).
pub fn latency_by_percentile_svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    let max = series
        .iter()
        .map(|(_, h)| h.max())
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let min = series
        .iter()
        .map(|(_, h)| h.min())
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let (lo, hi) = (
        min.log10().floor(),
        max.log10().ceil().max(min.log10().floor() + 1.0),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    // x: the quantile q as "nines", -log10(1 - q): p50 at 0.3, p90 at 1, p99 at 2, …
    let nines = |q: f64| (-(1.0 - q).max(1e-12).log10()).min(MAX_NINES);
    let x = |q: f64| LEFT + nines(q) / MAX_NINES * plot_w;
    let y = |micros: f64| TOP + plot_h - (micros.max(1.0).log10() - lo) / (hi - lo) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{title}</text>"#,
        WIDTH / 2.0
    );
    for decade in lo as i32..=hi as i32 {
        let v = 10f64.powi(decade);
        let label = if v >= 1000.0 {
            format!("{} ms", v / 1000.0)
        } else {
            format!("{v} µs")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{label}</text>"##,
            y(v),
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0
        );
    }
    for (q, label) in [
        (0.0, "p0"),
        (0.5, "p50"),
        (0.9, "p90"),
        (0.99, "p99"),
        (0.999, "p99.9"),
        (0.9999, "p99.99"),
    ] {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1}" stroke="#eee"/><text x="{0:.1}" y="{2}" text-anchor="middle">{label}</text>"##,
            x(q),
            TOP + plot_h,
            TOP + plot_h + 16.0
        );
    }
    for (i, (label, histogram)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = histogram
            .iter_quantiles(8)
            .filter(|v| v.quantile_iterated_to() <= 1.0 - 10f64.powf(-MAX_NINES))
            .map(|v| {
                format!(
                    "{:.1},{:.1}",
                    x(v.quantile_iterated_to()),
                    y(v.value_iterated_to() as f64)
                )
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        // The legend sits under the axis, out of the curves' way.
        let legend_y = TOP + plot_h + 40.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" y1="{0}" x2="{1}" y2="{0}" stroke="{color}" stroke-width="3"/><text x="{2}" y="{3}">{label}</text>"#,
            legend_y - 4.0,
            LEFT + 24.0,
            LEFT + 30.0,
            legend_y
        );
    }
    svg.push_str("</svg>\n");
    svg
}
