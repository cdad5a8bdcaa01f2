//! Minimal hand-written SVG charts, so the plots need no plotting crate.

use std::fmt::Write as _;
use std::path::PathBuf;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 7] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#7f7f7f", "#17becf",
];

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

fn header(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        escape(title)
    );
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" upper bound and tick step for values up to `max`.
fn ticks(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

fn legend(out: &mut String, names: impl Iterator<Item = String>) {
    for (i, name) in names.enumerate() {
        let y = TOP + 10.0 + i as f64 * 20.0;
        let x = WIDTH - RIGHT + 15.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="14" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            y - 9.0,
            COLORS[i % COLORS.len()],
            x + 20.0,
            y,
            escape(&name)
        );
    }
}

fn y_axis(out: &mut String, top: f64, step: f64, label: &str) -> impl Fn(f64) -> f64 {
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y_of = move |v: f64| TOP + plot_h * (1.0 - v / top);
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = y_of(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim(v)
        );
        v += step;
    }
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(label)
    );
    y_of
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Latency (ms, y) by percentile (x, on a "nines" scale from p0 to p99.9).
pub(crate) fn percentile_chart(title: &str, series: &[Series]) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (top, step) = ticks(max);
    let y_of = y_axis(&mut out, top, step, "latency (ms)");
    let plot_w = WIDTH - LEFT - RIGHT;
    let x_of = |nines: f64| LEFT + plot_w * nines / 3.0;
    for (nines, label) in [(0.0, "p0"), (1.0, "p90"), (2.0, "p99"), (3.0, "p99.9")] {
        let x = x_of(nines);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e0e0e0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 15.0
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            COLORS[i % COLORS.len()],
            points.join(" ")
        );
    }
    legend(&mut out, series.iter().map(|s| s.name.clone()));
    out.push_str("</svg>\n");
    out
}

/// Grouped bars: `values[series][group]`.
pub(crate) fn bar_chart(
    title: &str,
    groups: &[&str],
    names: &[&str],
    values: &[Vec<f64>],
) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let max = values.iter().flatten().copied().fold(0.0, f64::max);
    let (top, step) = ticks(max);
    let y_of = y_axis(&mut out, top, step, "calls per logical request");
    let plot_w = WIDTH - LEFT - RIGHT;
    let group_w = plot_w / groups.len() as f64;
    let bar_w = group_w * 0.8 / names.len() as f64;
    for (g, group) in groups.iter().enumerate() {
        let x0 = LEFT + g as f64 * group_w + group_w * 0.1;
        for (s, series) in values.iter().enumerate() {
            let v = series.get(g).copied().unwrap_or(0.0);
            let x = x0 + s as f64 * bar_w;
            let y = y_of(v);
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{v:.2}</text>"#,
                bar_w - 2.0,
                HEIGHT - BOTTOM - y,
                COLORS[s % COLORS.len()],
                x + bar_w / 2.0 - 1.0,
                y - 4.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + group_w * 0.4,
            HEIGHT - BOTTOM + 18.0,
            escape(group)
        );
    }
    legend(&mut out, names.iter().map(|n| (*n).to_string()));
    out.push_str("</svg>\n");
    out
}
