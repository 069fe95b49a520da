//! Everything checked before anything is written: `profile.toml` parsed (unknown keys refused), every path inside
//! the allow-list once symlinks are followed, modes, owners, `content` or `source` (inside the package), `format`
//! content that parses, item kinds this system has, no item listed twice or fighting another over a path, and
//! (for an apply) every folder an item needs existing or made by a `[[directory]]` item. The result is a
//! `Profile` the engine applies without looking at `profile.toml` again.

use std::path::{Component, Path, PathBuf};

use super::item::{
    clash, Attrs, DirItem, FileItem, Item, LineItem, Profile, RegistryItem, ServiceItem,
    SettingItem,
};
use super::spec::{
    self, DirectorySpec, FileSpec, Id, LineSpec, RegType, RegistrySpec, ServiceSpec, SettingSpec,
};
use super::{allow, text, Device, ProfileError};
use crate::platform::profile::{self as platform, RegValue};

/// Reads `dir/profile.toml` for profile `name` and checks all of it against this device.
pub(crate) fn profile(name: &str, dir: &Path, device: &Device) -> Result<Profile, ProfileError> {
    let spec = spec::read(name, dir)?;
    let check = Check {
        profile: name,
        dir,
        allow: &device.allow,
        device,
    };
    let mut items = Vec::new();
    for d in &spec.directory {
        items.push(check.directory(d)?);
    }
    for f in &spec.file {
        items.push(check.file(f)?);
    }
    for s in &spec.setting {
        items.push(check.setting(s)?);
    }
    for l in &spec.line {
        items.push(check.line(l)?);
    }
    for s in &spec.service {
        items.push(check.service(s)?);
    }
    for r in &spec.registry {
        items.push(check.registry(r)?);
    }
    let profile = Profile {
        restore_on_remove: spec.profile.restore_on_remove,
        remove: spec.profile.remove,
        items,
    };
    check_whole(name, &profile)?;
    Ok(profile)
}

fn check_whole(name: &str, profile: &Profile) -> Result<(), ProfileError> {
    let here = "profile.toml";
    if profile.remove && !profile.items.is_empty() {
        return Err(ProfileError::invalid(
            name,
            here,
            "a removal (remove = true) lists no items",
        ));
    }
    if !profile.remove && profile.items.is_empty() {
        return Err(ProfileError::invalid(
            name,
            here,
            "lists no items: add a [[file]], [[directory]], [[setting]], [[line]], [[service]] or [[registry]]",
        ));
    }
    for (i, b) in profile.items.iter().enumerate() {
        if let Some(why) = profile.items[..i].iter().find_map(|a| clash(a, b)) {
            return Err(ProfileError::invalid(name, &b.label(), why));
        }
    }
    Ok(())
}

/// Every folder a path item writes into exists, or a `[[directory]]` item before it creates it.
pub(crate) fn check_folders(name: &str, profile: &Profile) -> Result<(), ProfileError> {
    let mut made: Vec<&Path> = Vec::new();
    for item in &profile.items {
        let real = match item {
            Item::File(f) => &f.real,
            Item::Directory(d) => &d.real,
            Item::Setting(s) => &s.real,
            Item::Line(l) => &l.real,
            Item::Service(_) | Item::Registry(_) => continue,
        };
        let folder = real.parent().unwrap_or(Path::new("/"));
        if !folder.is_dir() && !made.contains(&folder) {
            let why = format!(
                "folder {} does not exist and no [[directory]] item before it creates it",
                folder.display()
            );
            return Err(ProfileError::invalid(name, &item.label(), why));
        }
        if let Item::Directory(d) = item {
            made.push(&d.real);
        }
    }
    Ok(())
}

/// The checks of one item, with what they need.
struct Check<'a> {
    profile: &'a str,
    dir: &'a Path,
    allow: &'a [PathBuf],
    device: &'a Device,
}

impl Check<'_> {
    fn invalid(&self, item: &Item, reason: impl Into<String>) -> ProfileError {
        ProfileError::invalid(self.profile, &item.label(), reason)
    }

    fn path(&self, item: &Item, path: &str) -> Result<PathBuf, ProfileError> {
        let path = self.device.locate(path);
        allow::resolve(&path, self.allow).map_err(|reason| ProfileError::NotAllowed {
            profile: self.profile.to_owned(),
            item: item.label(),
            reason,
            allowed: allow::describe(self.allow),
        })
    }

    fn attrs(
        &self,
        item: &Item,
        mode: &Option<String>,
        owner: &Option<Id>,
        group: &Option<Id>,
    ) -> Result<Attrs, ProfileError> {
        if !platform::OWNERS && (mode.is_some() || owner.is_some() || group.is_some()) {
            return Err(self.invalid(item, "mode, owner and group apply on Linux only"));
        }
        let mode = match mode {
            Some(m) => Some(parse_mode(m).ok_or_else(|| {
                self.invalid(
                    item,
                    format!("mode {m:?} is not four octal digits like \"0644\""),
                )
            })?),
            None => None,
        };
        let id = |id: &Option<Id>, lookup: fn(&str) -> Result<u32, String>| match id {
            Some(Id::Number(n)) => Ok(Some(*n)),
            Some(Id::Name(name)) => lookup(name).map(Some).map_err(|e| self.invalid(item, e)),
            None => Ok(None),
        };
        Ok(Attrs {
            mode,
            uid: id(owner, platform::user_id)?,
            gid: id(group, platform::group_id)?,
        })
    }

    fn directory(&self, d: &DirectorySpec) -> Result<Item, ProfileError> {
        let mut dir = DirItem {
            path: d.path.clone(),
            real: PathBuf::new(),
            attrs: Attrs::default(),
        };
        let item = Item::Directory(dir.clone());
        dir.real = self.path(&item, &d.path)?;
        dir.attrs = self.attrs(&item, &d.mode, &d.owner, &d.group)?;
        Ok(Item::Directory(dir))
    }

    fn file(&self, f: &FileSpec) -> Result<Item, ProfileError> {
        let mut file = FileItem {
            path: f.path.clone(),
            real: PathBuf::new(),
            content: Vec::new(),
            source: f.source.clone(),
            attrs: Attrs::default(),
        };
        let item = Item::File(file.clone());
        file.real = self.path(&item, &f.path)?;
        file.content = match (&f.content, &f.source) {
            (Some(content), None) => content.clone().into_bytes(),
            (None, Some(source)) => self.source(&item, source)?,
            (Some(_), Some(_)) => {
                return Err(self.invalid(&item, "give content or source, not both"))
            }
            (None, None) => {
                return Err(self.invalid(&item, "give its content, or a source file in the package"))
            }
        };
        if let Some(format) = f.format {
            text::check_format(format, &file.content)
                .map_err(|e| self.invalid(&item, format!("content is not valid {format}: {e}")))?;
        }
        file.attrs = self.attrs(&item, &f.mode, &f.owner, &f.group)?;
        Ok(Item::File(file))
    }

    /// The bytes of a payload file, which must stay inside the package once symlinks are followed.
    fn source(&self, item: &Item, source: &str) -> Result<Vec<u8>, ProfileError> {
        let rel = Path::new(source);
        if rel.as_os_str().is_empty()
            || !rel.components().all(|c| matches!(c, Component::Normal(_)))
        {
            let why = format!("source {source} is outside the package: give a path inside it, like files/client.conf");
            return Err(self.invalid(item, why));
        }
        let base = std::fs::canonicalize(self.dir)
            .map_err(|e| self.invalid(item, format!("cannot read the package: {e}")))?;
        let real = std::fs::canonicalize(self.dir.join(rel)).map_err(|e| {
            self.invalid(item, format!("source {source} is not in the package: {e}"))
        })?;
        if !real.starts_with(&base) {
            return Err(self.invalid(
                item,
                format!("source {source} leads outside the package through a symlink"),
            ));
        }
        std::fs::read(&real)
            .map_err(|e| self.invalid(item, format!("cannot read source {source}: {e}")))
    }

    fn setting(&self, s: &SettingSpec) -> Result<Item, ProfileError> {
        let mut setting = SettingItem {
            file: s.file.clone(),
            real: PathBuf::new(),
            section: s.section.trim().to_owned(),
            key: s.key.clone(),
            value: s.value.clone(),
        };
        let item = Item::Setting(setting.clone());
        let bad_key = s.key.trim() != s.key
            || s.key.is_empty()
            || s.key.starts_with([';', '#', '['])
            || s.key.contains(['=', '\n', '\r']);
        if bad_key {
            return Err(self.invalid(
                &item,
                format!(
                    "{:?} cannot be a key: no spaces around it, no '=' in it",
                    s.key
                ),
            ));
        }
        if s.section.contains(['[', ']', '\n', '\r']) {
            return Err(self.invalid(&item, format!("{:?} cannot be a section name", s.section)));
        }
        if s.value.contains(['\n', '\r']) || s.value.trim() != s.value {
            return Err(self.invalid(&item, "the value has a line break or surrounding spaces"));
        }
        setting.real = self.path(&item, &s.file)?;
        Ok(Item::Setting(setting))
    }

    fn line(&self, l: &LineSpec) -> Result<Item, ProfileError> {
        let mut line = LineItem {
            file: l.file.clone(),
            real: PathBuf::new(),
            line: l.line.clone(),
        };
        let item = Item::Line(line.clone());
        if l.line.trim().is_empty() || l.line.contains(['\n', '\r']) {
            return Err(self.invalid(&item, "a line is one line of text, not empty"));
        }
        line.real = self.path(&item, &l.file)?;
        Ok(Item::Line(line))
    }

    fn service(&self, s: &ServiceSpec) -> Result<Item, ProfileError> {
        let item = Item::Service(ServiceItem {
            unit: s.unit.clone(),
            enabled: s.enabled,
        });
        if !platform::SERVICES {
            return Err(self.invalid(&item, "service items apply on Linux only"));
        }
        let bad = s.unit.is_empty()
            || s.unit.starts_with('-')
            || s.unit.contains(|c: char| c.is_whitespace() || c == '/');
        if bad {
            return Err(self.invalid(
                &item,
                format!("{:?} is not a unit name like cups.service", s.unit),
            ));
        }
        Ok(item)
    }

    fn registry(&self, r: &RegistrySpec) -> Result<Item, ProfileError> {
        let mut reg = RegistryItem {
            key: r.key.clone(),
            name: r.name.clone(),
            value: RegValue::String(r.value.clone()),
        };
        let item = Item::Registry(reg.clone());
        if !platform::REGISTRY {
            return Err(self.invalid(&item, "registry items apply on Windows only"));
        }
        let upper = r.key.to_ascii_uppercase();
        if !(upper.starts_with("HKLM\\") || upper.starts_with("HKEY_LOCAL_MACHINE\\"))
            || r.key.contains('\n')
        {
            return Err(self.invalid(&item, "the key must be under HKLM\\"));
        }
        if r.name.is_empty() || r.name.contains('\n') {
            return Err(self.invalid(&item, "the value needs a name"));
        }
        if r.kind == RegType::Dword {
            let n = parse_dword(&r.value).ok_or_else(|| {
                self.invalid(
                    &item,
                    format!("{:?} is not a dword (0 to 4294967295)", r.value),
                )
            })?;
            reg.value = RegValue::Dword(n);
        }
        Ok(Item::Registry(reg))
    }
}

/// "0644" → 0o644: exactly four octal digits.
fn parse_mode(mode: &str) -> Option<u32> {
    let octal = mode.len() == 4 && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
    octal.then(|| u32::from_str_radix(mode, 8).ok()).flatten()
}

/// "1", "4294967295" or "0x1f".
fn parse_dword(value: &str) -> Option<u32> {
    match value.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

/// Unix only: symlinks, modes and the fake systemctl.
#[cfg(all(test, unix))]
mod tests {
    use super::parse_mode;
    use crate::profile::fixture::Fixture;

    /// A valid item before the bad one: it is not written either.
    const FIRST: &str = "[[file]]\npath = \"$ETC/ok.conf\"\ncontent = \"x\"\n";

    fn refused(fx: &Fixture, toml: &str, want: &str) {
        let e = fx.refused("vpn", &format!("{FIRST}{toml}"));
        assert!(
            e.contains(&fx.expand(want)),
            "{toml}\n  said: {e}\nwanted: {}",
            fx.expand(want)
        );
    }

    #[test]
    fn paths_outside_the_allowed_folders_are_refused_before_anything_is_written() {
        let fx = Fixture::new();
        std::os::unix::fs::symlink(&fx.outside, fx.etc.join("link")).unwrap();
        std::fs::write(fx.outside.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        std::os::unix::fs::symlink(fx.outside.join("hosts"), fx.etc.join("hosts")).unwrap();
        refused(
            &fx,
            "[[file]]\npath = \"$OUT/x.conf\"\ncontent = \"x\"\n",
            "profile vpn: file $OUT/x.conf: $OUT/x.conf is outside the allowed folders; allowed folders: $ETC",
        );
        refused(
            &fx,
            "[[file]]\npath = \"etc/x.conf\"\ncontent = \"x\"\n",
            "file etc/x.conf: etc/x.conf is not an absolute path; allowed folders: $ETC",
        );
        refused(
            &fx,
            "[[directory]]\npath = \"$ETC/../outside/d\"\n",
            "directory $ETC/../outside/d: $ETC/../outside/d has a .. component",
        );
        refused(
            &fx,
            "[[file]]\npath = \"$ETC/link/x.conf\"\ncontent = \"x\"\n",
            "$ETC/link/x.conf leads to $OUT/x.conf through a symlink, outside the allowed folders",
        );
        refused(
            &fx,
            "[[line]]\nfile = \"$ETC/hosts\"\nline = \"10.1.2.3 records.nss.local\"\n",
            "line \"10.1.2.3 records.nss.local\" in $ETC/hosts: $ETC/hosts leads to $OUT/hosts through a symlink",
        );
        refused(
            &fx,
            "[[setting]]\nfile = \"/etc/shadow\"\nkey = \"root\"\nvalue = \"x\"\n",
            "setting root of /etc/shadow: /etc/shadow is outside the allowed folders",
        );
    }

    #[test]
    fn every_bad_item_is_refused_in_words_and_nothing_changes() {
        let fx = Fixture::new();
        std::fs::create_dir(fx.payload.join("files")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", fx.payload.join("files/passwd")).unwrap();
        let file = |extra: &str| format!("[[file]]\npath = \"$ETC/a.conf\"\n{extra}");
        let cases = [
            (
                file("content = \"x\"\ncolour = \"red\"\n"),
                "profile vpn: $PAYLOAD/profile.toml is not a valid profile: line 7: unknown field `colour`",
            ),
            (file("content = \"x\"\nmode = \"644\"\n"), "file $ETC/a.conf: mode \"644\" is not four octal digits like \"0644\""),
            (file("content = \"x\"\nmode = \"0849\"\n"), "mode \"0849\" is not four octal digits"),
            (file("content = \"x\"\nowner = \"no-such-user-rollcall\"\n"), "no user named \"no-such-user-rollcall\" in /etc/passwd"),
            (file("content = \"x\"\ngroup = \"no-such-group-rollcall\"\n"), "no group named \"no-such-group-rollcall\" in /etc/group"),
            (file("content = \"x\"\nsource = \"files/a.conf\"\n"), "file $ETC/a.conf: give content or source, not both"),
            (file("mode = \"0644\"\n"), "file $ETC/a.conf: give its content, or a source file in the package"),
            (file("source = \"../secret\"\n"), "source ../secret is outside the package: give a path inside it"),
            (file("source = \"/etc/passwd\"\n"), "source /etc/passwd is outside the package"),
            (file("source = \"files/passwd\"\n"), "source files/passwd leads outside the package through a symlink"),
            (file("source = \"files/none.conf\"\n"), "source files/none.conf is not in the package"),
            (
                file("content = \"[vpn]\\njust words\\n\"\nformat = \"ini\"\n"),
                "content is not valid INI: line 2: \"just words\" is not [section], key = value or a comment",
            ),
            (file("content = \"a = \"\nformat = \"toml\"\n"), "content is not valid TOML: line 1: "),
            (file("content = \"{\\\"a\\\": }\"\nformat = \"json\"\n"), "content is not valid JSON: expected value at line 1 column 7"),
            (file("content = \"x\"\n") + &file("content = \"y\"\n"), "file $ETC/a.conf: it is listed twice"),
            (
                "[[directory]]\npath = \"$ETC/ok.conf\"\n".to_owned(),
                "file $ETC/ok.conf: it touches the same path as directory $ETC/ok.conf",
            ),
            (
                "[[setting]]\nfile = \"$ETC/ok.conf\"\nkey = \"k\"\nvalue = \"v\"\n".to_owned(),
                "setting k of $ETC/ok.conf: it touches the same path as file $ETC/ok.conf",
            ),
            (
                "[[setting]]\nfile = \"$ETC/a.ini\"\nkey = \"a = b\"\nvalue = \"v\"\n".to_owned(),
                "\"a = b\" cannot be a key",
            ),
            ("[[line]]\nfile = \"$ETC/hosts\"\nline = \" \"\n".to_owned(), "a line is one line of text, not empty"),
            ("[[service]]\nunit = \"--root=/\"\nenabled = true\n".to_owned(), "\"--root=/\" is not a unit name like cups.service"),
            (
                "[[registry]]\nkey = 'HKLM\\SOFTWARE\\NSS\\VPN'\nname = \"Server\"\nvalue = \"vpn.nss.local\"\n".to_owned(),
                "profile vpn: registry HKLM\\SOFTWARE\\NSS\\VPN\\Server: registry items apply on Windows only",
            ),
            (
                "[[file]]\npath = \"$ETC/vpn/client.conf\"\ncontent = \"x\"\n".to_owned(),
                "file $ETC/vpn/client.conf: folder $ETC/vpn does not exist and no [[directory]] item before it creates it",
            ),
        ];
        for (toml, want) in cases {
            let want = want.replace("$PAYLOAD", &fx.payload.display().to_string());
            refused(&fx, &toml, &want);
        }
        let e = fx.refused("vpn", "[profile]\nrestore_on_remove = true\n");
        assert!(
            e.contains("profile vpn: profile.toml: lists no items: add a [[file]]"),
            "{e}"
        );
        let e = fx.refused("vpn", &format!("[profile]\nremove = true\n{FIRST}"));
        assert!(
            e.contains("profile vpn: profile.toml: a removal (remove = true) lists no items"),
            "{e}"
        );
        let e = fx.refused("../vpn", FIRST);
        assert!(e.starts_with("\"../vpn\" cannot name a profile"), "{e}");
    }

    #[test]
    fn a_folder_made_by_an_earlier_item_is_enough() {
        let fx = Fixture::new();
        let toml = "[[file]]\npath = \"$ETC/vpn/certs/ca.pem\"\ncontent = \"pem\"\n\
                    [[directory]]\npath = \"$ETC/vpn\"\n[[directory]]\npath = \"$ETC/vpn/certs\"\nmode = \"0750\"\n";
        fx.apply("vpn", "1", toml).unwrap();
        assert_eq!(fx.read("vpn/certs/ca.pem"), "pem");
        assert_eq!(parse_mode("0750"), Some(0o750));
        assert_eq!(parse_mode("750"), None);
    }
}
