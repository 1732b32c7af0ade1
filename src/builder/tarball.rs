//! A rootfs [`Tree`] as the tar stream `podman import` / `docker import` read: ownership
//! from the tree (disk merged with the .mtree, so a rootless bootstrap still gives files
//! owned by uid 0), ids below 65536 (what a rootless engine can map), and no device nodes,
//! FIFOs or sockets (the engine provides /dev; a rootless one could not create them).

use std::io::Write;

use anyhow::{Context, Result, bail};

use crate::tree::{Kind, Tree};

/// Counts of what went into the archive.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub entries: usize,
    pub skipped_special: usize,
}

/// Write `tree` to `out` as a ustar/GNU archive, parents first.
pub fn write_tree<W: Write>(tree: &Tree, out: W) -> Result<Written> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut first_of_group: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    let mut w = Written::default();
    for e in &tree.entries {
        if e.path.is_empty() {
            continue;
        }
        if e.uid >= 65536 || e.gid >= 65536 {
            bail!(
                "{} is owned by {}:{}; a builder image may only use ids below 65536 (what a \
                 rootless engine maps)",
                e.path_display(),
                e.uid,
                e.gid
            );
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.perm);
        h.set_uid(e.uid as u64);
        h.set_gid(e.gid as u64);
        h.set_mtime(e.mtime.max(0) as u64);
        let path = std::path::Path::new(crate::tree::os_path(&e.path));
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty())
            }
            Kind::File { source, size } => {
                if let Some(first) = e.link_group.and_then(|g| first_of_group.get(&g)) {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(
                        &mut h,
                        path,
                        std::path::Path::new(crate::tree::os_path(first)),
                    )
                } else {
                    if let Some(g) = e.link_group {
                        first_of_group.insert(g, e.path.clone());
                    }
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(*size);
                    let f = std::fs::File::open(source)
                        .with_context(|| format!("reading {}", source.display()))?;
                    b.append_data(&mut h, path, f)
                }
            }
            Kind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(
                    &mut h,
                    path,
                    std::path::Path::new(crate::tree::os_path(target)),
                )
            }
            Kind::CharDev { .. } | Kind::BlockDev { .. } | Kind::Fifo | Kind::Socket => {
                w.skipped_special += 1;
                continue;
            }
        }
        .with_context(|| format!("archiving {}", e.path_display()))?;
        w.entries += 1;
    }
    b.into_inner()?.flush()?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{MEntry, MType, Mtree, ScanOptions};

    #[test]
    fn owners_come_from_the_metadata_and_devices_are_left_out() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::create_dir_all(r.join("dev")).unwrap();
        std::fs::write(r.join("usr/bin/a"), b"hello").unwrap();
        std::fs::hard_link(r.join("usr/bin/a"), r.join("usr/bin/b")).unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        let mut m = Mtree::new();
        m.set(
            b"usr/bin/a",
            MEntry {
                kind: Some(MType::File),
                uid: Some(0),
                gid: Some(42),
                mode: Some(0o640),
                ..Default::default()
            },
        );
        m.set(
            b"dev/null",
            MEntry {
                kind: Some(MType::Char),
                device: Some((1, 3)),
                mode: Some(0o666),
                uid: Some(0),
                gid: Some(0),
                ..Default::default()
            },
        );
        let tree = crate::tree::Tree::scan(
            r,
            &ScanOptions {
                metadata: Some(m),
                all_root: true,
                clamp_mtime: None,
            },
        )
        .unwrap();
        let mut out = Vec::new();
        let w = write_tree(&tree, &mut out).unwrap();
        assert_eq!(w.skipped_special, 1);
        let mut ar = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for en in ar.entries().unwrap() {
            let en = en.unwrap();
            let h = en.header();
            seen.push((
                en.path().unwrap().display().to_string(),
                h.entry_type(),
                h.uid().unwrap(),
                h.gid().unwrap(),
            ));
        }
        assert!(seen.iter().all(|s| s.0 != "dev/null"), "{seen:?}");
        let a = seen.iter().find(|s| s.0 == "usr/bin/a").unwrap();
        assert_eq!((a.1, a.2, a.3), (tar::EntryType::Regular, 0, 42));
        let b = seen.iter().find(|s| s.0 == "usr/bin/b").unwrap();
        assert_eq!(b.1, tar::EntryType::Link);
        assert!(
            seen.iter()
                .any(|s| s.0 == "bin" && s.1 == tar::EntryType::Symlink)
        );
    }
}
