//! `systemd-tmpfiles --create [FILE…]` on the rootfs, as packages' postinsts run it (dh's
//! snippets, systemd's own postinst): directories, symlinks, files, ownership and mode
//! adjustments. Boot-only (`!`) and credential (`^`) lines are skipped, as a non-boot
//! run does; ACLs and file attributes (`a`, `h`) cannot be carried by the rootfs
//! metadata and are reported.

use anyhow::Result;

use super::accounts::Accounts;
use crate::pkg::extract::{Attrs, Extractor};
use crate::tree::mtree::MType;

const DIRS: [&str; 4] = [
    "etc/tmpfiles.d",
    "run/tmpfiles.d",
    "usr/local/lib/tmpfiles.d",
    "usr/lib/tmpfiles.d",
];

/// The configuration files a run uses: the named ones (first directory that has each),
/// or all of them by name.
fn config_files(ex: &mut Extractor, names: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut wanted: Vec<String> = names.to_vec();
    if wanted.is_empty() {
        let mut all = std::collections::BTreeSet::new();
        for d in DIRS {
            for n in ex.read_dir(d.as_bytes())?.unwrap_or_default() {
                if n.ends_with(b".conf") {
                    all.insert(String::from_utf8_lossy(&n).into_owned());
                }
            }
        }
        wanted = all.into_iter().collect();
    }
    for n in wanted {
        if n.contains('/') {
            out.push(n.trim_start_matches('/').to_string());
            continue;
        }
        for d in DIRS {
            let p = format!("{d}/{n}");
            if ex.read_file(p.as_bytes())?.is_some() {
                out.push(p);
                break;
            }
        }
    }
    Ok(out)
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Split a tmpfiles line into at most 7 fields (the argument keeps its spaces).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() && out.len() < 6 {
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            out.push(r[..end].to_string());
            rest = r.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    if !rest.is_empty() {
        out.push(unescape(rest.trim_matches('"')));
    }
    out
}

/// Run the `--create` pass. Returns what could not be reproduced.
pub fn create(
    ex: &mut Extractor,
    acc: &Accounts,
    names: &[String],
    mtime: i64,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    // The first line for a path wins; later ones of the same kind are ignored, as
    // systemd-tmpfiles does with duplicates.
    let mut seen: std::collections::HashSet<(String, char)> = Default::default();
    for file in config_files(ex, names)? {
        let text = String::from_utf8_lossy(&ex.read_file(file.as_bytes())?.unwrap_or_default())
            .into_owned();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let f = fields(l);
            if f.len() < 2 {
                continue;
            }
            // Creating types conflict with each other; adjusting ones only with their own.
            let ty = f[0].chars().next().unwrap_or(' ');
            let kind = if "zZaAhHxXrR".contains(ty) { ty } else { '+' };
            if !seen.insert((f[1].clone(), kind)) {
                continue;
            }
            if let Some(n) = apply(ex, acc, &f, mtime)? {
                notes.push(format!(
                    "{} ({})",
                    n,
                    file.rsplit('/').next().unwrap_or(&file)
                ));
            }
        }
    }
    Ok(notes)
}

fn apply(ex: &mut Extractor, acc: &Accounts, f: &[String], mtime: i64) -> Result<Option<String>> {
    let ty = f[0].as_str();
    let base = ty.chars().next().unwrap_or(' ');
    let mods: String = ty.chars().skip(1).collect();
    if mods.contains('!') || mods.contains('^') {
        return Ok(None);
    }
    let path = f[1].replace("%%", "\u{0}");
    if path.contains('%') {
        // %m, %b…: a per-machine or per-boot name, not known while building.
        return Ok(None);
    }
    let path = path.replace('\u{0}', "%");
    let rel = path.trim_start_matches('/').to_string();
    let get = |i: usize| f.get(i).map(String::as_str).filter(|v| *v != "-");
    let (mode, mode_new_only) = match get(2) {
        Some(m) => {
            let only_new = m.starts_with(':');
            let m = m.trim_start_matches([':', '~']);
            (u32::from_str_radix(m, 8).ok(), only_new)
        }
        None => (None, false),
    };
    let resolve = |v: Option<&str>, user: bool| -> Option<u32> {
        let v = v?.trim_start_matches(':');
        v.parse()
            .ok()
            .or_else(|| if user { acc.uid_of(v) } else { acc.gid_of(v) })
    };
    let uid = resolve(get(3), true);
    let gid = resolve(get(4), false);
    if (get(3).is_some() && uid.is_none()) || (get(4).is_some() && gid.is_none()) {
        return Ok(None); // unknown user or group: systemd-tmpfiles skips the line
    }
    let arg = f.get(6).cloned();
    let existing = ex.lstat(rel.as_bytes())?;
    match base {
        'd' | 'D' | 'v' | 'q' | 'Q' | 'e' => match existing {
            None if base == 'e' => {}
            None => {
                ex.create_dir(
                    rel.as_bytes(),
                    Attrs {
                        mode: mode.unwrap_or(0o755),
                        uid: uid.unwrap_or(0),
                        gid: gid.unwrap_or(0),
                        mtime,
                    },
                )?;
            }
            Some(st) if st.kind == MType::Dir && !mode_new_only => {
                adjust(ex, &rel, mode, uid, gid)?;
            }
            Some(_) => {}
        },
        'L' => {
            let target = arg.unwrap_or_else(|| format!("/usr/share/factory/{rel}"));
            match existing {
                None => {
                    ex.symlink(rel.as_bytes(), target.as_bytes(), Attrs::root(0o777, mtime))?;
                }
                Some(_) if mods.contains('+') => {
                    if ex.read_link(rel.as_bytes())?.as_deref() != Some(target.as_bytes()) {
                        ex.remove_file(rel.as_bytes())?;
                        ex.remove_dir(rel.as_bytes())?;
                        ex.symlink(rel.as_bytes(), target.as_bytes(), Attrs::root(0o777, mtime))?;
                    }
                }
                Some(_) => {}
            }
        }
        'f' | 'F' | 'w' => {
            let write = match (&existing, base) {
                (None, 'w') => false,
                (None, _) => true,
                (Some(_), 'F') => true,
                (Some(_), 'f') => mods.contains('+'),
                (Some(_), _) => true,
            };
            if write {
                let a = Attrs {
                    mode: mode.unwrap_or(existing.map(|s| s.mode).unwrap_or(0o644)),
                    uid: uid.unwrap_or(existing.map(|s| s.uid).unwrap_or(0)),
                    gid: gid.unwrap_or(existing.map(|s| s.gid).unwrap_or(0)),
                    mtime,
                };
                let data = arg.unwrap_or_default();
                ex.write_file(rel.as_bytes(), &mut data.as_bytes(), a)?;
            } else if existing.is_some() {
                adjust(ex, &rel, mode, uid, gid)?;
            }
        }
        'z' | 'Z' => {
            if existing.is_some() {
                adjust(ex, &rel, mode, uid, gid)?;
                if base == 'Z' {
                    recurse(ex, &rel, mode, uid, gid)?;
                }
            }
        }
        'C' => {
            let src = arg.unwrap_or_else(|| format!("/usr/share/factory/{rel}"));
            if existing.is_none() {
                if let Some(data) = ex.read_file(src.trim_start_matches('/').as_bytes())? {
                    ex.write_file(
                        rel.as_bytes(),
                        &mut data.as_slice(),
                        Attrs::root(mode.unwrap_or(0o644), mtime),
                    )?;
                }
            }
        }
        'a' | 'A' => {
            if existing.is_some() {
                return Ok(Some(format!("ACL on {path}")));
            }
        }
        'h' | 'H' => {
            if existing.is_some() {
                return Ok(Some(format!(
                    "file attributes ({}) on {path}",
                    arg.unwrap_or_default()
                )));
            }
        }
        'x' | 'X' | 'r' | 'R' => {}
        'p' => {
            if existing.is_none() {
                ex.special(
                    rel.as_bytes(),
                    MType::Fifo,
                    (0, 0),
                    Attrs::root(mode.unwrap_or(0o644), mtime),
                )?;
            }
        }
        other => return Ok(Some(format!("tmpfiles type {other} for {path}"))),
    }
    Ok(None)
}

fn adjust(
    ex: &mut Extractor,
    rel: &str,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<()> {
    let Some(st) = ex.lstat(rel.as_bytes())? else {
        return Ok(());
    };
    if st.kind == MType::Link {
        return Ok(());
    }
    let owner =
        (uid.is_some() || gid.is_some()).then(|| (uid.unwrap_or(st.uid), gid.unwrap_or(st.gid)));
    if mode.is_some() || owner.is_some() {
        ex.set_attrs(rel.as_bytes(), mode, owner)?;
    }
    Ok(())
}

fn recurse(
    ex: &mut Extractor,
    rel: &str,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<()> {
    for n in ex.read_dir(rel.as_bytes())?.unwrap_or_default() {
        let child = format!("{rel}/{}", String::from_utf8_lossy(&n));
        adjust(ex, &child, mode, uid, gid)?;
        if ex
            .lstat(child.as_bytes())?
            .is_some_and(|s| s.kind == MType::Dir)
        {
            recurse(ex, &child, mode, uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_the_argument() {
        assert_eq!(
            fields("f+! /run/nologin 0644 - - - \"System is booting up.\""),
            [
                "f+!",
                "/run/nologin",
                "0644",
                "-",
                "-",
                "-",
                "System is booting up."
            ]
        );
        assert_eq!(
            fields("L+ /etc/mtab   -    -    -    -  ../proc/self/mounts")[6],
            "../proc/self/mounts"
        );
    }
}
