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

/// "12s ago", "3m ago", "never".
pub fn ago(then: i64, now: i64) -> String {
    if then <= 0 {
        return "never".into();
    }
    let d = (now - then).max(0);
    match d {
        0..=59 => format!("{d}s ago"),
        60..=3599 => format!("{}m ago", d / 60),
        3600..=86399 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

/// "in 3h", "12m ago", "never".
pub fn when(then: i64, now: i64) -> String {
    if then <= 0 {
        return "never".into();
    }
    if then > now {
        let d = then - now;
        return match d {
            0..=59 => format!("in {d}s"),
            60..=3599 => format!("in {}m", (d + 59) / 60),
            3600..=86399 => format!("in {}h", d / 3600),
            _ => format!("in {}d", d / 86400),
        };
    }
    ago(then, now)
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
    }
}
