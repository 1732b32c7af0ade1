//! xfs with mkfs.xfs's protofile (`-p`), which carries owner, mode, device numbers and
//! symlink targets natively, so no privileges are needed. What a protofile cannot say —
//! the sticky bit, timestamps, inode generation numbers — is set afterwards with
//! `xfs_db -x`, so the result is reproducible. mkfs.xfs cannot write at an offset, so
//! the filesystem is made in a scratch file and copied into the partition.
//!
//! Limits of the protofile format: names may not contain whitespace, hard links
//! become separate copies, and extended attributes — file capabilities — are not carried
//! (the build warns, naming the files; ext4 and erofs keep them).

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};

use super::run_tool;
use crate::image::size::MIB;
use crate::tree::{Entry, Kind, Tree};

/// xfsprogs ≥ 5.19 refuses filesystems smaller than 300 MiB.
pub const MIN_BYTES: u64 = 300 * MIB;
const BS: u64 = 4096;
const INODE: u64 = 512;

pub struct Xfs {
    pub min_bytes: u64,
    pub uuid: String,
    pub now: i64,
}

impl Xfs {
    /// A conservative size: data blocks of every path (hard links are copies here),
    /// inode chunks, directory blocks at half fill, long symlinks, the log mkfs.xfs
    /// picks for a small filesystem (64 MiB), AG headers and btree roots, and the
    /// kernel's reserve pool (5%, at most 8192 blocks) — never below mkfs's minimum.
    pub fn plan(tree: &Tree, free: u64, uuid: String, now: i64) -> Xfs {
        let mut blocks = 0u64;
        let mut dir_bytes: std::collections::HashMap<&[u8], u64> = Default::default();
        for e in &tree.entries {
            match &e.kind {
                Kind::File { size, .. } => blocks += size.div_ceil(BS),
                Kind::Symlink { target } if target.len() > 300 => blocks += 1,
                _ => {}
            }
            if let Some(i) = e.path.iter().rposition(|c| *c == b'/') {
                *dir_bytes.entry(&e.path[..i]).or_default() += e.path.len() as u64 - i as u64 + 24;
            } else if !e.path.is_empty() {
                *dir_bytes.entry(b"").or_default() += e.path.len() as u64 + 24;
            }
        }
        for b in dir_bytes.values() {
            blocks += (2 * b).div_ceil(BS) + 2;
        }
        let inodes = tree.entries.len() as u64 + 64;
        blocks += inodes.div_ceil(64) * 64 * INODE / BS + 4 * 16;
        let content = blocks * BS + free;
        let reserve = (content / 20).min(8192 * BS);
        let min = content + reserve + 64 * MIB + 4 * MIB + 16 * MIB;
        Xfs {
            min_bytes: min.max(MIN_BYTES),
            uuid,
            now,
        }
    }

    pub fn make(&self, tree: &Tree, img: &Path, bytes: u64, work: &Path) -> Result<Vec<String>> {
        let proto = work.join("xfs.proto");
        let (text, sticky) = protofile(tree)?;
        std::fs::write(&proto, text)?;
        std::fs::File::create(img)?.set_len(bytes)?;
        let mut cmd = super::tool("mkfs.xfs");
        cmd.env("LC_ALL", "C")
            .args(["-q", "-f", "-b", "size=4096", "-m", "reflink=0"])
            // classic 32-bit timestamps: mountable by kernels before 5.10, and settable
            // with xfs_db
            .args(["-m", "bigtime=0"])
            .arg("-m")
            .arg(format!("uuid={}", self.uuid))
            .arg("-p")
            .arg(&proto)
            .arg(img);
        run_tool(&mut cmd, "mkfs.xfs").map_err(|e| {
            e.context(format!(
                "mkfs.xfs could not fill {} MiB with {}",
                bytes / MIB,
                crate::show::path(&tree.root)
            ))
        })?;
        // Times, generations and sticky bits, by path, in one xfs_db session.
        let mut db: Vec<u8> = Vec::new();
        let mut warnings = Vec::new();
        let caps = tree.capabilities();
        if !caps.is_empty() {
            warnings.push(crate::tree::caps::lost(
                &caps,
                "xfs (its protofile carries no extended attributes)",
            ));
        }
        let mut seen = HashSet::new();
        let t = self.now.clamp(i32::MIN as i64, i32::MAX as i64) as i32 as u32;
        // mkfs.xfs stamps its own metadata inodes (realtime bitmap and summary) with
        // the wall clock.
        for ino in ["rbmino", "rsumino"] {
            writeln!(db, "sb 0\naddr {ino}")?;
            write_times(&mut db, t)?;
        }
        for e in &tree.entries {
            if matches!(e.kind, Kind::Socket) {
                warnings.push(format!(
                    "{}: sockets are not put in the image",
                    e.path_display()
                ));
                continue;
            }
            if !seen.insert(&e.path) {
                continue;
            }
            db.extend(b"path /");
            db.extend(&e.path);
            db.push(b'\n');
            write_times(
                &mut db,
                e.mtime.clamp(i32::MIN as i64, i32::MAX as i64) as i32 as u32,
            )?;
            if sticky.contains(&e.path) {
                writeln!(db, "write core.mode #{:04x}", e.mode())?;
            }
        }
        let script = work.join("xfs_db.cmds");
        std::fs::write(&script, &db)?;
        let mut cmd = super::tool("xfs_db");
        cmd.arg("-x")
            .arg("-c")
            .arg(format!("source {}", script.display()))
            .arg(img);
        let out = crate::process::output(&mut cmd)?;
        // xfs_db reports failed commands on stdout and exits 0; every successful write
        // echoes "field = value".
        let bad: Vec<&[u8]> = out
            .stdout
            .split(|c| *c == b'\n')
            .filter(|l| !l.is_empty() && !l.windows(3).any(|w| w == b" = "))
            .collect();
        if !out.status.success() || !out.stderr.trim_ascii().is_empty() || !bad.is_empty() {
            let mut all = out.stderr.clone();
            all.push(b'\n');
            all.extend(bad.join(&b'\n'));
            bail!(
                "xfs_db could not set times and modes: {}",
                crate::show::tool_output(&all, 8)
            );
        }
        Ok(warnings)
    }
}

/// xfs_db commands giving the current inode time `t` everywhere and generation 0.
/// Times go as raw big-endian "#hex" (xfs_db misreads decimal seconds), nsec before sec
/// (xfs_db writes a timestamp as a whole, so writing nsec last would clear sec again).
fn write_times(db: &mut Vec<u8>, t: u32) -> Result<()> {
    for f in ["core.atime", "core.mtime", "core.ctime", "v3.crtime"] {
        writeln!(db, "write {f}.nsec 0")?;
        writeln!(db, "write {f}.sec #{t:08x}")?;
    }
    writeln!(db, "write core.gen #00000000")?;
    Ok(())
}

fn mode_string(e: &Entry) -> String {
    let t = match e.kind {
        Kind::Dir => 'd',
        Kind::File { .. } => '-',
        Kind::Symlink { .. } => 'l',
        Kind::CharDev { .. } => 'c',
        Kind::BlockDev { .. } => 'b',
        Kind::Fifo => 'p',
        Kind::Socket => unreachable!(),
    };
    format!(
        "{t}{}{}{:03o}",
        if e.perm & 0o4000 != 0 { 'u' } else { '-' },
        if e.perm & 0o2000 != 0 { 'g' } else { '-' },
        e.perm & 0o777
    )
}

/// The protofile, and the paths whose sticky bit must be set afterwards.
fn protofile(tree: &Tree) -> Result<(Vec<u8>, HashSet<Vec<u8>>)> {
    let mut out: Vec<u8> = Vec::new();
    let mut sticky = HashSet::new();
    let root = tree.get(b"").expect("root");
    writeln!(
        out,
        "/dev/null\n0 0\n{} {} {}",
        mode_string(root),
        root.uid,
        root.gid
    )?;
    if root.perm & 0o1000 != 0 {
        sticky.insert(Vec::new());
    }
    let mut depth: Vec<&[u8]> = vec![b""];
    for e in tree.entries.iter().skip(1) {
        if matches!(e.kind, Kind::Socket) {
            continue;
        }
        let (parent, name) = match e.path.iter().rposition(|c| *c == b'/') {
            Some(i) => (&e.path[..i], &e.path[i + 1..]),
            None => (&b""[..], &e.path[..]),
        };
        // close directories until we are back in this entry's parent
        while *depth.last().unwrap() != parent {
            depth.pop();
            out.extend(b"$\n");
        }
        let bad = |b: &[u8]| b.iter().any(|c| c.is_ascii_whitespace());
        if bad(name) {
            bail!(
                "{} has whitespace in its name, which an xfs protofile cannot express; use --fs ext4",
                e.path_display()
            );
        }
        if e.perm & 0o1000 != 0 {
            sticky.insert(e.path.clone());
        }
        out.extend(name);
        write!(out, " {} {} {}", mode_string(e), e.uid, e.gid)?;
        match &e.kind {
            Kind::File { source, .. } => {
                let s = source.as_os_str().as_encoded_bytes();
                if bad(s) {
                    bail!(
                        "{} has whitespace in its path, which an xfs protofile cannot express; \
                         use --fs ext4",
                        crate::show::path(source)
                    );
                }
                out.push(b' ');
                out.extend(s);
            }
            Kind::Symlink { target } => {
                if bad(target) || target.is_empty() {
                    bail!(
                        "symlink {} has whitespace in its target; use --fs ext4",
                        e.path_display()
                    );
                }
                out.push(b' ');
                out.extend(target);
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                write!(out, " {major} {minor}")?
            }
            _ => {}
        }
        out.push(b'\n');
        if e.kind == Kind::Dir {
            depth.push(&e.path);
        }
    }
    while depth.len() > 1 {
        depth.pop();
        out.extend(b"$\n");
    }
    out.extend(b"$\n");
    Ok((out, sticky))
}
