//! A bar chart of the per-target-CPU-second figures (KiB per tunnel for memory), one group
//! of bars per scenario, written as plain SVG text.

use super::report::{fmt_num, Row};
use super::targets::Kind;

const WIDTH: f64 = 920.0;
const LABEL_X: f64 = 20.0;
const BAR_X: f64 = 110.0;
const BAR_MAX: f64 = 600.0;
const BAR_H: f64 = 16.0;
const BAR_GAP: f64 = 4.0;
const TITLE_H: f64 = 26.0;
const GROUP_GAP: f64 = 14.0;

fn colour(kind: Kind) -> &'static str {
    match kind {
        Kind::Moat => "#c0392b",
        Kind::MoatBase => "#e6a299",
        Kind::Tokio => "#2874a6",
        Kind::Stunnel => "#7f8c8d",
        Kind::Haproxy => "#27ae60",
    }
}

/// Escapes text for SVG.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the chart. Each scenario's bars are scaled to that scenario's largest value.
pub fn chart(rows: &[Row], title: &str) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for row in rows {
        if !scenarios.contains(&row.scenario.name) {
            scenarios.push(row.scenario.name);
        }
    }
    let mut body = String::new();
    let mut y = 50.0;
    for name in scenarios {
        let group: Vec<&Row> = rows.iter().filter(|r| r.scenario.name == name).collect();
        let Some(first) = group.first() else { continue };
        let kind = first.scenario.kind;
        let better = if kind.lower_is_better() {
            "lower is better"
        } else {
            "higher is better"
        };
        body.push_str(&format!(
            "<text x=\"{LABEL_X}\" y=\"{:.0}\" class=\"group\">{} — {} ({better})</text>\n",
            y + 16.0,
            esc(name),
            esc(kind.per_cpu_unit()),
        ));
        y += TITLE_H;
        let max = group
            .iter()
            .filter_map(|r| r.per_cpu())
            .fold(0.0_f64, f64::max);
        let tokio = group
            .iter()
            .find(|r| r.target == Kind::Tokio)
            .and_then(|r| r.per_cpu());
        for row in group {
            body.push_str(&format!(
                "<text x=\"{LABEL_X}\" y=\"{:.0}\">{}</text>\n",
                y + BAR_H - 4.0,
                row.target.name()
            ));
            match row.per_cpu() {
                Some(v) => {
                    let w = if max > 0.0 {
                        (v / max * BAR_MAX).max(1.0)
                    } else {
                        1.0
                    };
                    let versus = match tokio {
                        Some(t) if t > 0.0 && row.target != Kind::Tokio => {
                            format!("  ({:.2}× tokio)", v / t)
                        }
                        _ => String::new(),
                    };
                    body.push_str(&format!(
                        "<rect x=\"{BAR_X}\" y=\"{y:.0}\" width=\"{w:.1}\" height=\"{BAR_H}\" fill=\"{}\"/>\n\
                         <text x=\"{:.1}\" y=\"{:.0}\">{}{versus}</text>\n",
                        colour(row.target),
                        BAR_X + w + 6.0,
                        y + BAR_H - 4.0,
                        fmt_num(v),
                    ));
                }
                None => {
                    let what = if row.skipped() { "not run" } else { "failed" };
                    body.push_str(&format!(
                        "<text x=\"{BAR_X}\" y=\"{:.0}\" class=\"failed\">{what}</text>\n",
                        y + BAR_H - 4.0
                    ))
                }
            }
            y += BAR_H + BAR_GAP;
        }
        y += GROUP_GAP;
    }
    let height = y + 10.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {WIDTH} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <style>.title {{ font-size: 16px; font-weight: bold; }} \
         .group {{ font-weight: bold; }} .failed {{ fill: #999; font-style: italic; }}</style>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LABEL_X}\" y=\"28\" class=\"title\">{}</text>\n{body}</svg>\n",
        esc(title)
    )
}
