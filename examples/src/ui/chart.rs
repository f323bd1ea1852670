//! SVG drawn by the server: the usage charts (stacked bars over time) and the memory bars.
//!
//! Written by hand rather than with a charting crate: two shapes, a few rectangles each, and
//! SVG needs no script (the page's Content-Security-Policy allows none inline) and no library
//! in the browser. Every bar carries its numbers (`data-*` and a `<title>` tooltip), so a reader
//! and a test see the same values the chart draws.

#![allow(
    clippy::cast_precision_loss,
    reason = "pixel positions from counts and byte sizes"
)]

use maud::{Markup, html};

/// The colour of series `i` (a palette that stays apart for the colour-blind, Okabe–Ito).
pub(crate) fn colour(i: usize) -> &'static str {
    const PALETTE: [&str; 8] = [
        "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999",
    ];
    PALETTE[i % PALETTE.len()]
}

/// One series of a stacked bar chart: its name and a value per bucket.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) values: Vec<u64>,
}

/// One rectangle of a stacked bar.
struct Rect {
    x: f64,
    y: f64,
    height: f64,
    series: usize,
    bucket: usize,
    value: u64,
}

/// A stacked bar chart of `series` over `labels` (one per bucket), `what` naming the values
/// (`requests`, `tokens`); `id` names the chart for the page and its tests.
pub(crate) fn stacked_bars(id: &str, what: &str, labels: &[String], series: &[Series]) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 48.0;
    const BOTTOM: f64 = 24.0;
    let buckets = labels.len().max(1);
    let totals: Vec<u64> = (0..buckets)
        .map(|b| {
            series
                .iter()
                .map(|s| s.values.get(b).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let top = totals.iter().copied().max().unwrap_or(0).max(1);
    let total: u64 = totals.iter().sum();
    let slot = (W - LEFT) / buckets as f64;
    let bar = (slot * 0.8).max(1.0);
    let y = |v: u64| (H - BOTTOM) * (v as f64 / top as f64);
    let every_label = buckets.div_ceil(8).max(1);
    // Each bucket's values stacked from the bottom, a rectangle each (none for a zero).
    let mut rects = Vec::new();
    for b in 0..labels.len() {
        let x = LEFT + slot * b as f64 + (slot - bar) / 2.0;
        let mut base = 0_u64;
        for (i, s) in series.iter().enumerate() {
            let value = s.values.get(b).copied().unwrap_or(0);
            if value == 0 {
                continue;
            }
            rects.push(Rect {
                x,
                y: H - BOTTOM - y(base + value),
                height: y(base + value) - y(base),
                series: i,
                bucket: b,
                value,
            });
            base += value;
        }
    }
    html! {
        figure.chart {
            svg id=(id) viewBox={"0 0 " (W) " " (H)} role="img" preserveAspectRatio="none"
                data-total=(total) aria-label={(what) " over time: " (total) " in all"} {
                line x1=(LEFT) y1=(H - BOTTOM) x2=(W) y2=(H - BOTTOM) class="axis" {}
                text x=(LEFT - 4.0) y="12" class="tick" text-anchor="end" { (top) }
                text x=(LEFT - 4.0) y=(H - BOTTOM) class="tick" text-anchor="end" { "0" }
                @for r in &rects {
                    rect x=(r.x) y=(r.y) width=(bar) height=(r.height) fill=(colour(r.series))
                        data-series=(series[r.series].name) data-bucket=(labels[r.bucket]) data-value=(r.value) {
                        title { (series[r.series].name) ", " (labels[r.bucket]) ": " (r.value) " " (what) }
                    }
                }
                @for (b, label) in labels.iter().enumerate().step_by(every_label) {
                    text x=(LEFT + slot * b as f64 + slot / 2.0) y=(H - 6.0) class="tick" text-anchor="middle" { (label) }
                }
            }
            figcaption {
                @for (i, s) in series.iter().enumerate() {
                    span.legend { i.swatch data-colour=(i % 8) {} (s.name) ": " (s.values.iter().sum::<u64>()) }
                }
                @if series.is_empty() { "Nothing recorded in this range." }
            }
        }
    }
}

/// One part of a memory bar.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) bytes: u64,
}

/// A horizontal bar of `total` bytes split into `parts` (in order, coloured by series), the
/// rest drawn as free; `id` names it.
pub(crate) fn memory_bar(id: &str, total: u64, parts: &[Part]) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 28.0;
    let used: u64 = parts.iter().map(|p| p.bytes).sum();
    let scale = W / total.max(used).max(1) as f64;
    let mib = |b: u64| b >> 20;
    let starts: Vec<f64> = parts
        .iter()
        .scan(0_u64, |before, p| {
            let start = *before as f64 * scale;
            *before += p.bytes;
            Some(start)
        })
        .collect();
    html! {
        svg.bar id=(id) viewBox={"0 0 " (W) " " (H)} preserveAspectRatio="none" role="img"
            data-total=(total) data-used=(used)
            aria-label={(mib(used)) " MiB of " (mib(total)) " MiB estimated in use"} {
            rect x="0" y="0" width=(W) height=(H) class="free" {
                title { "free: " (mib(total.saturating_sub(used))) " MiB" }
            }
            @for (i, (x, p)) in starts.iter().zip(parts).enumerate() {
                rect x=(x) y="0" width=(p.bytes as f64 * scale) height=(H) fill=(colour(i)) data-model=(p.name) data-bytes=(p.bytes) {
                    title { (p.name) ": " (mib(p.bytes)) " MiB" }
                }
            }
            @if used > total {
                line x1=(total as f64 * scale) y1="0" x2=(total as f64 * scale) y2=(H) class="over" {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_carries_every_value_it_draws() {
        let labels = vec!["10:00".to_owned(), "10:05".to_owned()];
        let series = vec![
            Series {
                name: "gemma".into(),
                values: vec![3, 0],
            },
            Series {
                name: "<script>".into(),
                values: vec![1, 2],
            },
        ];
        let svg = stacked_bars("c", "requests", &labels, &series).into_string();
        assert!(svg.contains(r#"data-total="6""#), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 3, "no bar for a zero: {svg}");
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"));
        let bar = memory_bar(
            "g",
            100 << 20,
            &[Part {
                name: "gemma".into(),
                bytes: 25 << 20,
            }],
        )
        .into_string();
        assert!(bar.contains(r#"data-used="26214400""#), "{bar}");
    }
}
