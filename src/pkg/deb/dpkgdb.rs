//! The dpkg database of the new rootfs (var/lib/dpkg), so dpkg and apt inside the guest
//! (and `dpkg --admindir=ROOTFS/var/lib/dpkg` on the host) know what is installed:
//! `status` with each package's control stanza and Status line (plus Conffiles with their
//! md5sums), `info/<pkg>.list` file lists, the control members (md5sums, conffiles,
//! maintainer scripts, triggers, shlibs, symbols…), plus `arch`. Diversions, stat
//! overrides and triggers are written by the configuration step (configure::dpkgstate).

use anyhow::Result;
use md5::Digest as _;

use super::control::parse_stanzas;
use super::debfile::ControlInfo;
use crate::pkg::extract::{Attrs, Extractor, Installed};

/// One package as it was placed in the rootfs.
pub struct InstalledDeb {
    pub control: ControlInfo,
    pub files: Vec<Installed>,
}

impl InstalledDeb {
    fn field(&self, k: &str) -> String {
        parse_stanzas(&self.control.control)
            .first()
            .and_then(|s| s.get(k))
            .unwrap_or("")
            .trim()
            .to_string()
    }

    pub fn name(&self) -> String {
        self.field("Package")
    }

    /// The name dpkg uses for info files: `pkg:arch` for Multi-Arch: same packages.
    pub fn info_name(&self) -> String {
        if self.field("Multi-Arch") == "same" {
            format!("{}:{}", self.name(), self.field("Architecture"))
        } else {
            self.name()
        }
    }
}

/// Write var/lib/dpkg. `status_word` is "installed" (configured declaratively) or
/// "unpacked" (maintainer scripts will run with `dpkg --configure -a`).
pub fn write_database(
    ex: &mut Extractor,
    debs: &[InstalledDeb],
    native_arch: &str,
    status_word: &str,
    mtime: i64,
) -> Result<()> {
    let dir = Attrs::root(0o755, mtime);
    let file = Attrs::root(0o644, mtime);
    for d in [
        "var/lib/dpkg",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "var/lib/dpkg/alternatives",
        "var/lib/dpkg/parts",
    ] {
        ex.create_dir(d.as_bytes(), dir)?;
    }
    let mut sorted: Vec<&InstalledDeb> = debs.iter().collect();
    // dpkg's order: by package name, then architecture.
    sorted.sort_by_key(|d| (d.name(), d.info_name()));
    let mut status = String::new();
    for d in &sorted {
        status.push_str(&status_stanza(ex, d, status_word)?);
        status.push('\n');
        let info = d.info_name();
        let mut list = String::from("/.\n");
        let mut seen = std::collections::HashSet::new();
        for f in &d.files {
            let p = String::from_utf8_lossy(&f.path).into_owned();
            if p != "/" && seen.insert(p.clone()) {
                list.push_str(&p);
                list.push('\n');
            }
        }
        ex.write_file(
            format!("var/lib/dpkg/info/{info}.list").as_bytes(),
            &mut list.as_bytes(),
            file,
        )?;
        for (member, data) in &d.control.members {
            let mode = if matches!(
                member.as_str(),
                "preinst" | "postinst" | "prerm" | "postrm" | "config"
            ) {
                0o755
            } else {
                0o644
            };
            ex.write_file(
                format!("var/lib/dpkg/info/{info}.{member}").as_bytes(),
                &mut data.as_slice(),
                Attrs::root(mode, mtime),
            )?;
        }
    }
    ex.write_file(b"var/lib/dpkg/status", &mut status.as_bytes(), file)?;
    // Info database format 1: Multi-Arch: same packages' files are named pkg:arch.*.
    ex.write_file(b"var/lib/dpkg/info/format", &mut &b"1\n"[..], file)?;
    ex.write_file(
        b"var/lib/dpkg/arch",
        &mut format!("{native_arch}\n").as_bytes(),
        file,
    )?;
    Ok(())
}

/// The fields dpkg knows, in the order it writes them to the status file; other fields
/// follow in the order the control file has them.
const FIELD_ORDER: &[&str] = &[
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Filename",
    "Size",
    "MD5sum",
    "MSDOS-Filename",
    "Description",
];

fn status_stanza(ex: &mut Extractor, d: &InstalledDeb, status_word: &str) -> Result<String> {
    let stanza = parse_stanzas(&d.control.control);
    let fields: Vec<(String, String)> = stanza
        .first()
        .map(|s| {
            s.fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mut conffiles = String::new();
    if let Some(cf) = d.control.members.get("conffiles") {
        let text = String::from_utf8_lossy(cf);
        let mut lines = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            // "remove-on-upgrade /etc/x": flags precede the path in the control member
            // and follow the hash in the status file.
            let words: Vec<&str> = line.split_whitespace().collect();
            let path = words.last().copied().unwrap_or(line);
            let flags = &words[..words.len().saturating_sub(1)];
            let sum = match ex.read_file(path.trim_start_matches('/').as_bytes())? {
                Some(data) => hex::encode(md5::Md5::digest(&data)),
                None => "newconffile".to_string(),
            };
            let mut l = format!(" {path} {sum}");
            for f in flags {
                l.push(' ');
                l.push_str(f);
            }
            lines.push(l);
        }
        if !lines.is_empty() {
            conffiles = format!("\n{}", lines.join("\n"));
        }
    }
    let mut out = String::new();
    let mut emit = |k: &str, v: &str| {
        if v.starts_with('\n') || v.is_empty() {
            out.push_str(&format!("{k}:{v}\n"));
        } else {
            out.push_str(&format!("{k}: {v}\n"));
        }
    };
    for k in FIELD_ORDER {
        match *k {
            "Status" => emit("Status", &format!("install ok {status_word}")),
            "Conffiles" => {
                if !conffiles.is_empty() {
                    emit("Conffiles", &conffiles);
                }
            }
            _ => {
                if let Some((name, v)) = fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)) {
                    emit(name, v);
                }
            }
        }
    }
    for (k, v) in &fields {
        if !FIELD_ORDER.iter().any(|f| f.eq_ignore_ascii_case(k)) {
            emit(k, v);
        }
    }
    Ok(out)
}
