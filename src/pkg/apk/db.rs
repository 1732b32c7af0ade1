//! apk's own state inside the guest: `/lib/apk/db/installed` (which package owns which
//! file, with checksums and ownership), `/lib/apk/db/scripts.tar`, and the manifest of a
//! package's data segment those are made from. With these, `apk info`, `apk audit`,
//! `apk add` and `apk del` inside the guest see exactly what osbuilder installed.

use std::fmt::Write as _;
use std::io::Read;

use anyhow::{Context, Result, bail};
use sha1::{Digest, Sha1};

use super::index::Package;
use super::package::{Scripts, hex, q1_from_digest};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    HardLink,
    Other,
}

/// One entry of a package's data segment.
#[derive(Clone, Debug)]
pub struct ManifestEntry {
    /// Relative path, no leading `/` or `./`, no trailing `/`.
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// SHA-1 of the content (files) or of the target (symlinks).
    pub sha1: Option<[u8; 20]>,
    pub link: Option<String>,
}

/// Read a data segment (gzip'd tar) into its manifest. The PAX `APK-TOOLS.checksum.SHA1`
/// header, when present, must match the content: a mismatch means the package was built
/// wrong or altered, and is refused.
pub fn manifest(data_segment: &[u8], what: &str) -> Result<Vec<ManifestEntry>> {
    let gz = flate2::read::MultiGzDecoder::new(data_segment);
    let mut ar = tar::Archive::new(gz);
    let mut out = Vec::new();
    for e in ar
        .entries()
        .with_context(|| format!("reading {what}'s data segment"))?
    {
        let mut e = e.with_context(|| format!("reading {what}'s data segment"))?;
        let mut pax_sha1 = None;
        if let Some(exts) = e.pax_extensions()? {
            for x in exts {
                let x = x?;
                if x.key_bytes() == b"APK-TOOLS.checksum.SHA1" {
                    pax_sha1 = Some(String::from_utf8_lossy(x.value_bytes()).into_owned());
                }
            }
        }
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let path = raw
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        let h = e.header();
        let (mode, uid, gid) = (h.mode()? & 0o7777, h.uid()? as u32, h.gid()? as u32);
        let et = h.entry_type();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let (kind, sha1): (EntryKind, Option<[u8; 20]>) = match et {
            tar::EntryType::Directory => (EntryKind::Dir, None),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut h = Sha1::new();
                std::io::copy(&mut e, &mut h)?;
                (EntryKind::File, Some(h.finalize().into()))
            }
            tar::EntryType::Symlink => {
                let t = link.clone().unwrap_or_default();
                (EntryKind::Symlink, Some(Sha1::digest(t.as_bytes()).into()))
            }
            tar::EntryType::Link => (EntryKind::HardLink, None),
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => continue,
            _ => (EntryKind::Other, None),
        };
        if let (Some(want), Some(got)) = (&pax_sha1, &sha1) {
            if kind == EntryKind::File && !want.eq_ignore_ascii_case(&hex(got)) {
                bail!("{what}: {path}: content does not match its APK-TOOLS.checksum.SHA1");
            }
        }
        if path.is_empty() {
            continue;
        }
        out.push(ManifestEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            sha1,
            link,
        });
    }
    Ok(out)
}

/// The index-style header lines of a package (apk's field order).
fn write_header(o: &mut String, p: &Package) {
    let mut line = |k: char, v: &str| {
        if !v.is_empty() {
            let _ = writeln!(o, "{k}:{v}");
        }
    };
    line('C', &p.checksum);
    line('P', &p.name);
    line('V', &p.version);
    line('A', &p.arch);
    line('S', &p.size.to_string());
    line('I', &p.installed_size.to_string());
    line('T', &p.description);
    line('U', &p.url);
    line('L', &p.license);
    line('o', &p.origin);
    line('m', &p.maintainer);
    line(
        't',
        &p.build_time.map(|t| t.to_string()).unwrap_or_default(),
    );
    line('c', &p.commit);
    line(
        'k',
        &p.provider_priority
            .map(|t| t.to_string())
            .unwrap_or_default(),
    );
    let join = |v: Vec<String>| v.join(" ");
    line(
        'D',
        &join(p.depends.iter().map(|d| d.to_string()).collect()),
    );
    line(
        'p',
        &join(p.provides.iter().map(|d| d.to_string()).collect()),
    );
    line(
        'i',
        &join(p.install_if.iter().map(|d| d.to_string()).collect()),
    );
    line('r', &p.replaces.join(" "));
    line(
        'q',
        &p.replaces_priority
            .map(|t| t.to_string())
            .unwrap_or_default(),
    );
}

/// One package's record in `/lib/apk/db/installed`: the header, then its directories
/// (`F:`, with `M:uid:gid:mode` when not root:root 0755) and, under each, its files
/// (`R:`, with `a:uid:gid:mode` when not root:root 0644, and `Z:` the Q1 checksum).
pub fn installed_record(p: &Package, files: &[ManifestEntry]) -> String {
    let mut o = String::new();
    write_header(&mut o, p);
    let mut cur_dir: Option<&str> = None;
    for e in files {
        match e.kind {
            EntryKind::Dir => {
                let _ = writeln!(o, "F:{}", e.path);
                if (e.uid, e.gid, e.mode) != (0, 0, 0o755) {
                    let _ = writeln!(o, "M:{}:{}:{:o}", e.uid, e.gid, e.mode);
                }
                cur_dir = Some(&e.path);
            }
            EntryKind::File | EntryKind::Symlink | EntryKind::HardLink => {
                let (dir, base) = match e.path.rsplit_once('/') {
                    Some(x) => x,
                    // Files at the top of the root belong to apk's unnamed root dir, which
                    // the installed db cannot name; apk packages do not ship any.
                    None => continue,
                };
                if cur_dir != Some(dir) {
                    let _ = writeln!(o, "F:{dir}");
                    cur_dir = Some(dir);
                }
                let _ = writeln!(o, "R:{base}");
                // apk compares every file's owner and mode (symlinks: 0777) with root:root
                // 0644, so symlinks always get an `a:` line.
                let mode = if e.kind == EntryKind::Symlink {
                    0o777
                } else {
                    e.mode
                };
                if (e.uid, e.gid, mode) != (0, 0, 0o644) {
                    let _ = writeln!(o, "a:{}:{}:{:o}", e.uid, e.gid, mode);
                }
                if let Some(s) = &e.sha1 {
                    let _ = writeln!(o, "Z:{}", q1_from_digest(s));
                }
            }
            EntryKind::Other => {}
        }
    }
    o.push('\n');
    o
}

/// `/lib/apk/db/scripts.tar`: each package's scripts as `name-version.Q1….action`, the
/// way apk keeps them to run on upgrade or removal.
pub fn scripts_tar(pkgs: &[(Package, Scripts)], mtime: u64) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, scripts) in pkgs {
        for (name, body) in scripts.iter() {
            let action = name.trim_start_matches('.');
            let entry = format!("{}-{}.{}.{action}", p.name, p.version, p.checksum);
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, &entry, body.as_slice())?;
        }
    }
    b.into_inner().context("writing scripts.tar")
}

/// Read `/etc/group`-style text and find a group's id.
pub fn group_id(group_file: &[u8], name: &str) -> Option<u32> {
    let mut s = String::new();
    group_file.take(1 << 20).read_to_string(&mut s).ok()?;
    s.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_record_groups_files_under_dirs() {
        let p = Package {
            checksum: "Q1abc=".into(),
            name: "x".into(),
            version: "1-r0".into(),
            arch: "x86_64".into(),
            size: 10,
            installed_size: 4096,
            ..Default::default()
        };
        let e = |path: &str, kind, mode, uid| ManifestEntry {
            path: path.into(),
            kind,
            mode,
            uid,
            gid: 0,
            sha1: (kind != EntryKind::Dir).then_some([7u8; 20]),
            link: None,
        };
        let files = vec![
            e("etc", EntryKind::Dir, 0o755, 0),
            e("etc/a", EntryKind::File, 0o644, 0),
            e("etc/shadow", EntryKind::File, 0o640, 0),
            e("root", EntryKind::Dir, 0o700, 0),
            e("usr/bin/b", EntryKind::Symlink, 0o777, 0),
        ];
        let r = installed_record(&p, &files);
        assert_eq!(
            r,
            "C:Q1abc=\nP:x\nV:1-r0\nA:x86_64\nS:10\nI:4096\nF:etc\nR:a\nZ:Q1BwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\
             R:shadow\na:0:0:640\nZ:Q1BwcHBwcHBwcHBwcHBwcHBwcHBwc=\nF:root\nM:0:0:700\n\
             F:usr/bin\nR:b\na:0:0:777\nZ:Q1BwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\n"
        );
        assert_eq!(
            group_id(b"root:x:0:root\nshadow:x:42:\n", "shadow"),
            Some(42)
        );
    }
}
