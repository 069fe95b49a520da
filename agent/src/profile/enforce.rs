//! One item against the device: how it differs from what the profile wants (`differences`, in the words a drift
//! event carries), making it so (`repair`, checked by looking again), and undoing it from its saved state when a
//! profile stops managing it (`undo`). Settings and lines are undone as edits (the key back to its first value,
//! the line away), not by restoring the whole file, so other changes made to a shared file since are kept.

use std::path::Path;

use super::item::{Attrs, DirItem, FileItem, Item, LineItem, SettingItem};
use super::snapshot::{restore, Saved};
use super::text;
use super::write::{file_meta, read_text, write_file, write_text, Perms};
use super::Device;
use crate::platform::profile as platform;

/// What differs between the item and the device (empty: in place). An error means it could not be looked at.
pub(crate) fn differences(item: &Item, device: &Device) -> Result<Vec<String>, String> {
    match item {
        Item::File(f) => file_differences(f),
        Item::Directory(d) => dir_differences(d),
        Item::Setting(s) => setting_differences(s),
        Item::Line(l) => {
            let text = read_text(&l.real)?;
            let present = text.is_some_and(|t| text::has_line(&t, &l.line));
            Ok(if present {
                vec![]
            } else {
                vec!["missing".to_owned()]
            })
        }
        Item::Service(s) => {
            let enabled = device.services.is_enabled(&s.unit)?;
            let word = |on: bool| if on { "enabled" } else { "disabled" };
            Ok(if enabled == s.enabled {
                vec![]
            } else {
                vec![format!(
                    "unit {} is {}, wanted {}",
                    s.unit,
                    word(enabled),
                    word(s.enabled)
                )]
            })
        }
        Item::Registry(r) => Ok(match platform::registry_read(&r.key, &r.name)? {
            None => vec!["missing".to_owned()],
            Some(v) if v != r.value => vec![format!("value {v}, wanted {}", r.value)],
            Some(_) => vec![],
        }),
    }
}

fn file_differences(f: &FileItem) -> Result<Vec<String>, String> {
    let Some(m) = lookup(&f.real)? else {
        return Ok(vec!["missing".to_owned()]);
    };
    if m.is_dir() {
        return Ok(vec!["is a folder, wanted a file".to_owned()]);
    }
    let mut found = Vec::new();
    let bytes =
        std::fs::read(&f.real).map_err(|e| format!("cannot read {}: {e}", f.real.display()))?;
    if bytes != f.content {
        found.push("content changed".to_owned());
    }
    found.extend(attr_differences(platform::meta(&m), f.attrs));
    Ok(found)
}

fn dir_differences(d: &DirItem) -> Result<Vec<String>, String> {
    match lookup(&d.real)? {
        None => Ok(vec!["missing".to_owned()]),
        Some(m) if !m.is_dir() => Ok(vec!["is a file, wanted a folder".to_owned()]),
        Some(m) => Ok(attr_differences(platform::meta(&m), d.attrs)),
    }
}

fn setting_differences(s: &SettingItem) -> Result<Vec<String>, String> {
    let values = read_text(&s.real)?
        .map(|t| text::values(&t, &s.section, &s.key))
        .unwrap_or_default();
    if values.is_empty() {
        return Ok(vec!["missing".to_owned()]);
    }
    let wrong = values.iter().find(|v| **v != s.value);
    Ok(wrong
        .map(|v| vec![format!("value {v:?}, wanted {:?}", s.value)])
        .unwrap_or_default())
}

fn attr_differences(now: platform::Meta, want: Attrs) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(mode) = want.mode.filter(|m| *m != now.mode) {
        found.push(format!("mode {:04o}, wanted {mode:04o}", now.mode));
    }
    if let Some(uid) = want.uid.filter(|u| *u != now.uid) {
        found.push(format!("owner {}, wanted {uid}", now.uid));
    }
    if let Some(gid) = want.gid.filter(|g| *g != now.gid) {
        found.push(format!("group {}, wanted {gid}", now.gid));
    }
    found
}

fn lookup(path: &Path) -> Result<Option<std::fs::Metadata>, String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot look at {}: {e}", path.display())),
    }
}

/// Makes the item so, then looks again: a change that did not take (a unit that stays enabled) is an error.
pub(crate) fn repair(item: &Item, device: &Device) -> Result<(), String> {
    make_so(item, device)?;
    let left = differences(item, device)?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("still {} after the change", left.join(", ")))
    }
}

fn make_so(item: &Item, device: &Device) -> Result<(), String> {
    match item {
        Item::File(f) => {
            let now = file_meta(&f.real);
            let perms = Perms {
                mode: f.attrs.mode.or(now.map(|m| m.mode)).unwrap_or(0o644),
                uid: f.attrs.uid.or(now.map(|m| m.uid)),
                gid: f.attrs.gid.or(now.map(|m| m.gid)),
            };
            write_file(&f.real, &f.content, perms)
        }
        Item::Directory(d) => make_dir(d),
        Item::Setting(s) => {
            let now = read_text(&s.real)?.unwrap_or_default();
            write_text(
                &s.real,
                &text::set_value(&now, &s.section, &s.key, &s.value),
            )
        }
        Item::Line(l) => {
            let now = read_text(&l.real)?.unwrap_or_default();
            write_text(&l.real, &text::add_line(&now, &l.line))
        }
        Item::Service(s) => device.services.set_enabled(&s.unit, s.enabled),
        Item::Registry(r) => platform::registry_write(&r.key, &r.name, &r.value),
    }
}

fn make_dir(d: &DirItem) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", d.real.display());
    if !d.real.is_dir() {
        std::fs::create_dir(&d.real).map_err(|e| fail("create folder", e))?;
    }
    platform::set_owner(&d.real, d.attrs.uid, d.attrs.gid)
        .map_err(|e| fail("change the owner of", e))?;
    match d.attrs.mode {
        Some(mode) => platform::set_mode(&d.real, mode).map_err(|e| fail("set the mode of", e)),
        None => Ok(()),
    }
}

/// Puts back what the item changed, from the state saved before rollcall touched it; false when nothing had to.
pub(crate) fn undo(item: &Item, saved: &Saved, device: &Device) -> Result<bool, String> {
    match item {
        Item::Setting(s) => undo_setting(s, saved),
        Item::Line(l) => undo_line(l, saved),
        _ => restore(&item.target(), saved, device),
    }
}

fn undo_setting(s: &SettingItem, saved: &Saved) -> Result<bool, String> {
    let Some(now) = read_text(&s.real)? else {
        return Ok(false);
    };
    let original = saved_text(saved, &s.real)?;
    let before = original.as_deref().unwrap_or("");
    let edited = match text::values(before, &s.section, &s.key).first() {
        Some(value) => text::set_value(&now, &s.section, &s.key, value),
        None => text::remove_key(
            &now,
            &s.section,
            &s.key,
            !text::has_section(before, &s.section),
        ),
    };
    finish_edit(&s.real, &now, &edited, original.is_none())
}

fn undo_line(l: &LineItem, saved: &Saved) -> Result<bool, String> {
    let Some(now) = read_text(&l.real)? else {
        return Ok(false);
    };
    let original = saved_text(saved, &l.real)?;
    if original
        .as_deref()
        .is_some_and(|t| text::has_line(t, &l.line))
    {
        return Ok(false);
    }
    finish_edit(
        &l.real,
        &now,
        &text::remove_line(&now, &l.line),
        original.is_none(),
    )
}

/// The text a file had before (None: there was no file).
fn saved_text(saved: &Saved, path: &Path) -> Result<Option<String>, String> {
    match saved {
        Saved::Absent => Ok(None),
        Saved::File { bytes, .. } => String::from_utf8(bytes.clone())
            .map(Some)
            .map_err(|_| format!("the saved copy of {} is not UTF-8 text", path.display())),
        _ => Err(format!(
            "the saved state of {} is not a file",
            path.display()
        )),
    }
}

/// Writes an undone edit; a file the profile created and that is now empty goes away.
fn finish_edit(path: &Path, now: &str, edited: &str, created: bool) -> Result<bool, String> {
    if created && text::is_blank(edited) {
        std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        return Ok(true);
    }
    if edited == now {
        return Ok(false);
    }
    write_text(path, edited).map(|()| true)
}

/// Unix only: symlinks, modes and the fake systemctl.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::profile::fixture::Fixture;
    use crate::profile::item::{ServiceItem, Target};
    use crate::profile::snapshot::capture;

    fn setting(fx: &Fixture, value: &str) -> Item {
        Item::Setting(SettingItem {
            file: "agent.ini".into(),
            real: fx.etc.join("agent.ini"),
            section: "network".into(),
            key: "dns".into(),
            value: value.into(),
        })
    }

    #[test]
    fn differences_are_told_in_words_and_repaired() {
        let fx = Fixture::new();
        let device = fx.device();
        let item = Item::File(FileItem {
            path: "client.conf".into(),
            real: fx.etc.join("client.conf"),
            content: b"server = vpn\n".to_vec(),
            source: None,
            attrs: Attrs {
                mode: Some(0o640),
                ..Attrs::default()
            },
        });
        assert_eq!(differences(&item, &device), Ok(vec!["missing".to_owned()]));
        std::fs::write(fx.etc.join("client.conf"), b"server = evil\n").unwrap();
        platform::set_mode(&fx.etc.join("client.conf"), 0o666).unwrap();
        assert_eq!(
            differences(&item, &device).unwrap(),
            vec!["content changed", "mode 0666, wanted 0640"]
        );
        repair(&item, &device).unwrap();
        assert_eq!(differences(&item, &device), Ok(vec![]));

        let unit = Item::Service(ServiceItem {
            unit: "cups.service".into(),
            enabled: false,
        });
        fx.enable("cups.service");
        assert_eq!(
            differences(&unit, &device).unwrap(),
            vec!["unit cups.service is enabled, wanted disabled"]
        );
        repair(&unit, &device).unwrap();
        assert_eq!(fx.units(), "");
        let broken = Item::Service(ServiceItem {
            unit: "broken.service".into(),
            enabled: true,
        });
        assert!(repair(&broken, &device)
            .unwrap_err()
            .contains("enable broken.service exited with 1"));
    }

    #[test]
    fn a_setting_is_undone_to_its_first_value_or_away() {
        let fx = Fixture::new();
        let device = fx.device();
        let path = fx.etc.join("agent.ini");
        let target = Target::Path { path: path.clone() };

        let absent = capture(&target, &device).unwrap();
        repair(&setting(&fx, "10.0.0.53"), &device).unwrap();
        assert_eq!(undo(&setting(&fx, "10.0.0.53"), &absent, &device), Ok(true));
        assert!(
            !path.exists(),
            "a file the setting created goes away with it"
        );

        std::fs::write(&path, "[network]\ndns = 1.1.1.1\n").unwrap();
        let original = capture(&target, &device).unwrap();
        repair(&setting(&fx, "10.0.0.53"), &device).unwrap();
        std::fs::write(&path, "[network]\ndns = 10.0.0.53\nmtu = 1400\n").unwrap();
        assert_eq!(
            undo(&setting(&fx, "10.0.0.53"), &original, &device),
            Ok(true)
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[network]\ndns = 1.1.1.1\nmtu = 1400\n",
            "the value goes back; a key added by someone else stays"
        );
    }
}
