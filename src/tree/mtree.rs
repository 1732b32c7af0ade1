//! Rootfs metadata in BSD mtree format (the format libarchive's `bsdtar @file.mtree` reads).
//!
//! An unprivileged build cannot chown files to root or create device nodes. Backends keep
//! what the disk cannot hold in an mtree file beside the rootfs; every packer merges it
//! with the tree on disk (see `tree::Tree::scan`). Only the keywords that matter for
//! packing are interpreted: type, uid, gid, uname/gname (root only), mode, device, link,
//! time, and osbuilder's own `xattr.security.capability=<base64>` (a file's capabilities,
//! the raw `security.capability` value; libarchive does not know the keyword and skips
//! it). Others (size, sha256digest, nlink, flags…) are accepted and ignored.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// File type named by an mtree `type=` keyword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MType {
    File,
    Dir,
    Link,
    Char,
    Block,
    Fifo,
    Socket,
}

impl MType {
    fn parse(s: &str) -> Option<MType> {
        Some(match s {
            "file" => MType::File,
            "dir" => MType::Dir,
            "link" => MType::Link,
            "char" => MType::Char,
            "block" => MType::Block,
            "fifo" => MType::Fifo,
            "socket" => MType::Socket,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MType::File => "file",
            MType::Dir => "dir",
            MType::Link => "link",
            MType::Char => "char",
            MType::Block => "block",
            MType::Fifo => "fifo",
            MType::Socket => "socket",
        }
    }
}

/// What the metadata says about one path. `None` fields leave the on-disk value alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MEntry {
    pub kind: Option<MType>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Permission bits including setuid/setgid/sticky (07777).
    pub mode: Option<u32>,
    /// (major, minor) for char and block devices.
    pub device: Option<(u32, u32)>,
    /// Symlink target.
    pub link: Option<Vec<u8>>,
    /// Modification time, seconds since the epoch.
    pub time: Option<i64>,
    /// The `security.capability` extended attribute (file capabilities, see
    /// `tree::caps`), for regular files.
    pub capability: Option<Vec<u8>>,
}

impl MEntry {
    fn merge(&mut self, other: &MEntry) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f.clone(); } )* };
        }
        take!(kind, uid, gid, mode, device, link, time, capability);
    }
}

/// An mtree file: metadata by path. Paths are relative to the rootfs root, without a
/// leading "./"; the root itself is the empty path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mtree {
    entries: BTreeMap<Vec<u8>, MEntry>,
}

impl Mtree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the metadata of `rootfs` lives by default: `<rootfs>.mtree` beside it.
    pub fn default_path_for(rootfs: &Path) -> PathBuf {
        super::sidecar_path(rootfs, ".mtree")
    }

    pub fn load(path: &Path) -> Result<Mtree> {
        let text = std::fs::read(path)
            .with_context(|| format!("reading rootfs metadata {}", path.display()))?;
        Mtree::parse(&text).with_context(|| format!("parsing rootfs metadata {}", path.display()))
    }

    pub fn get(&self, path: &[u8]) -> Option<&MEntry> {
        self.entries.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &MEntry)> {
        self.entries.iter().map(|(k, v)| (k.as_slice(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Record metadata for a path ("./a/b", "a/b" and "/a/b" all name the same entry),
    /// merging with what is already known about it.
    pub fn set(&mut self, path: &[u8], entry: MEntry) {
        let key = normalize(path);
        self.entries.entry(key).or_default().merge(&entry);
    }

    pub fn remove(&mut self, path: &[u8]) {
        self.entries.remove(&normalize(path));
    }

    pub fn parse(text: &[u8]) -> Result<Mtree> {
        let mut tree = Mtree::new();
        let mut defaults = MEntry::default();
        // Classic (nested) form: names without '/' are relative to `cwd`.
        let mut cwd: Vec<Vec<u8>> = Vec::new();
        let mut logical = Vec::new();
        for (lineno, raw) in text.split(|b| *b == b'\n').enumerate() {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if let Some(cont) = raw.strip_suffix(b"\\") {
                logical.extend_from_slice(cont);
                logical.push(b' ');
                continue;
            }
            logical.extend_from_slice(raw);
            let line = std::mem::take(&mut logical);
            let mut tokens = line
                .split(|b| *b == b' ' || *b == b'\t')
                .filter(|t| !t.is_empty());
            let Some(first) = tokens.next() else { continue };
            if first.starts_with(b"#") {
                continue;
            }
            let ctx = || format!("line {}", lineno + 1);
            match first {
                b"/set" => {
                    let e = parse_keywords(tokens).with_context(ctx)?;
                    defaults.merge(&e);
                }
                b"/unset" => {
                    for t in tokens {
                        match t {
                            b"all" => defaults = MEntry::default(),
                            b"type" => defaults.kind = None,
                            b"uid" | b"uname" => defaults.uid = None,
                            b"gid" | b"gname" => defaults.gid = None,
                            b"mode" => defaults.mode = None,
                            b"device" => defaults.device = None,
                            b"link" => defaults.link = None,
                            b"time" => defaults.time = None,
                            CAP_KEYWORD => defaults.capability = None,
                            _ => {}
                        }
                    }
                }
                b".." => {
                    cwd.pop();
                }
                _ => {
                    let name = unescape(first).with_context(ctx)?;
                    let mut e = defaults.clone();
                    e.merge(&parse_keywords(tokens).with_context(ctx)?);
                    let full = if name.contains(&b'/') {
                        normalize(&name)
                    } else {
                        let mut p = cwd.join(&b'/');
                        if name != b"." {
                            if !p.is_empty() {
                                p.push(b'/');
                            }
                            p.extend_from_slice(&name);
                        }
                        if e.kind == Some(MType::Dir) && name != b"." {
                            cwd.push(name.clone());
                        }
                        p
                    };
                    if full.split(|b| *b == b'/').any(|c| c == b"..") {
                        bail!(
                            "{}: path {:?} climbs out of the root",
                            ctx(),
                            String::from_utf8_lossy(&full)
                        );
                    }
                    tree.entries.entry(full).or_default().merge(&e);
                }
            }
        }
        Ok(tree)
    }

    /// Render in the full-path form, one entry per line, sorted, every keyword explicit.
    pub fn to_text(&self) -> String {
        let mut out = String::from("#mtree\n");
        for (path, e) in &self.entries {
            out.push_str(&escape(&if path.is_empty() {
                b".".to_vec()
            } else {
                [b"./".as_slice(), path].concat()
            }));
            if let Some(k) = e.kind {
                let _ = write!(out, " type={}", k.name());
            }
            if let Some(u) = e.uid {
                let _ = write!(out, " uid={u}");
            }
            if let Some(g) = e.gid {
                let _ = write!(out, " gid={g}");
            }
            if let Some(m) = e.mode {
                let _ = write!(out, " mode={m:04o}");
            }
            if let Some((ma, mi)) = e.device {
                let _ = write!(out, " device=native,{ma},{mi}");
            }
            if let Some(l) = &e.link {
                let _ = write!(out, " link={}", escape(l));
            }
            if let Some(t) = e.time {
                let _ = write!(out, " time={t}.0");
            }
            if let Some(c) = &e.capability {
                use base64::Engine as _;
                let _ = write!(
                    out,
                    " xattr.security.capability={}",
                    base64::engine::general_purpose::STANDARD.encode(c)
                );
            }
            out.push('\n');
        }
        out
    }

    /// Write atomically (temporary file + rename), so a reader never sees half a file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("mtree.tmp");
        std::fs::write(&tmp, self.to_text())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        Ok(())
    }
}

/// "./a//b/", "/a/b", "a/b" → "a/b"; "." and "./" → "".
fn normalize(path: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    parts.join(&b'/')
}

/// The keyword holding a file's capabilities (`security.capability`, base64).
const CAP_KEYWORD: &[u8] = b"xattr.security.capability";

fn parse_keywords<'a>(tokens: impl Iterator<Item = &'a [u8]>) -> Result<MEntry> {
    let mut e = MEntry::default();
    for t in tokens {
        let Some(eq) = t.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (k, v) = (&t[..eq], &t[eq + 1..]);
        let vs = std::str::from_utf8(v).unwrap_or("");
        let num = |what: &str| -> Result<u32> {
            vs.parse()
                .with_context(|| format!("bad {what} value '{vs}'"))
        };
        match k {
            b"type" => {
                e.kind = Some(MType::parse(vs).with_context(|| format!("unknown type '{vs}'"))?)
            }
            b"uid" => e.uid = Some(num("uid")?),
            b"gid" => e.gid = Some(num("gid")?),
            // Names cannot be resolved without the target's passwd; only root is universal.
            b"uname" if e.uid.is_none() && vs == "root" => e.uid = Some(0),
            b"gname" if e.gid.is_none() && (vs == "root" || vs == "wheel") => e.gid = Some(0),
            b"mode" => {
                let m = u32::from_str_radix(vs, 8)
                    .with_context(|| format!("bad mode '{vs}' (octal expected)"))?;
                if m > 0o7777 {
                    bail!("mode '{vs}' has bits beyond 07777");
                }
                e.mode = Some(m);
            }
            b"device" => e.device = Some(parse_device(vs)?),
            b"link" => e.link = Some(unescape(v)?),
            b"time" => {
                let secs = vs.split('.').next().unwrap_or("");
                e.time = Some(secs.parse().with_context(|| format!("bad time '{vs}'"))?);
            }
            CAP_KEYWORD => {
                use base64::Engine as _;
                let v = base64::engine::general_purpose::STANDARD
                    .decode(vs)
                    .with_context(|| format!("bad xattr.security.capability '{vs}' (base64)"))?;
                super::caps::check(&v).context("xattr.security.capability")?;
                e.capability = Some(v);
            }
            _ => {}
        }
    }
    Ok(e)
}

/// `native,M,m`, `linux,M,m`, `M,m`, or a single Linux dev_t number.
fn parse_device(v: &str) -> Result<(u32, u32)> {
    let parts: Vec<&str> = v.split(',').collect();
    let nums: Vec<&str> = match parts.as_slice() {
        [fmt, rest @ ..]
            if fmt.chars().all(|c| c.is_ascii_alphanumeric())
                && !fmt.chars().all(|c| c.is_ascii_digit()) =>
        {
            rest.to_vec()
        }
        all => all.to_vec(),
    };
    let p = |s: &str| {
        s.parse::<u64>()
            .with_context(|| format!("bad device '{v}'"))
    };
    match nums.as_slice() {
        [ma, mi] => Ok((p(ma)? as u32, p(mi)? as u32)),
        [dev] => {
            let d = p(dev)?;
            // glibc's gnu_dev_major/minor layout.
            let major = ((d >> 8) & 0xfff) | ((d >> 32) & !0xfff);
            let minor = (d & 0xff) | ((d >> 12) & !0xff);
            Ok((major as u32, minor as u32))
        }
        _ => bail!("bad device '{v}' (expected native,MAJOR,MINOR)"),
    }
}

/// vis(3)-style: backslash-octal for anything that is not a plain printable ASCII byte.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' && b != b'#' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\{b:03o}");
        }
    }
    s
}

pub fn unescape(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let rest = &bytes[i + 1..];
        if rest.len() >= 3 && rest[..3].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (rest[0] - b'0') as u32 * 64
                + (rest[1] - b'0') as u32 * 8
                + (rest[2] - b'0') as u32;
            if v > 255 {
                bail!("bad escape in {:?}", String::from_utf8_lossy(bytes));
            }
            out.push(v as u8);
            i += 4;
            continue;
        }
        let c = match rest.first() {
            Some(b'\\') => b'\\',
            Some(b's') => b' ',
            Some(b't') => b'\t',
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b'#') => b'#',
            _ => bail!("bad escape in {:?}", String::from_utf8_lossy(bytes)),
        };
        out.push(c);
        i += 2;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_path_form_with_set_defaults() {
        let text = b"#mtree\n/set uid=0 gid=0 mode=0644\n. type=dir mode=0755\n./dev type=dir mode=0755\n./dev/console type=char mode=0600 device=native,5,1\n./usr/bin/su type=file mode=04755\n./etc/shadow gid=42 mode=0640\n";
        let m = Mtree::parse(text).unwrap();
        assert_eq!(m.len(), 5);
        let con = m.get(b"dev/console").unwrap();
        assert_eq!(
            (con.kind, con.device, con.mode, con.uid),
            (Some(MType::Char), Some((5, 1)), Some(0o600), Some(0))
        );
        assert_eq!(m.get(b"usr/bin/su").unwrap().mode, Some(0o4755));
        assert_eq!(m.get(b"etc/shadow").unwrap().gid, Some(42));
        assert_eq!(m.get(b"").unwrap().kind, Some(MType::Dir));
    }

    #[test]
    fn parses_classic_nested_form() {
        let text = b". type=dir\ndev type=dir uid=0\n    null type=char device=1,3 mode=0666\n..\netc type=dir\n    hostname type=file\n..\n";
        let m = Mtree::parse(text).unwrap();
        assert_eq!(m.get(b"dev/null").unwrap().device, Some((1, 3)));
        assert!(m.get(b"etc/hostname").is_some());
        assert!(m.get(b"hostname").is_none());
    }

    #[test]
    fn escapes_round_trip() {
        let mut m = Mtree::new();
        let weird = b"a dir/with#hash\\and\tt\xc3\xa9".to_vec();
        m.set(
            &weird,
            MEntry {
                kind: Some(MType::Link),
                link: Some(b"../x y".to_vec()),
                ..Default::default()
            },
        );
        m.set(
            b"./dev/null",
            MEntry {
                kind: Some(MType::Char),
                device: Some((1, 3)),
                uid: Some(0),
                gid: Some(0),
                mode: Some(0o666),
                time: Some(5),
                link: None,
                capability: None,
            },
        );
        m.set(
            b"usr/bin/ping",
            MEntry {
                kind: Some(MType::File),
                capability: Some(crate::tree::caps::from_text("cap_net_raw=ep").unwrap()),
                ..Default::default()
            },
        );
        let text = m.to_text();
        assert!(
            text.contains(
                "./usr/bin/ping type=file xattr.security.capability=AQAAAgAgAAAAAAAAAAAAAAAAAAA="
            ),
            "{text}"
        );
        assert!(
            text.contains("./a\\040dir/with\\043hash\\134and\\011t\\303\\251"),
            "{text}"
        );
        assert_eq!(Mtree::parse(text.as_bytes()).unwrap(), m);
    }

    #[test]
    fn rejects_bad_values_and_escapes() {
        assert!(Mtree::parse(b"./x mode=0999\n").is_err());
        assert!(Mtree::parse(b"./x mode=17777\n").is_err());
        assert!(Mtree::parse(b"./x type=weird\n").is_err());
        assert!(Mtree::parse(b"./x uid=-1\n").is_err());
        assert!(Mtree::parse(b"./x device=a,b\n").is_err());
        assert!(Mtree::parse(b"./a/../../etc/passwd uid=0\n").is_err());
        assert!(Mtree::parse(b"./bad\\q uid=0\n").is_err());
        assert!(Mtree::parse(b"./x xattr.security.capability=AQAA\n").is_err());
        assert!(Mtree::parse(b"./x xattr.security.capability=!!\n").is_err());
    }

    #[test]
    fn device_forms() {
        assert_eq!(parse_device("native,5,1").unwrap(), (5, 1));
        assert_eq!(parse_device("linux,8,17").unwrap(), (8, 17));
        assert_eq!(parse_device("1,3").unwrap(), (1, 3));
        assert_eq!(parse_device("2049").unwrap(), (8, 1)); // makedev(8,1)
    }

    #[test]
    fn continuation_lines_and_comments() {
        let m = Mtree::parse(b"# comment\n./a \\\n  uid=7 \\\n  gid=8\n").unwrap();
        assert_eq!(m.get(b"a").unwrap().uid, Some(7));
        assert_eq!(m.get(b"a").unwrap().gid, Some(8));
    }

    #[test]
    fn default_path_is_a_sibling() {
        assert_eq!(
            Mtree::default_path_for(Path::new("/tmp/x/rootfs/")),
            PathBuf::from("/tmp/x/rootfs.mtree")
        );
        assert_eq!(
            Mtree::default_path_for(Path::new("/tmp/x/rootfs/.")),
            PathBuf::from("/tmp/x/rootfs.mtree")
        );
    }
}
