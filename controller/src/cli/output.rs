//! Plain tables for people; `--json` output is built by each command from the same data.

/// Render rows under headers with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n") + "\n"
}

/// A span of time in its largest unit: "40s", "9m", "3h", "2d". Minutes round up (a soak with 30 s left is "1m").
pub fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", (s + 59) / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Rows as CSV (RFC 4180): a field with a comma, quote or line break is quoted, quotes doubled.
pub fn csv(headers: &[&str], rows: &[Vec<String>]) -> String {
    let field = |f: &str| {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.to_owned()
        }
    };
    let line =
        |cells: Vec<String>| cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(",") + "\r\n";
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// "12s ago", "3m ago", "never".
pub fn ago(then: i64, now: i64) -> String {
    if then <= 0 {
        return "never".into();
    }
    format!("{} ago", span(now - then))
}

/// "in 3h", "12m ago", "never".
pub fn when(then: i64, now: i64) -> String {
    if then > now {
        return format!("in {}", span(then - now));
    }
    ago(then, now)
}

/// A site's install window now: "any time", "open, closes in 2h", "opens in 13h".
pub fn window_now(has_window: bool, open: bool, changes_at: i64, now: i64) -> String {
    match (has_window, open) {
        (false, _) => "any time".into(),
        (true, true) => format!("open, closes in {}", span(changes_at - now)),
        (true, false) => format!("opens in {}", span(changes_at - now)),
    }
}

/// "95%", "2.5%".
pub fn percent(p: f64) -> String {
    format!("{}%", crate::model::rollout::fmt_percent(p))
}

pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONG\nxyz  1\n");
        assert_eq!(ago(0, 10), "never");
        assert_eq!(ago(100, 3700), "1h ago");
        assert_eq!(ago(100, 280), "3m ago");
        assert_eq!(when(3700, 100), "in 1h");
        assert_eq!(span(30), "30s");
        assert_eq!(span(61), "2m");
        assert_eq!(window_now(true, false, 3600 * 14, 0), "opens in 14h");
        assert_eq!(window_now(false, false, 0, 0), "any time");
        assert_eq!(
            (percent(95.0), percent(2.5)),
            ("95%".to_owned(), "2.5%".to_owned())
        );
    }
}
