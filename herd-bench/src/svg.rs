//! The comparison chart: hand-written SVG, one small bar chart per metric
//! ([`super::report::Report::metrics`]: throughput and latency, memory and
//! threads, context switches, the tail at a steady rate and GC pauses), five
//! to a row, one bar per implementation side by side, each labelled with its
//! figure. Pure: metrics in, text out; [`super::run`] writes the file.

use std::fmt::Write as _;

use super::report::Metric;

const PANEL_W: f64 = 230.0;
const PANEL_H: f64 = 260.0;
const BAR_AREA_TOP: f64 = 70.0;
const BAR_AREA_H: f64 = 150.0;
/// Panels per row: ten metrics make two rows.
const PER_ROW: usize = 5;
/// One per implementation (rust, asyncio, uvloop, node, java, threads,
/// limit), then again from the start.
const COLOURS: [&str; 7] = [
    "#d9534f", "#337ab7", "#5cb85c", "#8e44ad", "#e67e22", "#16a085", "#999999",
];

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A figure short enough for a bar label: `123456` -> `123k`, `0.0123` -> `0.0123`.
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The chart for `metrics`; `title` goes on top. Implementations keep one
/// colour across panels, in the order of `implementations`.
pub fn chart(title: &str, implementations: &[String], metrics: &[Metric]) -> String {
    let cols = metrics.len().clamp(1, PER_ROW);
    let rows = metrics.len().div_ceil(PER_ROW).max(1);
    let width = PANEL_W * cols as f64;
    let height = PANEL_H * rows as f64 + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (p, m) in metrics.iter().enumerate() {
        let x0 = PANEL_W * (p % PER_ROW) as f64;
        let y0 = 30.0 + PANEL_H * (p / PER_ROW) as f64;
        let _ = writeln!(s, r#"<g transform="translate({x0},{y0})">"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="20" font-size="12" text-anchor="middle" font-weight="bold">{}</text>"#,
            PANEL_W / 2.0,
            escape(m.name)
        );
        let better = if m.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        let _ = writeln!(
            s,
            r##"<text x="{}" y="36" font-size="10" text-anchor="middle" fill="#555">{} ({better})</text>"##,
            PANEL_W / 2.0,
            escape(m.unit)
        );
        let max = m.values.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
        let n = m.values.len().max(1) as f64;
        let slot = (PANEL_W - 40.0) / n;
        let bar_w = (slot * 0.7).min(50.0);
        let base = BAR_AREA_TOP + BAR_AREA_H;
        let _ = writeln!(
            s,
            r##"<line x1="20" y1="{base}" x2="{}" y2="{base}" stroke="#333"/>"##,
            PANEL_W - 20.0
        );
        if m.values.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" font-size="11" text-anchor="middle" fill="#999">not measured</text>"##,
                PANEL_W / 2.0,
                base - 20.0
            );
        }
        for (i, (imp, v)) in m.values.iter().enumerate() {
            let h = if max > 0.0 && v.is_finite() {
                (v / max * BAR_AREA_H).max(1.0)
            } else {
                1.0
            };
            let cx = 20.0 + slot * (i as f64 + 0.5);
            let colour = implementations
                .iter()
                .position(|x| x == imp)
                .map_or(COLOURS[COLOURS.len() - 1], |k| COLOURS[k % COLOURS.len()]);
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{colour}"><title>{}: {} {}</title></rect>"#,
                cx - bar_w / 2.0,
                base - h,
                escape(imp),
                short_number(*v),
                escape(m.unit)
            );
            let _ = writeln!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                base - h - 4.0,
                short_number(*v)
            );
            let _ = writeln!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                base + 14.0,
                escape(imp)
            );
        }
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small well-formedness check: tags balance, attributes are quoted,
    /// text has no raw `<` or `&` outside entities. Enough for what `chart`
    /// writes (no comments, CDATA or doctype).
    fn well_formed(xml: &str) -> Result<(), String> {
        let body = xml
            .strip_prefix("<?xml")
            .and_then(|r| r.split_once("?>"))
            .map(|(_, rest)| rest)
            .ok_or("no XML declaration")?;
        let mut stack: Vec<String> = Vec::new();
        let mut rest = body;
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open])?;
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name.trim()) {
                    return Err(format!("mismatched </{name}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().ok_or("empty tag")?;
            if stack.is_empty() {
                roots += 1;
            }
            check_attributes(&tag[name.len()..])?;
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        check_text(rest)?;
        if !stack.is_empty() || roots != 1 {
            return Err(format!("unbalanced: {stack:?}, {roots} roots"));
        }
        Ok(())
    }

    fn check_text(t: &str) -> Result<(), String> {
        for (i, _) in t.match_indices('&') {
            let ent = &t[i..t[i..].find(';').map_or(t.len(), |e| i + e + 1)];
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&ent) {
                return Err(format!("bad entity {ent:?}"));
            }
        }
        Ok(())
    }

    fn check_attributes(mut a: &str) -> Result<(), String> {
        loop {
            a = a.trim_start();
            if a.is_empty() {
                return Ok(());
            }
            let eq = a
                .find('=')
                .ok_or(format!("attribute without value: {a:?}"))?;
            let after = &a[eq + 1..];
            let q = after.chars().next().ok_or("no value")?;
            if q != '"' {
                return Err(format!("unquoted attribute: {a:?}"));
            }
            let end = after[1..].find('"').ok_or("unterminated value")?;
            check_text(&after[1..1 + end])?;
            if after[1..1 + end].contains('<') {
                return Err("< in attribute".into());
            }
            a = &after[end + 2..];
        }
    }

    fn metrics() -> Vec<Metric> {
        vec![
            Metric {
                name: "iamat throughput",
                unit: "replies/s",
                higher_is_better: true,
                values: vec![("rust".into(), 123_456.0), ("asyncio <&>".into(), 23_456.0)],
            },
            Metric {
                name: "memory per idle connection",
                unit: "bytes",
                higher_is_better: false,
                values: vec![],
            },
        ]
    }

    #[test]
    fn chart_is_well_formed_and_has_the_numbers() {
        let imps = vec!["rust".to_string(), "asyncio <&>".to_string()];
        let svg = chart("proxy-herd & co", &imps, &metrics());
        well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(svg.contains(">123k<"), "{svg}");
        assert!(svg.contains(">23k<"), "{svg}");
        assert!(svg.contains("asyncio &lt;&amp;&gt;"));
        assert!(svg.contains("not measured"));
        assert!(svg.contains("proxy-herd &amp; co"));
    }

    #[test]
    fn the_checker_catches_mistakes() {
        assert!(well_formed("<?xml version=\"1.0\"?><a><b></a>").is_err());
        assert!(well_formed("<?xml version=\"1.0\"?><a x=1/>").is_err());
        assert!(well_formed("<?xml version=\"1.0\"?><a>&</a>").is_err());
        assert!(well_formed("<?xml version=\"1.0\"?><a/><b/>").is_err());
        assert!(well_formed("<?xml version=\"1.0\"?><a y=\"2\"><b/>t &amp; u</a>").is_ok());
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short_number(1_234_567.0), "1.23M");
        assert_eq!(short_number(23_456.0), "23k");
        assert_eq!(short_number(512.4), "512");
        assert_eq!(short_number(1.234), "1.23");
        assert_eq!(short_number(0.0123), "0.012");
    }
}
