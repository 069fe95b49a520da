//! Text the profile engine reads and edits inside files: whether a whole file parses as INI, TOML or JSON (a
//! `format` check), and the two in-place edits, one `key = value` in an INI/TOML-style file (`[[setting]]`) and
//! one whole line (`[[line]]`), each with its undo. Edits keep every other line as it was, comments included.

use super::spec::Format;

/// Whether `content` parses as `format`; the reason names the line when it does not.
pub(crate) fn check_format(format: Format, content: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(content).map_err(|_| "it is not UTF-8 text".to_owned())?;
    match format {
        Format::Ini => check_ini(text),
        Format::Toml => toml::from_str::<toml::Table>(text)
            .map(drop)
            .map_err(|e| super::spec::toml_reason(text, &e)),
        Format::Json => serde_json::from_str::<serde_json::Value>(text)
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

fn check_ini(text: &str) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        if classify(line) == Kind::Other {
            return Err(format!(
                "line {}: {:?} is not [section], key = value or a comment",
                n + 1,
                line.trim()
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Blank,
    Comment,
    Header(String),
    Pair { key: String, value: String },
    Other,
}

fn classify(line: &str) -> Kind {
    let t = line.trim();
    if t.is_empty() {
        return Kind::Blank;
    }
    if t.starts_with(';') || t.starts_with('#') {
        return Kind::Comment;
    }
    if t.len() >= 2 && t.starts_with('[') && t.ends_with(']') {
        return Kind::Header(t[1..t.len() - 1].trim().to_owned());
    }
    match t.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Kind::Pair {
            key: k.trim().to_owned(),
            value: v.trim().to_owned(),
        },
        _ => Kind::Other,
    }
}

/// A file's lines with the section each belongs to ("" before the first header).
struct Lines {
    lines: Vec<String>,
    eol: &'static str,
}

impl Lines {
    fn new(text: &str) -> Lines {
        Lines {
            lines: text.lines().map(str::to_owned).collect(),
            eol: if text.contains("\r\n") { "\r\n" } else { "\n" },
        }
    }

    /// (index, section, kind) of every line.
    fn scan(&self) -> Vec<(usize, String, Kind)> {
        let mut section = String::new();
        let mut out = Vec::with_capacity(self.lines.len());
        for (i, line) in self.lines.iter().enumerate() {
            let kind = classify(line);
            if let Kind::Header(name) = &kind {
                section = name.clone();
            }
            out.push((i, section.clone(), kind));
        }
        out
    }

    fn text(&self) -> String {
        if self.lines.is_empty() {
            return String::new();
        }
        let mut text = self.lines.join(self.eol);
        text.push_str(self.eol);
        text
    }
}

/// The values of `key` in `section` (every occurrence).
pub(crate) fn values(text: &str, section: &str, key: &str) -> Vec<String> {
    Lines::new(text)
        .scan()
        .into_iter()
        .filter_map(|(_, s, kind)| match kind {
            Kind::Pair { key: k, value } if s == section && k == key => Some(value),
            _ => None,
        })
        .collect()
}

/// `text` with `key = value` in `section`: every occurrence replaced, or one added at the end of the section
/// (a new section at the end of the file; a key without section before the first header).
pub(crate) fn set_value(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut file = Lines::new(text);
    let scan = file.scan();
    let wanted = format!("{key} = {value}");
    let mut found = false;
    for (i, s, kind) in &scan {
        if matches!(kind, Kind::Pair { key: k, .. } if k == key) && s == section {
            file.lines[*i] = wanted.clone();
            found = true;
        }
    }
    if found {
        return file.text();
    }
    match section_end(&scan, section) {
        Some(at) => file.lines.insert(at, wanted),
        None if section.is_empty() => file.lines.insert(0, wanted),
        None => {
            if file.lines.last().is_some_and(|l| !l.trim().is_empty()) {
                file.lines.push(String::new());
            }
            file.lines.push(format!("[{section}]"));
            file.lines.push(wanted);
        }
    }
    file.text()
}

/// Where a new key of `section` goes: after its last non-blank line (None when the section has no line).
fn section_end(scan: &[(usize, String, Kind)], section: &str) -> Option<usize> {
    scan.iter()
        .rev()
        .find(|(_, s, kind)| s == section && *kind != Kind::Blank)
        .map(|(i, _, _)| i + 1)
}

/// `text` without `key` in `section`; with `drop_section`, a section left with nothing in it goes too (with the
/// blank line before it), so undoing an edit that added the section gives back the file as it was.
pub(crate) fn remove_key(text: &str, section: &str, key: &str, drop_section: bool) -> String {
    let mut file = Lines::new(text);
    let scan = file.scan();
    let mut drop: Vec<usize> = scan
        .iter()
        .filter(|(_, s, kind)| {
            s == section && matches!(kind, Kind::Pair { key: k, .. } if k == key)
        })
        .map(|(i, _, _)| *i)
        .collect();
    let header = scan
        .iter()
        .find(|(_, s, kind)| s == section && matches!(kind, Kind::Header(_)));
    if let (true, Some((h, _, _))) = (drop_section && !section.is_empty(), header) {
        let rest_empty = scan
            .iter()
            .filter(|(i, s, _)| s == section && i != h && !drop.contains(i))
            .all(|(_, _, kind)| *kind == Kind::Blank);
        if rest_empty {
            drop.extend(
                scan.iter()
                    .filter(|(i, s, _)| s == section && i != h)
                    .map(|(i, _, _)| *i),
            );
            drop.push(*h);
            if *h > 0 && scan[*h - 1].2 == Kind::Blank {
                drop.push(*h - 1);
            }
        }
    }
    file.lines = file
        .lines
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, l)| l)
        .collect();
    file.text()
}

/// Whether `text` has a `[section]` header ("" always exists).
pub(crate) fn has_section(text: &str, section: &str) -> bool {
    section.is_empty()
        || text
            .lines()
            .any(|l| classify(l) == Kind::Header(section.to_owned()))
}

/// Whether `text` holds `line` (surrounding spaces aside).
pub(crate) fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l.trim() == line.trim())
}

pub(crate) fn add_line(text: &str, line: &str) -> String {
    let mut file = Lines::new(text);
    file.lines.push(line.to_owned());
    file.text()
}

pub(crate) fn remove_line(text: &str, line: &str) -> String {
    let mut file = Lines::new(text);
    file.lines.retain(|l| l.trim() != line.trim());
    file.text()
}

/// Nothing but whitespace: a file the profile created and whose last edit was undone.
pub(crate) fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_checked_and_the_reason_names_the_line() {
        let ini = "; comment\n# comment\ntop=1\n[network]\ndns = 10.0.0.53\n\n[empty]\n";
        assert_eq!(check_format(Format::Ini, ini.as_bytes()), Ok(()));
        assert_eq!(
            check_format(Format::Ini, b"[a]\nk = v\njust words\n").unwrap_err(),
            "line 3: \"just words\" is not [section], key = value or a comment"
        );
        assert_eq!(
            check_format(Format::Toml, b"a = 1\n[b]\nc = \"d\"\n"),
            Ok(())
        );
        let e = check_format(Format::Toml, b"a = 1\nb = \n").unwrap_err();
        assert!(e.starts_with("line 2: "), "{e}");
        assert_eq!(check_format(Format::Json, br#"{"a": [1, 2]}"#), Ok(()));
        let e = check_format(Format::Json, b"{\"a\": }").unwrap_err();
        assert!(e.contains("line 1 column 7"), "{e}");
        assert_eq!(
            check_format(Format::Ini, &[0xff, 0xfe]).unwrap_err(),
            "it is not UTF-8 text"
        );
    }

    #[test]
    fn a_setting_is_replaced_in_place_or_added_to_its_section() {
        let text = "top = 1\n\n[network]\n; the resolver\ndns=1.1.1.1\n\n[other]\nx = y\n";
        assert_eq!(values(text, "network", "dns"), vec!["1.1.1.1"]);
        assert_eq!(values(text, "", "top"), vec!["1"]);
        assert_eq!(values(text, "other", "dns"), Vec::<String>::new());
        assert_eq!(
            set_value(text, "network", "dns", "10.0.0.53"),
            "top = 1\n\n[network]\n; the resolver\ndns = 10.0.0.53\n\n[other]\nx = y\n"
        );
        assert_eq!(
            set_value(text, "network", "search", "nss.local"),
            "top = 1\n\n[network]\n; the resolver\ndns=1.1.1.1\nsearch = nss.local\n\n[other]\nx = y\n"
        );
        assert_eq!(
            set_value(text, "", "debug", "0"),
            "top = 1\ndebug = 0\n\n[network]\n; the resolver\ndns=1.1.1.1\n\n[other]\nx = y\n"
        );
        assert_eq!(set_value("", "network", "dns", "x"), "[network]\ndns = x\n");
        assert_eq!(set_value("[a]\n", "", "k", "v"), "k = v\n[a]\n");
        assert_eq!(
            set_value("a = 1\r\n", "", "b", "2"),
            "a = 1\r\nb = 2\r\n",
            "CRLF files stay CRLF"
        );
    }

    #[test]
    fn undoing_a_setting_gives_back_the_file_as_it_was() {
        let original = "top = 1\n\n[other]\nx = y\n";
        let added = set_value(original, "network", "dns", "10.0.0.53");
        assert_eq!(remove_key(&added, "network", "dns", true), original);
        let added_top = set_value(original, "", "debug", "0");
        assert_eq!(remove_key(&added_top, "", "debug", true), original);
        // A section that was there before keeps its header.
        let kept = remove_key("[network]\ndns = x\n", "network", "dns", false);
        assert_eq!(kept, "[network]\n");
        assert!(!is_blank(&kept));
        assert!(is_blank(&remove_key(
            "[network]\ndns = x\n",
            "network",
            "dns",
            true
        )));
        assert!(has_section("[ network ]\n", "network") && has_section("", ""));
        assert!(!has_section("[other]\n", "network"));
    }

    #[test]
    fn lines_are_found_added_and_removed_whole() {
        let hosts = "127.0.0.1 localhost\n";
        assert!(!has_line(hosts, "10.1.2.3 records.nss.local"));
        let added = add_line(hosts, "10.1.2.3 records.nss.local");
        assert_eq!(added, "127.0.0.1 localhost\n10.1.2.3 records.nss.local\n");
        assert!(has_line(&added, "10.1.2.3 records.nss.local"));
        assert_eq!(add_line("no newline", "x"), "no newline\nx\n");
        assert_eq!(remove_line(&added, "10.1.2.3 records.nss.local"), hosts);
        assert!(is_blank(&remove_line("x\n", "x")));
    }
}
