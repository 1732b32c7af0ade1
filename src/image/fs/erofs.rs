//! erofs with mkfs.erofs. erofs-utils 1.5 (Debian 12) takes owners only from the files it
//! reads, so the tree is staged (a copy, reflinked where the filesystem can) and
//! mkfs.erofs runs under fakeroot after a script has given every staged entry the
//! tree's owner, mode and time and created the device nodes — fakeroot records those
//! without privileges and reports them to mkfs.erofs. The rootfs itself is not touched.
//! Inodes keep the tree's times (clamped by SOURCE_DATE_EPOCH), like ext4 and xfs.
//! File capabilities are given with setcap (libcap2-bin) under the same fakeroot, which
//! records the `security.capability` attribute for mkfs.erofs to read.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::run_tool;
use crate::tree::{Kind, Tree, os_path};

pub fn build(tree: &Tree, img: &Path, work: &Path, uuid: &str, now: i64) -> Result<()> {
    let stage = work.join("stage");
    stage_tree(tree, &stage)?;
    // NUL-separated lists, grouped, so a few xargs calls do all the work.
    let mut owners: BTreeMap<(u32, u32), Vec<u8>> = BTreeMap::new();
    let mut modes: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut times: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut specials = Vec::new();
    for e in &tree.entries {
        let mut p = b"./".to_vec();
        p.extend(&e.path);
        p.push(0);
        match &e.kind {
            Kind::CharDev { major, minor } => {
                specials.push((p.clone(), format!("c {major} {minor}")))
            }
            Kind::BlockDev { major, minor } => {
                specials.push((p.clone(), format!("b {major} {minor}")))
            }
            Kind::Fifo => specials.push((p.clone(), "p".into())),
            Kind::Socket => continue,
            _ => {}
        }
        owners.entry((e.uid, e.gid)).or_default().extend(&p);
        if !matches!(e.kind, Kind::Symlink { .. }) {
            modes.entry(e.perm).or_default().extend(&p);
        }
        times.entry(e.mtime).or_default().extend(&p);
    }
    let mut sh: Vec<u8> = b"set -e\ncd \"$1\"\n".to_vec();
    for (i, (p, spec)) in specials.iter().enumerate() {
        let f = work.join(format!("special{i}"));
        std::fs::write(&f, &p[..p.len() - 1])?;
        // names come from a file, so no quoting is needed
        writeln!(sh, "mknod \"$(cat '{}')\" {spec}", f.display())?;
    }
    let mut n = 0;
    let mut list = |sh: &mut Vec<u8>, data: &[u8], cmd: String| -> Result<()> {
        let f = work.join(format!("list{n}"));
        n += 1;
        std::fs::write(&f, data)?;
        writeln!(sh, "xargs -r -0 -a '{}' {cmd}", f.display())?;
        Ok(())
    };
    for ((u, g), l) in &owners {
        list(&mut sh, l, format!("chown -h {u}:{g}"))?;
    }
    for (m, l) in &modes {
        list(&mut sh, l, format!("chmod {m:o}"))?;
    }
    for (t, l) in &times {
        list(&mut sh, l, format!("touch -h -d @{t}"))?;
    }
    // File capabilities last (chown clears them): setcap's setxattr is recorded by
    // fakeroot and reported to mkfs.erofs's listxattr/getxattr like the owners.
    if tree.entries.iter().any(|e| e.capability.is_some()) {
        super::check_tools(&[("setcap", "libcap2-bin")])?;
    }
    let mut with_caps = std::collections::HashSet::new();
    for (i, e) in tree.entries.iter().enumerate() {
        let Some(c) = &e.capability else { continue };
        if e.link_group.is_some_and(|g| !with_caps.insert(g)) {
            continue;
        }
        let f = work.join(format!("capability{i}"));
        std::fs::write(&f, [b"./".as_slice(), &e.path].concat())?;
        // to_text gives libcap's own text form: letters, digits, _ , = + and spaces
        writeln!(
            sh,
            "setcap '{}' \"$(cat '{}')\"",
            crate::tree::caps::to_text(c),
            f.display()
        )?;
    }
    // The build time goes in through SOURCE_DATE_EPOCH, not -T: erofs-utils 1.5 stamps
    // every inode with a -T time (even with --preserve-mtime), while with the variable it
    // keeps each inode's time and only clamps those newer than it, as ext4 and xfs here.
    writeln!(
        sh,
        "SOURCE_DATE_EPOCH={now} mkfs.erofs --quiet -zlz4hc --preserve-mtime -U {uuid} \"$2\" ."
    )?;
    let script = work.join("erofs.sh");
    std::fs::write(&script, &sh)?;
    let mut cmd = super::tool("fakeroot");
    cmd.env("LC_ALL", "C")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .arg("--")
        .arg("sh")
        .arg(&script)
        .arg(&stage)
        .arg(img);
    run_tool(&mut cmd, "mkfs.erofs (under fakeroot)")
}

/// Recreate the tree's directories, files (copied), hard links and symlinks under `stage`.
fn stage_tree(tree: &Tree, stage: &Path) -> Result<()> {
    let mut firsts: std::collections::HashMap<u32, std::path::PathBuf> = Default::default();
    std::fs::create_dir(stage)?;
    for e in &tree.entries {
        if e.path.is_empty() {
            continue;
        }
        let dst = stage.join(os_path(&e.path));
        match &e.kind {
            Kind::Dir => std::fs::create_dir(&dst)?,
            Kind::File { source, .. } => {
                if let Some(first) = e.link_group.and_then(|g| firsts.get(&g)) {
                    std::fs::hard_link(first, &dst)?;
                } else {
                    std::fs::copy(source, &dst)
                        .with_context(|| format!("staging {} for mkfs.erofs", source.display()))?;
                    // the tree's mode is applied later; keep it readable for mkfs.erofs
                    if let Some(g) = e.link_group {
                        firsts.insert(g, dst.clone());
                    }
                }
            }
            Kind::Symlink { target } => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &dst)?
            }
            _ => {} // device nodes and FIFOs are made under fakeroot
        }
    }
    Ok(())
}
