//! The HTML timeline of a failing sub-history (`cairn verify --html`): one
//! row per client, one bar per operation from its invocation to its
//! completion (to the right edge, hatched, when its outcome is unknown),
//! coloured by the part it plays in the violation, with the call and the
//! response in each bar's tooltip and in a table below. One self-contained
//! file: inline SVG, no scripts.

use super::report::mark;
use cairn::check::history::{History, Ret};
use cairn::check::shrink::Shrunk;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The most ops drawn.
const OPS_MAX: usize = 400;
const ROW_PX: usize = 26;
const WIDTH_PX: f64 = 1100.0;
const LABEL_PX: f64 = 110.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(mark: &str) -> &'static str {
    match mark {
        "involved" => "#d62728",
        "stuck" => "#ff7f0e",
        "placed" => "#1f77b4",
        _ => "#9a9a9a",
    }
}

/// The page for `s`, with `report` (the text report) at the bottom.
pub(crate) fn html(s: &Shrunk, history: &History, report: &str) -> String {
    let ops: Vec<usize> = s.ops.iter().copied().take(OPS_MAX).collect();
    let t0 = ops.iter().map(|&i| history[i].invoke).min().unwrap_or(0);
    let t1 = ops
        .iter()
        .map(|&i| history[i].complete.unwrap_or(history[i].invoke))
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let span = (t1 - t0) as f64;
    let x = |t: u64| LABEL_PX + (t.saturating_sub(t0) as f64 / span) * (WIDTH_PX - LABEL_PX - 10.0);
    let rows: BTreeMap<u32, usize> = ops
        .iter()
        .map(|&i| history[i].client)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(row, c)| (c, row))
        .collect();
    let height = rows.len() * ROW_PX + 30;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH_PX}' height='{height}' font-family='monospace' font-size='11'>"
    );
    for (client, row) in &rows {
        let y = row * ROW_PX + 18;
        let name = if *client >= 1_000_000 {
            format!("final read {}", client - 1_000_000)
        } else {
            format!("client {client}")
        };
        let _ = write!(svg, "<text x='4' y='{y}'>{name}</text>");
    }
    for &i in &ops {
        let op = &history[i];
        let row = rows[&op.client];
        let y = row * ROW_PX + 6;
        let (x0, x1) = (x(op.invoke), op.complete.map_or(WIDTH_PX - 10.0, x));
        let unknown = op.ret == Ret::Unknown;
        let title = escape(&format!(
            "#{i} {:?} -> {:?} [{:.3} ms .. {}]",
            op.call,
            op.ret,
            op.invoke as f64 / 1e6,
            op.complete
                .map_or("unknown".into(), |c| format!("{:.3} ms", c as f64 / 1e6))
        ));
        let _ = write!(
            svg,
            "<rect x='{x0:.1}' y='{y}' width='{:.1}' height='16' fill='{}' fill-opacity='{}' stroke='black' stroke-width='0.5'><title>{title}</title></rect>",
            (x1 - x0).max(2.0),
            colour(mark(s, i)),
            if unknown { "0.35" } else { "0.85" }
        );
    }
    let _ = write!(
        svg,
        "<text x='{LABEL_PX}' y='{}'>{:.3} ms</text><text x='{}' y='{}' text-anchor='end'>{:.3} ms</text></svg>",
        height - 4,
        t0 as f64 / 1e6,
        WIDTH_PX - 10.0,
        height - 4,
        t1 as f64 / 1e6
    );
    let mut table = String::from(
        "<table><tr><th>op</th><th>mark</th><th>client</th><th>invoke ms</th><th>complete ms</th><th>call</th><th>response</th></tr>",
    );
    for &i in &ops {
        let op = &history[i];
        let _ = write!(
            table,
            "<tr style='color:{}'><td>#{i}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            colour(mark(s, i)),
            mark(s, i),
            op.client,
            op.invoke as f64 / 1e6,
            op.complete.map_or("unknown".into(), |c| format!("{:.3}", c as f64 / 1e6)),
            escape(&format!("{:?}", op.call)),
            escape(&format!("{:?}", op.ret))
        );
    }
    table.push_str("</table>");
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>cairn verify: {}</title>\
         <style>body{{font-family:sans-serif}} td,th{{font-family:monospace;font-size:12px;padding:1px 6px;text-align:left}}</style></head><body>\
         <h1>{}</h1><p>{}</p><p>red: involved; orange: could not come next; blue: the longest order the search found; \
         grey: other ops of the sub-history; faint: unknown outcome.</p>{svg}{table}<h2>Report</h2><pre>{}</pre></body></html>",
        escape(&s.violation.check.to_string()),
        escape(&format!(
            "{} on key {}",
            s.violation.check,
            s.violation.key.as_deref().unwrap_or("-")
        )),
        escape(&s.violation.message),
        escape(report)
    )
}
