//! A latency CDF as a small hand-written SVG: one line per series, log-scaled latency on x.

use hdrhistogram::Histogram;
use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const MARGIN: f64 = 60.0;
const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];

/// An SVG of each series' latency distribution (cumulative), `series` being
/// (label, histogram of latencies in microseconds).
pub fn latency_cdf_svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
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
    let (lo, hi) = (min.log10().floor(), max.log10().ceil());
    let x =
        |v: f64| MARGIN + (v.max(1.0).log10() - lo) / (hi - lo).max(1.0) * (WIDTH - 2.0 * MARGIN);
    let y = |q: f64| HEIGHT - MARGIN - q * (HEIGHT - 2.0 * MARGIN);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{title}</text>"#,
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
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{label}</text>"##,
            x(v),
            MARGIN,
            HEIGHT - MARGIN,
            HEIGHT - MARGIN + 18.0
        );
    }
    for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#eee"/><text x="{2}" y="{0:.1}" text-anchor="end">p{3}</text>"##,
            y(q),
            WIDTH - MARGIN,
            MARGIN - 6.0,
            q * 100.0
        );
    }
    for (i, (label, histogram)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = histogram
            .iter_quantiles(4)
            .map(|v| {
                format!(
                    "{:.1},{:.1}",
                    x(v.value_iterated_to() as f64),
                    y(v.quantile_iterated_to())
                )
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{color}">{label}</text>"#,
            MARGIN + 10.0,
            MARGIN + 16.0 * (i as f64 + 1.0)
        );
    }
    svg.push_str("</svg>\n");
    svg
}
