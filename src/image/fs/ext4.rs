//! ext4 straight into the partition: `mkfs.ext4 -d` at the partition's byte offset with
//! an explicit block count; a `debugfs -w` script creates what an unprivileged build
//! could not put on disk (device nodes, FIFOs, entries only in the metadata); then every
//! inode is given the tree's owner, mode and times in place (ext4_inodes.rs), with a
//! debugfs `sif` script as the fallback. File capabilities become the
//! `security.capability` attribute with debugfs `ea_set` (mkfs.ext4 -d copies the
//! attribute itself when the rootfs holds it on disk; setting it again is the same value).
//! No mount, no root.
//!
//! No host configuration leaks in: mke2fs reads a config osbuilder writes (explicit
//! features), the UUID and directory hash seed come from the seed, and every timestamp
//! from SOURCE_DATE_EPOCH (E2FSPROGS_FAKE_TIME for the filesystem's own times).

use std::path::Path;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;

use anyhow::{Result, bail};

use super::run_tool;
use crate::image::size::{Ext4Need, INODE_SIZE, MIB};
use crate::tree::{Entry, Kind, Tree, os_path};

/// Features, written out so neither /etc/mke2fs.conf nor e2fsprogs' compiled-in
/// defaults decide them. Like mke2fs 1.47's ext4 defaults, minus orphan_file and
/// metadata_csum_seed (kernels before 5.15 refuse orphan_file) and resize_inode
/// (a guest root is never grown online; its reserved blocks would be dead weight).
pub const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 0
\tlazy_itable_init = 0
\tno_discard = 1

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tfloppy = {
\t\tinode_ratio = 16384
\t}
\tsmall = {
\t\tinode_ratio = 16384
\t}
\tdefault = {
\t\tinode_ratio = 16384
\t}
\tbig = {
\t\tinode_ratio = 16384
\t}
\thuge = {
\t\tinode_ratio = 16384
\t}
";

/// What mkfs.ext4 -d made, by tree path: (inode number, mode, uid, gid).
type Made = HashMap<Vec<u8>, (u64, u32, u32, u32)>;

pub struct Ext4 {
    pub block_size: u64,
    /// Inodes to create (the tree's plus room for files added later).
    pub inodes: u64,
    pub need: Ext4Need,
    pub uuid: String,
    pub hash_seed: String,
    /// SOURCE_DATE_EPOCH, or now.
    pub now: i64,
    /// Set attributes with debugfs commands only (the fallback; tests exercise it).
    pub debugfs_only: bool,
}

impl Ext4 {
    pub fn make(
        &self,
        tree: &Tree,
        image: &Path,
        offset: u64,
        bytes: u64,
        work: &Path,
    ) -> Result<Vec<String>> {
        let conf = work.join("mke2fs.conf");
        std::fs::write(&conf, MKE2FS_CONF)?;
        let blocks = bytes / self.block_size;
        let root = tree.get(b"").expect("a tree has a root");
        let journal_mb = (self.need.journal_blocks * self.block_size).div_ceil(MIB);
        let mut cmd = super::tool("mkfs.ext4");
        cmd.env("MKE2FS_CONFIG", &conf)
            .env("E2FSPROGS_FAKE_TIME", self.now.to_string())
            .env("LC_ALL", "C")
            .env_remove("MKE2FS_SYNC")
            .env_remove("MKE2FS_DEVICE_SECTSIZE")
            .env_remove("MKE2FS_FIRST_META_BG")
            .args(["-q", "-F", "-t", "ext4"])
            .arg("-b")
            .arg(self.block_size.to_string())
            .arg("-I")
            .arg(INODE_SIZE.to_string())
            .arg("-N")
            .arg(self.inodes.to_string())
            .args(["-m", "0"])
            .arg("-J")
            .arg(format!("size={journal_mb}"))
            .arg("-U")
            .arg(&self.uuid)
            .arg("-E")
            .arg(format!(
                "offset={offset},hash_seed={},root_owner={}:{}",
                self.hash_seed, root.uid, root.gid
            ))
            .arg("-d")
            .arg(&tree.root)
            .arg(image)
            .arg(blocks.to_string());
        run_tool(&mut cmd, "mkfs.ext4").map_err(|e| {
            e.context(format!(
                "mkfs.ext4 could not fill {} MiB with {} (computed need: {} blocks, {} inodes)",
                bytes / MIB,
                crate::show::path(&tree.root),
                self.need.blocks,
                self.need.inodes
            ))
        })?;
        let mut device = image.as_os_str().to_owned();
        device.push(format!("?offset={offset}"));
        // 1. debugfs creates what exists only in the metadata (usually a few nodes).
        let (mut create, mut warnings) = create_script(tree)?;
        create.extend(capability_script(tree, work)?);
        if !create.is_empty() {
            debugfs(&device, &create, work, true, self.now)?;
        }
        // 2. Owners, modes and times, written into the inodes directly; debugfs, one
        //    command per field, if the filesystem holds anything unexpected.
        let in_place = if self.debugfs_only {
            Err(anyhow::anyhow!("debugfs requested"))
        } else {
            set_in_place(tree, image, offset)
        };
        if let Err(e) = in_place {
            if !self.debugfs_only {
                warnings.push(format!(
                    "setting inodes in place failed ({e:#}); used debugfs"
                ));
            }
            let inodes = self.list_inodes(tree, &device, work)?;
            let (script, _) = self.fixup_script(tree, &inodes)?;
            debugfs(&device, &script, work, true, self.now)?;
        }
        Ok(warnings)
    }

    /// What mkfs.ext4 -d made: (inode, mode, uid, gid) by tree path, from one read-only
    /// debugfs pass listing every directory. The fix-up can then address inodes by
    /// number (no path lookups) and skip fields that are already right.
    fn list_inodes(&self, tree: &Tree, device: &std::ffi::OsStr, work: &Path) -> Result<Made> {
        let mut script = Vec::new();
        // Directories that exist only in the metadata are not there yet.
        let on_disk = |e: &&crate::tree::Entry| {
            std::fs::symlink_metadata(tree.root.join(crate::tree::os_path(&e.path)))
                .is_ok_and(|m| m.is_dir())
        };
        for e in tree
            .entries
            .iter()
            .filter(|e| e.kind == Kind::Dir)
            .filter(on_disk)
        {
            script.extend(b"ls -p ");
            script.extend(quote(&e.path)?);
            script.push(b'\n');
        }
        let out = debugfs(device, &script, work, false, self.now)?;
        let mut map = HashMap::new();
        let mut dir: Option<Vec<u8>> = None;
        for line in out.split(|c| *c == b'\n') {
            if let Some(cmd) = line.strip_prefix(b"debugfs: ls -p \"/") {
                dir = Some(cmd.strip_suffix(b"\"").unwrap_or(cmd).to_vec());
                continue;
            }
            // /ino/mode/uid/gid/name/size/
            let f: Vec<&[u8]> = line.split(|c| *c == b'/').collect();
            let (Some(d), 8) = (&dir, f.len()) else {
                continue;
            };
            let name = f[5];
            if name == b"." || name == b".." {
                continue;
            }
            let num = |b: &[u8], radix| {
                std::str::from_utf8(b)
                    .ok()
                    .and_then(|t| u64::from_str_radix(t, radix).ok())
            };
            let (Some(ino), Some(mode), Some(uid), Some(gid)) =
                (num(f[1], 10), num(f[2], 8), num(f[3], 10), num(f[4], 10))
            else {
                continue;
            };
            let mut path = d.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend(name);
            map.insert(path, (ino, mode as u32, uid as u32, gid as u32));
        }
        // the root directory
        map.insert(Vec::new(), (2, u32::MAX, u32::MAX, u32::MAX));
        Ok(map)
    }

    /// One debugfs command list: replace placeholders and create metadata-only nodes,
    /// then set owner, mode and times of every inode. Bytes, since names need not be
    /// UTF-8.
    fn fixup_script(&self, tree: &Tree, made: &Made) -> Result<(Vec<u8>, Vec<String>)> {
        use std::io::Write;
        let mut s: Vec<u8> = Vec::new();
        let mut warnings = Vec::new();
        let mut inodes_done = std::collections::HashSet::new();
        for e in &tree.entries {
            let p = quote(&e.path)?;
            // What mkfs.ext4 -d made from the disk at this path, if anything: the type
            // bits of its mode.
            let made_type = made.get(&e.path).map(|m| m.1 & 0o170000);
            let wanted_type = e.kind.format_bits();
            let mut created = false;
            match &e.kind {
                Kind::Socket if made_type.is_none() => {
                    warnings.push(format!(
                        "{}: sockets are made by programs at run time; not put in the image",
                        e.path_display()
                    ));
                    continue;
                }
                // Only in the metadata: create it.
                Kind::Dir if made_type.is_none() && !e.path.is_empty() => {
                    s.extend(b"mkdir ");
                    s.extend(&p);
                    s.push(b'\n');
                    created = true;
                }
                Kind::Symlink { target } if made_type.is_none() => {
                    s.extend(b"symlink ");
                    s.extend(&p);
                    s.push(b' ');
                    s.extend(quote_raw(target, &e.path)?);
                    s.push(b'\n');
                    created = true;
                }
                Kind::CharDev { .. } | Kind::BlockDev { .. } | Kind::Fifo
                    if made_type != Some(wanted_type) =>
                {
                    // Absent on disk, or an unprivileged build's placeholder file.
                    mknod_commands(&mut s, e, &p, made_type.is_some())?;
                    created = true;
                }
                _ => {}
            }
            // Address the inode by number when the listing has it (and the entry was
            // not just recreated); each hard-linked inode once.
            let existing = made.get(&e.path).filter(|_| !created);
            let (target, current) = match existing {
                Some(&(ino, mode, uid, gid)) => {
                    if !inodes_done.insert(ino) {
                        continue;
                    }
                    (format!("<{ino}>").into_bytes(), Some((mode, uid, gid)))
                }
                None => (p.clone(), None),
            };
            let t = e.mtime;
            let mut fields = Vec::new();
            if current.is_none_or(|(_, uid, _)| uid != e.uid) {
                fields.push(("uid", e.uid.to_string()));
            }
            if current.is_none_or(|(_, _, gid)| gid != e.gid) {
                fields.push(("gid", e.gid.to_string()));
            }
            if current.is_none_or(|(mode, _, _)| mode != e.mode()) {
                fields.push(("mode", format!("0{:o}", e.mode())));
            }
            for f in ["mtime", "atime", "ctime"] {
                fields.push((f, format!("@{t}")));
            }
            for (field, value) in fields {
                s.extend(b"sif ");
                s.extend(&target);
                writeln!(s, " {field} {value}")?;
            }
        }
        Ok((s, warnings))
    }
}

/// debugfs commands creating the entries mkfs.ext4 -d could not copy from the disk:
/// directories, symlinks, device nodes and FIFOs that exist only in the metadata, and
/// device nodes standing on disk as placeholder files.
fn create_script(tree: &Tree) -> Result<(Vec<u8>, Vec<String>)> {
    let mut s = Vec::new();
    let mut warnings = Vec::new();
    for e in tree.entries.iter().filter(|e| !e.path.is_empty()) {
        let disk = std::fs::symlink_metadata(tree.root.join(os_path(&e.path)));
        let disk_type = disk.as_ref().ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.mode() & 0o170000
        });
        if disk_type == Some(e.kind.format_bits()) {
            continue;
        }
        let p = quote(&e.path)?;
        match &e.kind {
            Kind::Dir if disk_type.is_none() => {
                s.extend(b"mkdir ");
                s.extend(&p);
                s.push(b'\n');
            }
            Kind::Symlink { target } if disk_type.is_none() => {
                s.extend(b"symlink ");
                s.extend(&p);
                s.push(b' ');
                s.extend(quote_raw(target, &e.path)?);
                s.push(b'\n');
            }
            Kind::CharDev { .. } | Kind::BlockDev { .. } | Kind::Fifo => {
                mknod_commands(&mut s, e, &p, disk_type.is_some())?;
            }
            Kind::Socket if disk_type.is_none() => warnings.push(format!(
                "{}: sockets are made by programs at run time; not put in the image",
                e.path_display()
            )),
            _ => bail!(
                "{} is a {:o} on disk but the tree says {:o}",
                e.path_display(),
                disk_type.unwrap_or(0),
                e.kind.format_bits()
            ),
        }
    }
    Ok((s, warnings))
}

/// debugfs commands giving every file with capabilities its `security.capability`
/// attribute, the raw value read from a file in `work` (`ea_set -f`: binary-safe).
/// Before the inodes are set in place: that rewrite checksums the whole inode, in-inode
/// attributes included.
fn capability_script(tree: &Tree, work: &Path) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut s = Vec::new();
    let mut done = HashSet::new();
    for (n, e) in tree.entries.iter().enumerate() {
        let Some(value) = &e.capability else { continue };
        // one attribute per inode: hard links share it
        if e.link_group.is_some_and(|g| !done.insert(g)) {
            continue;
        }
        let file = work.join(format!("capability-{n}"));
        std::fs::write(&file, value)?;
        s.extend(b"ea_set -f ");
        s.extend(quote_raw(file.as_os_str().as_bytes(), &e.path)?);
        s.push(b' ');
        s.extend(quote(&e.path)?);
        s.push(b' ');
        s.extend(crate::tree::caps::XATTR.as_bytes());
        s.push(b'\n');
    }
    Ok(s)
}

/// Give every inode the tree's owner, mode and time by editing the inodes in place
/// (ext4_inodes.rs), finding them through the directories, parents first.
fn set_in_place(tree: &Tree, image: &Path, offset: u64) -> Result<()> {
    use super::ext4_inodes::{Attrs, Fs};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)?;
    let fs = Fs::open(&f, offset)?;
    let mut dirs: HashMap<&[u8], HashMap<Vec<u8>, u64>> = HashMap::new();
    let mut done = HashSet::new();
    for e in &tree.entries {
        let ino = if e.path.is_empty() {
            2
        } else {
            let (parent, name) = match e.path.iter().rposition(|c| *c == b'/') {
                Some(i) => (&e.path[..i], &e.path[i + 1..]),
                None => (&b""[..], &e.path[..]),
            };
            match dirs.get(parent).and_then(|d| d.get(name)) {
                Some(i) => *i,
                None if e.kind == Kind::Socket => continue,
                None => bail!("{} is missing from the filesystem", e.path_display()),
            }
        };
        if e.kind == Kind::Dir {
            dirs.insert(&e.path, fs.list_dir(ino)?);
        }
        if done.insert(ino) {
            fs.set(
                ino,
                &Attrs {
                    mode: e.mode(),
                    uid: e.uid,
                    gid: e.gid,
                    time: e.mtime,
                },
            )?;
        }
    }
    fs.flush()
}

/// A symlink target as a debugfs argument (double-quoted, as is).
fn quote_raw(target: &[u8], path: &[u8]) -> Result<Vec<u8>> {
    if target
        .iter()
        .any(|c| matches!(c, b'"' | b'\n' | b'\r' | b'\\'))
        || target.is_empty()
    {
        bail!(
            "the symlink {} has a target debugfs cannot take (empty, or with a quote, backslash \
             or newline: {}); use --fs erofs",
            crate::show::in_root(path),
            crate::show::bytes(target)
        );
    }
    let mut q = b"\"".to_vec();
    q.extend(target);
    q.push(b'"');
    Ok(q)
}

/// A tree path as a debugfs argument: absolute, double-quoted.
fn quote(path: &[u8]) -> Result<Vec<u8>> {
    if path
        .iter()
        .any(|c| matches!(c, b'"' | b'\n' | b'\r' | b'\\'))
    {
        bail!(
            "the path {} cannot be passed to debugfs (it contains a quote, backslash or newline); \
             rename it, or use --fs erofs",
            crate::show::in_root(path)
        );
    }
    // debugfs reads the script as bytes; non-UTF-8 names pass through unchanged.
    let mut q = b"\"/".to_vec();
    q.extend(path);
    q.push(b'"');
    Ok(q)
}

/// Run a debugfs command file against `device`; return its stdout. debugfs exits 0 even
/// when commands fail, so anything on stderr but its banner is an error.
fn debugfs(device: &OsStr, script: &[u8], work: &Path, write: bool, now: i64) -> Result<Vec<u8>> {
    let path = work.join(if write {
        "fixup.debugfs"
    } else {
        "list.debugfs"
    });
    std::fs::write(&path, script)?;
    let mut cmd = super::tool("debugfs");
    cmd.env("E2FSPROGS_FAKE_TIME", now.to_string())
        .env("LC_ALL", "C");
    if write {
        cmd.arg("-w");
    }
    cmd.arg("-f").arg(&path).arg(device);
    let out =
        crate::process::output(&mut cmd).map_err(|e| anyhow::anyhow!("running debugfs: {e}"))?;
    let errors: Vec<&[u8]> = out
        .stderr
        .split(|c| *c == b'\n')
        .filter(|l| !l.starts_with(b"debugfs ") && !l.trim_ascii().is_empty())
        .collect();
    if !out.status.success() || !errors.is_empty() {
        bail!(
            "debugfs could not {} the ext4 filesystem: {}",
            if write {
                "apply the rootfs metadata to"
            } else {
                "list"
            },
            crate::show::tool_output(&errors.join(&b'\n'), 8)
        );
    }
    Ok(out.stdout)
}

/// debugfs commands that create the device node or FIFO `e` (quoted path `p`), removing
/// what stands there first when `replace` (an unprivileged build's placeholder file).
fn mknod_commands(s: &mut Vec<u8>, e: &Entry, p: &[u8], replace: bool) -> Result<()> {
    use std::io::Write;
    if replace {
        s.extend(b"rm ");
        s.extend(p);
        s.push(b'\n');
    }
    let spec = match &e.kind {
        Kind::CharDev { major, minor } => format!("c {major} {minor}"),
        Kind::BlockDev { major, minor } => format!("b {major} {minor}"),
        _ => "p".to_string(),
    };
    // debugfs's mknod links its argument into the current directory as one name, so go
    // there first.
    let (dir, name) = match e.path.iter().rposition(|c| *c == b'/') {
        Some(i) => (&e.path[..i], &e.path[i + 1..]),
        None => (&b""[..], &e.path[..]),
    };
    s.extend(b"cd ");
    s.extend(quote(dir)?);
    s.extend(b"\nmknod \"");
    s.extend(name);
    writeln!(s, "\" {spec}\ncd /")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::fs::find_tool;
    use crate::image::size;
    use crate::tree::{Mtree, ScanOptions};

    /// Both ways of applying the metadata (in place, and the debugfs fallback) give a
    /// clean filesystem with the tree's attributes.
    #[test]
    fn in_place_and_debugfs_fallback_agree() {
        for t in ["mkfs.ext4", "debugfs", "e2fsck"] {
            assert!(find_tool(t).is_some(), "{t} is needed (e2fsprogs)");
        }
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("root");
        std::fs::create_dir_all(r.join("dev")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/f"), b"x").unwrap();
        std::fs::write(r.join("dev/null"), b"").unwrap();
        let m = Mtree::parse(
            b". uid=0 gid=0 mode=0755\n./etc/f uid=70000 gid=3 mode=4751 time=1234 \
              xattr.security.capability=AQAAAgAgAAAAAAAAAAAAAAAAAAA=\n\
              ./dev/null type=char device=1,3 mode=0666\n./run type=dir mode=0700\n",
        )
        .unwrap();
        let opts = ScanOptions {
            metadata: Some(m),
            all_root: false,
            clamp_mtime: Some(5000),
        };
        let tree = Tree::scan(&r, &opts).unwrap();
        let need = size::ext4_need(&tree, 4096);
        let blocks = size::ext4_min_blocks(&need, need.inodes, 4096);
        let geometry = size::ext4_geometry(blocks, need.inodes, 4096).unwrap();
        for debugfs_only in [false, true] {
            let img = d.path().join(format!("{debugfs_only}.img"));
            let f = std::fs::File::create(&img).unwrap();
            f.set_len(blocks * 4096 + 4096).unwrap();
            let e = Ext4 {
                block_size: 4096,
                inodes: geometry.inodes,
                need,
                uuid: "2f1a3e1c-4b1d-4c55-8e1f-0123456789ab".into(),
                hash_seed: "3f1a3e1c-4b1d-4c55-8e1f-0123456789ab".into(),
                now: 5000,
                debugfs_only,
            };
            let w = e.make(&tree, &img, 4096, blocks * 4096, d.path()).unwrap();
            assert!(w.is_empty(), "{w:?}");
            let mut dev = img.as_os_str().to_owned();
            dev.push("?offset=4096");
            let fsck = std::process::Command::new(find_tool("e2fsck").unwrap())
                .arg("-fn")
                .arg(&dev)
                .output()
                .unwrap();
            assert!(
                fsck.status.success(),
                "{}",
                String::from_utf8_lossy(&fsck.stdout)
            );
            let stat = |p: &str| {
                let o = std::process::Command::new(find_tool("debugfs").unwrap())
                    .arg("-R")
                    .arg(format!("stat {p}"))
                    .arg(&dev)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&o.stdout).into_owned()
            };
            let f = stat("/etc/f");
            assert!(f.contains("Mode:  04751"), "{debugfs_only}: {f}");
            assert!(
                f.contains("User: 70000   Group:     3"),
                "{debugfs_only}: {f}"
            );
            assert!(
                f.contains("mtime: 0x000004d2:00000000"),
                "{debugfs_only}: {f}"
            );
            assert!(
                f.contains("ctime: 0x000004d2:00000000"),
                "{debugfs_only}: {f}"
            );
            // cap_net_raw=ep, as setcap writes it, whichever way the inodes were set
            let ea = std::process::Command::new(find_tool("debugfs").unwrap())
                .arg("-R")
                .arg("ea_list /etc/f")
                .arg(&dev)
                .output()
                .unwrap();
            let ea = String::from_utf8_lossy(&ea.stdout);
            assert!(
                ea.contains(
                    "security.capability (20) = 01 00 00 02 00 20 00 00 00 00 00 00 00 00 00 00 \
                     00 00 00 00"
                ),
                "{debugfs_only}: {ea}"
            );
            let n = stat("/dev/null");
            assert!(n.contains("Device major/minor number: 01:03"), "{n}");
            assert!(stat("/run").contains("Mode:  0700"));
        }
    }
}
