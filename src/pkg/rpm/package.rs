//! An .rpm file: the 96-byte lead, the signature header (padded to 8 bytes), the main
//! header and the payload. [`RpmFile::open`] reads the three heads and leaves the payload
//! for streaming; [`Meta`] is what osbuilder uses from the main header (identity,
//! dependencies, the file list with modes, owners, digests, links, capabilities, and the
//! scriptlets it will not run).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::header::Header;
use super::tags::{self as t, file as ff};
use super::version::{Dep, Evr, Rich};

const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];

/// The heads of an .rpm, and where its payload starts.
pub struct RpmFile {
    pub signature: Header,
    pub header: Header,
    /// Byte offset of the payload in the file.
    pub payload_offset: u64,
}

impl RpmFile {
    /// Read lead, signature header and main header from `r`.
    pub fn read<R: Read>(r: &mut R, what: &str) -> Result<RpmFile> {
        let mut lead = [0u8; 96];
        r.read_exact(&mut lead)
            .with_context(|| format!("{what}: too short for an RPM lead"))?;
        if lead[..4] != LEAD_MAGIC {
            bail!("{what}: not an RPM package (bad lead magic)");
        }
        if !matches!(lead[4], 3 | 4) {
            bail!("{what}: unsupported RPM format version {}", lead[4]);
        }
        // signature_type 5: a header-style signature (every rpm since 1997).
        if u16::from_be_bytes([lead[78], lead[79]]) != 5 {
            bail!("{what}: unsupported (pre-header) RPM signature type");
        }
        let signature = Header::read(r, true, &format!("{what}: signature header"))?;
        let header = Header::read(r, false, &format!("{what}: main header"))?;
        let payload_offset =
            (96 + signature.raw().len().div_ceil(8) * 8 + header.raw().len()) as u64;
        Ok(RpmFile {
            signature,
            header,
            payload_offset,
        })
    }

    /// Open `path` and read its heads; the file is returned positioned at the payload.
    pub fn open(path: &Path, what: &str) -> Result<(RpmFile, BufReader<File>)> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut r = BufReader::with_capacity(256 * 1024, f);
        let rpm = RpmFile::read(&mut r, what)?;
        r.seek(SeekFrom::Start(rpm.payload_offset))?;
        Ok((rpm, r))
    }
}

/// One file of the package, from the header's parallel file arrays.
#[derive(Clone, Debug)]
pub struct FileEntry {
    /// Absolute path (`/usr/bin/foo`).
    pub path: String,
    /// st_mode: type and permission bits.
    pub mode: u32,
    pub size: u64,
    pub user: String,
    pub group: String,
    pub mtime: u32,
    pub rdev: u32,
    pub linkto: String,
    pub flags: u32,
    /// Hex digest of the content (regular files; empty otherwise).
    pub digest: String,
    pub device: u32,
    pub inode: u32,
    /// `cap_to_text` form, e.g. "cap_net_raw=ep" (empty: none).
    pub caps: String,
}

impl FileEntry {
    pub fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_ghost(&self) -> bool {
        self.flags & ff::GHOST != 0
    }
}

/// A scriptlet the package carries (never run: its effects are made declaratively).
#[derive(Clone, Debug)]
pub struct Scriptlet {
    /// `%pre`, `%post`, `%pretrans`…
    pub when: &'static str,
    /// The interpreter (`/bin/sh`, `<lua>`).
    pub prog: String,
    pub body: String,
}

/// What osbuilder uses from a package's main header.
#[derive(Clone, Debug)]
pub struct Meta {
    pub name: String,
    pub evr: Evr,
    pub arch: String,
    pub build_time: u64,
    pub provides: Vec<Dep>,
    pub requires: Vec<Rich>,
    pub conflicts: Vec<Dep>,
    pub obsoletes: Vec<Dep>,
    pub files: Vec<FileEntry>,
    /// FILEDIGESTALGO (PGPHASHALGO_*): MD5 when absent.
    pub digest_algo: u64,
    /// PAYLOADCOMPRESSOR as declared (None: absent, the payload is sniffed).
    pub compressor: Option<String>,
    pub scriptlets: Vec<Scriptlet>,
}

impl Meta {
    /// `name-[epoch:]version-release.arch`.
    pub fn nevra(&self) -> String {
        format!("{}-{}.{}", self.name, self.evr, self.arch)
    }

    pub fn from_header(h: &Header, what: &str) -> Result<Meta> {
        let name = h
            .string(t::NAME)
            .with_context(|| format!("{what}: the header has no name"))?;
        let evr = Evr {
            epoch: h.int(t::EPOCH),
            version: h.string(t::VERSION).unwrap_or_default(),
            release: h.string(t::RELEASE).unwrap_or_default(),
        };
        let arch = h.string(t::ARCH).unwrap_or_else(|| "noarch".into());
        let deps = |n: u32, f: u32, v: u32| -> Vec<(String, u32, String)> {
            let names = h.strings(n);
            let flags = h.ints(f);
            let vers = h.strings(v);
            names
                .into_iter()
                .enumerate()
                .map(|(i, name)| {
                    (
                        name,
                        flags.get(i).copied().unwrap_or(0) as u32,
                        vers.get(i).cloned().unwrap_or_default(),
                    )
                })
                .collect()
        };
        let plain = |v: Vec<(String, u32, String)>| -> Vec<Dep> {
            v.iter().map(|(n, f, ver)| Dep::new(n, *f, ver)).collect()
        };
        let requires = deps(t::REQUIRENAME, t::REQUIREFLAGS, t::REQUIREVERSION)
            .into_iter()
            // rpmlib(...) features are rpm's own, not packages.
            .filter(|(n, f, _)| f & t::sense::RPMLIB == 0 && !n.starts_with("rpmlib("))
            .map(|(n, f, v)| {
                Rich::from_parts(&n, f, &v).with_context(|| format!("{what}: requirement {n}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let files = file_entries(h, what)?;
        let mut scriptlets = Vec::new();
        for (when, body, prog) in [
            ("%pretrans", t::PRETRANS, t::PRETRANSPROG),
            ("%pre", t::PREIN, t::PREINPROG),
            ("%post", t::POSTIN, t::POSTINPROG),
            ("%preun", t::PREUN, t::PREUNPROG),
            ("%postun", t::POSTUN, t::POSTUNPROG),
            ("%posttrans", t::POSTTRANS, t::POSTTRANSPROG),
        ] {
            let body_text = h.string(body);
            let prog_text = h.strings(prog).into_iter().next();
            if body_text.is_some() || prog_text.is_some() {
                scriptlets.push(Scriptlet {
                    when,
                    prog: prog_text.unwrap_or_else(|| "/bin/sh".into()),
                    body: body_text.unwrap_or_default(),
                });
            }
        }
        Ok(Meta {
            name,
            evr,
            arch,
            build_time: h.int(t::BUILDTIME).unwrap_or(0),
            provides: plain(deps(t::PROVIDENAME, t::PROVIDEFLAGS, t::PROVIDEVERSION)),
            requires,
            conflicts: plain(deps(t::CONFLICTNAME, t::CONFLICTFLAGS, t::CONFLICTVERSION)),
            obsoletes: plain(deps(t::OBSOLETENAME, t::OBSOLETEFLAGS, t::OBSOLETEVERSION)),
            files,
            digest_algo: h.int(t::FILEDIGESTALGO).unwrap_or(super::tags::hash::MD5),
            compressor: h.string(t::PAYLOADCOMPRESSOR),
            scriptlets,
        })
    }
}

/// The file list: BASENAMES + DIRNAMES + DIRINDEXES (or the old OLDFILENAMES), with the
/// parallel arrays; every array must have one element per file.
fn file_entries(h: &Header, what: &str) -> Result<Vec<FileEntry>> {
    let paths: Vec<String> = if h.has(t::BASENAMES) {
        let base = h.strings(t::BASENAMES);
        let dirs = h.strings(t::DIRNAMES);
        let idx = h.ints(t::DIRINDEXES);
        if idx.len() != base.len() {
            bail!("{what}: the file list's DIRINDEXES and BASENAMES disagree");
        }
        base.iter()
            .zip(&idx)
            .map(|(b, &i)| {
                dirs.get(i as usize)
                    .map(|d| format!("{d}{b}"))
                    .with_context(|| {
                        format!("{what}: file {b} names a directory index out of range")
                    })
            })
            .collect::<Result<_>>()?
    } else {
        h.strings(t::OLDFILENAMES)
    };
    let n = paths.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let need = |v: Vec<u64>, name: &str| -> Result<Vec<u64>> {
        if v.len() != n {
            bail!(
                "{what}: the header's {name} has {} entries for {n} files",
                v.len()
            );
        }
        Ok(v)
    };
    let need_s = |v: Vec<String>, name: &str| -> Result<Vec<String>> {
        if v.len() != n {
            bail!(
                "{what}: the header's {name} has {} entries for {n} files",
                v.len()
            );
        }
        Ok(v)
    };
    let opt = |v: Vec<u64>| if v.len() == n { v } else { vec![0; n] };
    let opt_s = |v: Vec<String>| {
        if v.len() == n {
            v
        } else {
            vec![String::new(); n]
        }
    };
    let modes = need(h.ints(t::FILEMODES), "FILEMODES")?;
    let sizes = if h.has(t::LONGFILESIZES) {
        need(h.ints(t::LONGFILESIZES), "LONGFILESIZES")?
    } else {
        need(h.ints(t::FILESIZES), "FILESIZES")?
    };
    let users = need_s(h.strings(t::FILEUSERNAME), "FILEUSERNAME")?;
    let groups = need_s(h.strings(t::FILEGROUPNAME), "FILEGROUPNAME")?;
    let mtimes = opt(h.ints(t::FILEMTIMES));
    let rdevs = opt(h.ints(t::FILERDEVS));
    let links = opt_s(h.strings(t::FILELINKTOS));
    let flags = opt(h.ints(t::FILEFLAGS));
    let digests = opt_s(h.strings(t::FILEDIGESTS));
    let devices = opt(h.ints(t::FILEDEVICES));
    let inodes = opt(h.ints(t::FILEINODES));
    let caps = opt_s(h.strings(t::FILECAPS));
    Ok((0..n)
        .map(|i| FileEntry {
            path: paths[i].clone(),
            mode: modes[i] as u32,
            size: sizes[i],
            user: users[i].clone(),
            group: groups[i].clone(),
            mtime: mtimes[i] as u32,
            rdev: rdevs[i] as u32,
            linkto: links[i].clone(),
            flags: flags[i] as u32,
            digest: digests[i].clone(),
            device: devices[i] as u32,
            inode: inodes[i] as u32,
            caps: caps[i].clone(),
        })
        .collect())
}

/// The payload's compression, from its magic bytes (PAYLOADCOMPRESSOR may be absent or
/// wrong): gzip, bzip2, xz, zstd, legacy lzma, or none (a bare cpio archive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    Lzma,
}

impl Compression {
    pub fn sniff(head: &[u8]) -> Result<Compression> {
        Ok(match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [b'B', b'Z', b'h', ..] => Compression::Bzip2,
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Xz,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            [b'0', b'7', b'0', b'7', b'0', ..] => Compression::None,
            [0x5d, 0, 0, ..] => Compression::Lzma,
            _ => bail!(
                "unrecognised payload compression (magic {:02x?})",
                &head[..head.len().min(6)]
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lzma => "lzma",
        }
    }

    /// A streaming decompressor over `r`.
    pub fn reader<'a, R: Read + 'a>(self, r: R) -> Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
            Compression::Lzma => {
                let s = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                    .context("setting up the lzma decoder")?;
                Box::new(liblzma::read::XzDecoder::new_stream(r, s))
            }
        })
    }
}
