//! The review as one self-contained HTML file: inline CSS, no script, and
//! per agent an activity timeline drawn in inline SVG, so it can be
//! mailed, attached to a ticket or opened offline.
use std::fmt::Write as _;

use super::review::{AgentReview, BUCKETS, Review, Row, calls_text};

const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;\
padding:0 1rem;color:#1d2430}h1{font-size:1.5rem}h2{margin-top:2.5rem;border-bottom:1px solid #ccd}\
table{border-collapse:collapse;margin:.5rem 0 1rem;width:100%}td,th{border:1px solid #dde;\
padding:.2rem .4rem;text-align:left;vertical-align:top}th{background:#f3f4f8}code{font-size:.9em}\
.flag{color:#8a1c1c;font-weight:600}.meta td:first-child{width:9rem;color:#556}\
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;vertical-align:middle}\
svg{width:100%;height:auto;background:#fafbfd;border:1px solid #dde}";

/// Colours of the timeline: allowed (or audited), denied, held.
const COLOURS: [&str; 3] = ["#3a8d5c", "#c0392b", "#d69a1c"];

pub fn html(r: &Review) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>agent-guard review {} .. {}</title><style>{CSS}</style></head><body>\
         <h1>agent-guard review</h1><p>Period {} .. {}; policy <code>{}</code>; {} log lines, \
         chain intact.</p>",
        esc(&r.since),
        esc(&r.until),
        esc(&r.since),
        esc(&r.until),
        esc(&r.policy),
        r.lines
    );
    for a in &r.agents {
        agent(&mut out, a, r);
    }
    out.push_str("</body></html>\n");
    out
}

fn agent(out: &mut String, a: &AgentReview, r: &Review) {
    let _ = write!(
        out,
        "<section id=\"agent-{}\"><h2>{}</h2>",
        esc(&a.name),
        esc(&a.name)
    );
    for f in &a.flags {
        let _ = write!(out, "<p class=\"flag\">&#9873; {}</p>", esc(f));
    }
    out.push_str("<table class=\"meta\">");
    for (k, v) in [
        ("owner", a.owner.clone()),
        ("purpose", a.purpose.clone()),
        ("mode", a.mode.clone().unwrap_or_else(|| "-".into())),
        (
            "expires",
            a.expires.clone().unwrap_or_else(|| "never".into()),
        ),
        (
            "activity",
            format!(
                "{} .. {}",
                a.first_activity.as_deref().unwrap_or("none"),
                a.last_activity.as_deref().unwrap_or("none")
            ),
        ),
        ("calls", calls_text(&a.calls)),
        (
            "refusals / tampering",
            format!("{} / {}", a.refusals, a.tampering),
        ),
    ] {
        let _ = write!(out, "<tr><td>{k}</td><td>{}</td></tr>", esc(&v));
    }
    out.push_str("</table>");
    timeline(out, a, r);
    if !a.rules.is_empty() {
        out.push_str(
            "<h3>Rules</h3><table><tr><th>table</th><th>verdict</th><th>rule</th>\
             <th>source</th><th>calls</th></tr>",
        );
        for u in &a.rules {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                u.table,
                u.verdict,
                esc(&u.rule),
                esc(&u.source),
                u.calls
            );
        }
        out.push_str("</table>");
    }
    if !a.unused.is_empty() {
        out.push_str("<h3>Candidates to remove (never used)</h3><ul>");
        for u in &a.unused {
            let _ = write!(out, "<li><code>{}</code></li>", esc(u));
        }
        out.push_str("</ul>");
    }
    rows(
        out,
        &format!("Denials ({})", a.denials_total),
        &a.denials,
        ["kind", "target", "rule", "", ""],
    );
    rows(
        out,
        &format!("Holds ({})", a.holds_total),
        &a.holds,
        ["call", "target", "decision", "by", "reason"],
    );
    rows(
        out,
        &format!("Grants ({})", a.grants.len()),
        &a.grants,
        ["call", "target", "scope", "by", "expires"],
    );
    rows(
        out,
        &format!("Escapes ({})", a.escapes.len()),
        &a.escapes,
        ["kind", "", "how", "", "action"],
    );
    out.push_str("</section>");
}

/// Stacked bars of calls per bucket of the period.
fn timeline(out: &mut String, a: &AgentReview, r: &Review) {
    const W: f64 = 720.0;
    const H: f64 = 90.0;
    let max = a
        .timeline
        .iter()
        .map(|b| b.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let bar = W / BUCKETS as f64;
    let _ = write!(
        out,
        "<h3>Activity</h3><svg class=\"timeline\" viewBox=\"0 0 {W} {}\" role=\"img\" \
         aria-label=\"calls of {} over the period\" xmlns=\"http://www.w3.org/2000/svg\">",
        H + 18.0,
        esc(&a.name)
    );
    for (i, b) in a.timeline.iter().enumerate() {
        let mut y = H;
        for (slot, n) in b.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let h = (*n as f64 / max) * (H - 4.0);
            y -= h;
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\">\
                 <title>{n}</title></rect>",
                i as f64 * bar + 1.0,
                bar - 2.0,
                COLOURS[slot]
            );
        }
    }
    let _ = write!(
        out,
        "<line x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\" stroke=\"#99a\"/>\
         <text x=\"2\" y=\"{}\" font-size=\"11\" fill=\"#556\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#556\" text-anchor=\"end\">{}</text></svg>",
        H + 14.0,
        esc(&r.since),
        W - 2.0,
        H + 14.0,
        esc(&r.until)
    );
    let _ = write!(
        out,
        "<p class=\"legend\"><span style=\"background:{}\"></span>allowed or audited\
         <span style=\"background:{}\"></span>denied<span style=\"background:{}\"></span>held \
         (peak {} calls per bar)</p>",
        COLOURS[0], COLOURS[1], COLOURS[2], max as u64
    );
}

fn rows(out: &mut String, title: &str, rows: &[Row], heads: [&str; 5]) {
    if rows.is_empty() {
        return;
    }
    let shown: Vec<usize> = (0..5).filter(|i| !heads[*i].is_empty()).collect();
    let _ = write!(out, "<h3>{}</h3><table><tr><th>time</th>", esc(title));
    for i in &shown {
        let _ = write!(out, "<th>{}</th>", heads[*i]);
    }
    out.push_str("</tr>");
    for r in rows {
        let cells = [&r.kind, &r.target, &r.what, &r.by, &r.reason];
        let _ = write!(out, "<tr><td>{}</td>", esc(&r.time));
        for i in &shown {
            let _ = write!(out, "<td>{}</td>", esc(cells[*i]));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// Escapes text for HTML element content and attribute values: every
/// string here may come from an agent (paths, reasons, names).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_text_is_escaped_and_nothing_is_fetched() {
        let review = Review {
            since: "2026-12-01T00:00:00Z".into(),
            until: "2026-12-02T00:00:00Z".into(),
            policy: "p.toml".into(),
            logs: Vec::new(),
            lines: 3,
            agents: vec![AgentReview {
                name: "bot".into(),
                owner: "<script>alert(1)</script>".into(),
                timeline: vec![[1, 2, 0]; BUCKETS],
                denials: vec![Row {
                    target: "/srv/\"x\"<img src=y>".into(),
                    ..Row::default()
                }],
                ..AgentReview::default()
            }],
        };
        let page = html(&review);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(
            !page.contains("src=\"") && !page.contains("href="),
            "nothing loaded from elsewhere"
        );
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert_eq!(page.matches("<rect").count(), BUCKETS * 2);
    }
}
