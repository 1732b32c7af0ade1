//! ext4 straight into the partition: `mkfs.ext4 -d` at the partition's byte offset with
//! an explicit block count, then one `debugfs -w` script that makes every inode say what
//! the tree (disk + metadata) says — owners, modes, times — and creates the device
//! nodes and FIFOs an unprivileged build could not put on disk. No mount, no root.
//!
//! No host configuration leaks in: mke2fs reads a config osbuilder writes (explicit
//! features), the UUID and directory hash seed come from the seed, and every timestamp
//! from SOURCE_DATE_EPOCH (E2FSPROGS_FAKE_TIME for the filesystem's own times).

use std::path::Path;

use anyhow::{Result, bail};

use super::run_tool;
use crate::image::size::{Ext4Need, INODE_SIZE, MIB};
use crate::tree::{Kind, Tree};

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

pub struct Ext4 {
    pub block_size: u64,
    /// Inodes to create (the tree's plus room for files added later).
    pub inodes: u64,
    pub need: Ext4Need,
    pub uuid: String,
    pub hash_seed: String,
    /// SOURCE_DATE_EPOCH, or now.
    pub now: i64,
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
                tree.root.display(),
                self.need.blocks,
                self.need.inodes
            ))
        })?;
        let (script, warnings) = self.fixup_script(tree)?;
        let script_path = work.join("fixup.debugfs");
        std::fs::write(&script_path, script)?;
        let mut dbg = super::tool("debugfs");
        let mut device = image.as_os_str().to_owned();
        device.push(format!("?offset={offset}"));
        dbg.env("E2FSPROGS_FAKE_TIME", self.now.to_string())
            .env("LC_ALL", "C")
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(device);
        let out = dbg
            .output()
            .map_err(|e| anyhow::anyhow!("running debugfs: {e}"))?;
        // debugfs exits 0 even when commands fail; anything on stderr but its banner is
        // a failed command.
        let errors: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        if !out.status.success() || !errors.is_empty() {
            bail!(
                "debugfs could not apply the rootfs metadata to the ext4 filesystem:\n{}",
                errors.join("\n")
            );
        }
        Ok(warnings)
    }

    /// One debugfs command list: replace placeholders and create metadata-only nodes,
    /// then set owner, mode and times of every inode. Bytes, since names need not be
    /// UTF-8.
    fn fixup_script(&self, tree: &Tree) -> Result<(Vec<u8>, Vec<String>)> {
        use std::io::Write;
        use std::os::unix::fs::FileTypeExt;
        let mut s: Vec<u8> = Vec::new();
        let mut warnings = Vec::new();
        for e in &tree.entries {
            let p = quote(&e.path)?;
            let disk = std::fs::symlink_metadata(tree.root.join(crate::tree::os_path(&e.path)));
            let special = match &e.kind {
                Kind::CharDev { major, minor } => Some(format!("c {major} {minor}")),
                Kind::BlockDev { major, minor } => Some(format!("b {major} {minor}")),
                Kind::Fifo => Some("p".to_string()),
                Kind::Socket if disk.is_err() => {
                    warnings.push(format!(
                        "{}: sockets are made by programs at run time; not put in the image",
                        e.path_display()
                    ));
                    continue;
                }
                _ => None,
            };
            if let Some(spec) = special {
                // mkfs.ext4 -d copied whatever stands on disk: nothing, a placeholder
                // file, or (as root) the real node.
                let real = disk.as_ref().is_ok_and(|m| {
                    let t = m.file_type();
                    t.is_char_device() || t.is_block_device() || t.is_fifo()
                });
                if !real {
                    if disk.is_ok() {
                        s.extend(b"rm ");
                        s.extend(&p);
                        s.push(b'\n');
                    }
                    // debugfs's mknod links its argument into the current directory
                    // as one name, so go there first.
                    let (dir, name) = match e.path.iter().rposition(|c| *c == b'/') {
                        Some(i) => (&e.path[..i], &e.path[i + 1..]),
                        None => (&b""[..], &e.path[..]),
                    };
                    s.extend(b"cd ");
                    s.extend(quote(dir)?);
                    s.extend(b"\nmknod \"");
                    s.extend(name);
                    writeln!(s, "\" {spec}\ncd /")?;
                }
            }
            let t = e.mtime;
            for (field, value) in [
                ("uid", e.uid.to_string()),
                ("gid", e.gid.to_string()),
                ("mode", format!("0{:o}", e.mode())),
                ("mtime", format!("@{t}")),
                ("atime", format!("@{t}")),
                ("ctime", format!("@{t}")),
            ] {
                s.extend(b"sif ");
                s.extend(&p);
                writeln!(s, " {field} {value}")?;
            }
        }
        Ok((s, warnings))
    }
}

/// A tree path as a debugfs argument: absolute, double-quoted.
fn quote(path: &[u8]) -> Result<Vec<u8>> {
    if path
        .iter()
        .any(|c| matches!(c, b'"' | b'\n' | b'\r' | b'\\'))
    {
        bail!(
            "the path /{} cannot be passed to debugfs (it contains a quote, backslash or newline); \
             rename it, or use --fs erofs",
            String::from_utf8_lossy(path)
        );
    }
    // debugfs reads the script as bytes; non-UTF-8 names pass through unchanged.
    let mut q = b"\"/".to_vec();
    q.extend(path);
    q.push(b'"');
    Ok(q)
}
