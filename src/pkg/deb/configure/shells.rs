//! update-shells (debianutils): /etc/shells from the template and the shells.d fragments
//! packages ship, each shell also under its canonical directory (/bin/sh and
//! /usr/bin/sh on merged-/usr), with /var/lib/shells.state recording what came from
//! packages so that a local removal sticks.

use anyhow::Result;

use crate::pkg::extract::{Attrs, Extractor};

const TEMPLATE: &str = "usr/share/debianutils/shells";
const PKG_DIR: &str = "usr/share/debianutils/shells.d";

fn shell_of(line: &str) -> &str {
    line.split('#').next().unwrap_or("")
}

/// The canonical form of a shell's path: its directory resolved in the rootfs.
fn real_shell(ex: &mut Extractor, shell: &str) -> Result<String> {
    let (dir, base) = shell.rsplit_once('/').unwrap_or(("", shell));
    let dir = if dir.is_empty() { "/" } else { dir };
    let real = match ex.resolve(dir.trim_start_matches('/').as_bytes())? {
        Some(r) => format!("/{}", String::from_utf8_lossy(&r)),
        None => dir.to_string(),
    };
    Ok(format!("{}/{base}", real.trim_end_matches('/')))
}

pub fn update_shells(ex: &mut Extractor, mtime: i64) -> Result<()> {
    let mut pkg_shells: Vec<String> = Vec::new();
    let mut files = vec![TEMPLATE.to_string()];
    for n in ex.read_dir(PKG_DIR.as_bytes())?.unwrap_or_default() {
        files.push(format!("{PKG_DIR}/{}", String::from_utf8_lossy(&n)));
    }
    for f in files {
        let Some(text) = ex.read_file(f.as_bytes())? else {
            continue;
        };
        for line in String::from_utf8_lossy(&text).lines() {
            let s = shell_of(line);
            if s.is_empty() {
                continue;
            }
            if !pkg_shells.iter().any(|x| x == s) {
                pkg_shells.push(s.to_string());
            }
            let real = real_shell(ex, s)?;
            if !pkg_shells.contains(&real) {
                pkg_shells.push(real);
            }
        }
    }
    let state_shells: Vec<String> = ex
        .read_file(b"var/lib/shells.state")?
        .map(|d| {
            String::from_utf8_lossy(&d)
                .lines()
                .map(|l| shell_of(l).to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let source = match ex.read_file(b"etc/shells")? {
        Some(d) => d,
        None => ex.read_file(TEMPLATE.as_bytes())?.unwrap_or_default(),
    };
    let mut out = String::new();
    let mut etc: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&source).lines() {
        let s = shell_of(line).to_string();
        if (s.is_empty() || pkg_shells.contains(&s) || !state_shells.contains(&s))
            && (s.is_empty() || !etc.contains(&s))
        {
            out.push_str(line);
            out.push('\n');
            etc.push(s);
        }
    }
    let mut state = String::new();
    for s in &pkg_shells {
        state.push_str(s);
        state.push('\n');
        if !etc.contains(s) && !state_shells.contains(s) {
            out.push_str(s);
            out.push('\n');
        }
    }
    let a = Attrs::root(0o644, mtime);
    ex.write_file(b"etc/shells", &mut out.as_bytes(), a)?;
    ex.write_file(b"var/lib/shells.state", &mut state.as_bytes(), a)?;
    Ok(())
}
