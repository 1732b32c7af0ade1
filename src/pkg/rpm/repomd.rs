//! rpm-md repository metadata: `repodata/repomd.xml` (the index of the other files, with
//! their checksums — sha1, sha256, sha512…), the packages of `primary.xml` and the file
//! lists of `filelists.xml`, parsed streaming from their compressed form (gzip, xz, zstd,
//! bzip2) so a distro's 60 000-package primary never sits in memory as text.

use std::io::{BufRead, BufReader, Read};

use anyhow::{Context, Result, bail};
use quick_xml::events::{BytesStart, Event};

use super::tags::sense;
use super::version::{Dep, Evr, Rich};
use crate::pkg::Digest;

/// One `<data>` entry of repomd.xml.
#[derive(Clone, Debug)]
pub struct DataFile {
    /// `primary`, `filelists`, `other`, `primary_db`…
    pub kind: String,
    pub checksum: Digest,
    /// `repodata/<hash>-primary.xml.gz`, relative to the repository base.
    pub location: String,
    pub size: Option<u64>,
}

/// The parsed repomd.xml.
#[derive(Clone, Debug, Default)]
pub struct RepoMd {
    pub revision: Option<String>,
    pub data: Vec<DataFile>,
}

impl RepoMd {
    pub fn get(&self, kind: &str) -> Option<&DataFile> {
        self.data.iter().find(|d| d.kind == kind)
    }
}

/// A checksum element's `type` and hex value as a digest the cache can verify.
pub fn digest(kind: &str, hex: &str) -> Result<Digest> {
    let hex = hex.trim().to_ascii_lowercase();
    fn run<D: sha2::Digest + std::io::Write>(mut d: D, r: &mut dyn Read) -> Result<String> {
        std::io::copy(r, &mut d)?;
        Ok(hex::encode(d.finalize()))
    }
    fn sha224(r: &mut dyn Read) -> Result<String> {
        run(<sha2::Sha224 as sha2::Digest>::new(), r)
    }
    fn sha384(r: &mut dyn Read) -> Result<String> {
        run(<sha2::Sha384 as sha2::Digest>::new(), r)
    }
    let want_len = |n: usize| -> Result<()> {
        if hex.len() != n || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("checksum '{hex}' is not a {kind} digest");
        }
        Ok(())
    };
    Ok(match kind {
        "sha" | "sha1" => {
            want_len(40)?;
            Digest::Sha1(hex)
        }
        "sha256" => {
            want_len(64)?;
            Digest::Sha256(hex)
        }
        "sha512" => {
            want_len(128)?;
            Digest::Sha512(hex)
        }
        "sha224" => {
            want_len(56)?;
            Digest::Custom {
                name: "sha224",
                hex,
                compute: sha224,
            }
        }
        "sha384" => {
            want_len(96)?;
            Digest::Custom {
                name: "sha384",
                hex,
                compute: sha384,
            }
        }
        "md5" => bail!("checksum type md5 is too weak to verify repository data; refusing it"),
        other => bail!("unknown checksum type '{other}'"),
    })
}

fn attr(e: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>> {
    for a in e.attributes() {
        let a = a?;
        if a.key.as_ref() == name || a.key.local_name().as_ref() == name {
            return Ok(Some(
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)?
                    .into_owned(),
            ));
        }
    }
    Ok(None)
}

/// Text of a predefined or character entity reference (`amp`, `#38`, `#x26`).
fn entity(name: &str) -> Option<String> {
    Some(match name {
        "amp" => "&".into(),
        "lt" => "<".into(),
        "gt" => ">".into(),
        "quot" => "\"".into(),
        "apos" => "'".into(),
        n => {
            let code = if let Some(h) = n.strip_prefix("#x") {
                u32::from_str_radix(h, 16).ok()?
            } else {
                n.strip_prefix('#')?.parse().ok()?
            };
            char::from_u32(code)?.to_string()
        }
    })
}

/// Events of an XML stream, with text (entities resolved) collected per element.
struct Xml<R: BufRead> {
    r: quick_xml::Reader<R>,
    buf: Vec<u8>,
    what: String,
}

enum Ev {
    Start(BytesStart<'static>, bool),
    End(Vec<u8>),
    Text(String),
    Eof,
}

impl<R: BufRead> Xml<R> {
    fn new(r: R, what: &str) -> Xml<R> {
        Xml {
            r: quick_xml::Reader::from_reader(r),
            buf: Vec::new(),
            what: what.to_string(),
        }
    }

    fn next(&mut self) -> Result<Ev> {
        loop {
            self.buf.clear();
            let ev = self
                .r
                .read_event_into(&mut self.buf)
                .with_context(|| format!("{}: malformed XML", self.what))?;
            return Ok(match ev {
                Event::Start(e) => Ev::Start(e.into_owned(), false),
                Event::Empty(e) => Ev::Start(e.into_owned(), true),
                Event::End(e) => Ev::End(e.local_name().as_ref().to_vec()),
                Event::Text(t) => Ev::Text(t.decode()?.into_owned()),
                Event::CData(t) => Ev::Text(String::from_utf8_lossy(&t).into_owned()),
                Event::GeneralRef(r) => {
                    let n = r.decode()?.into_owned();
                    Ev::Text(
                        entity(&n)
                            .with_context(|| format!("{}: unknown XML entity &{n};", self.what))?,
                    )
                }
                Event::Eof => Ev::Eof,
                _ => continue,
            });
        }
    }
}

type Pending = (
    String,
    Option<(String, String)>,
    Option<String>,
    Option<u64>,
);

/// Parse repomd.xml.
pub fn parse_repomd(xml: &[u8]) -> Result<RepoMd> {
    let mut x = Xml::new(xml, "repomd.xml");
    let mut md = RepoMd::default();
    let mut text = String::new();
    // The <data> being read: kind, checksum (type, hex), location, size.
    let mut cur: Option<Pending> = None;
    let mut checksum_type = String::new();
    let mut saw_root = false;
    loop {
        match x.next()? {
            Ev::Start(e, empty) => {
                text.clear();
                match e.local_name().as_ref() {
                    b"repomd" => saw_root = true,
                    b"data" => {
                        cur = Some((attr(&e, b"type")?.unwrap_or_default(), None, None, None))
                    }
                    b"checksum" => checksum_type = attr(&e, b"type")?.unwrap_or_default(),
                    b"location" => {
                        if let Some(c) = &mut cur {
                            c.2 = attr(&e, b"href")?;
                        }
                    }
                    _ => {}
                }
                let _ = empty;
            }
            Ev::Text(t) => text.push_str(&t),
            Ev::End(name) => {
                match name.as_slice() {
                    b"revision" => md.revision = Some(text.trim().to_string()),
                    b"checksum" => {
                        if let Some(c) = &mut cur {
                            c.1 = Some((checksum_type.clone(), text.trim().to_string()));
                        }
                    }
                    b"size" => {
                        if let Some(c) = &mut cur {
                            c.3 = text.trim().parse().ok();
                        }
                    }
                    b"data" => {
                        if let Some((kind, sum, loc, size)) = cur.take() {
                            let (t, h) =
                                sum.with_context(|| format!("repomd.xml: {kind} has no checksum"))?;
                            let location =
                                loc.with_context(|| format!("repomd.xml: {kind} has no location"))?;
                            // A bad checksum type on data we never read is not an error.
                            if let Ok(checksum) = digest(&t, &h) {
                                md.data.push(DataFile {
                                    kind,
                                    checksum,
                                    location,
                                    size,
                                });
                            } else if kind == "primary" || kind == "filelists" {
                                digest(&t, &h).with_context(|| format!("repomd.xml: {kind}"))?;
                            }
                        }
                    }
                    _ => {}
                }
                text.clear();
            }
            Ev::Eof => break,
        }
    }
    if !saw_root {
        bail!("repomd.xml has no <repomd> element: this is not an rpm-md repository");
    }
    Ok(md)
}

/// One package as primary.xml describes it.
#[derive(Clone, Debug, Default)]
pub struct RepoPackage {
    pub name: String,
    pub arch: String,
    pub evr: Evr,
    /// The checksum over the whole .rpm (`pkgid`).
    pub checksum: Option<Digest>,
    /// `location href`, relative to `base` (or to the repository when `base` is None).
    pub location: String,
    /// `location xml:base`: another base URL for this package.
    pub base: Option<String>,
    pub size: u64,
    pub build_time: u64,
    pub provides: Vec<Dep>,
    /// Requirements; `pre` ones included (osbuilder installs in dependency order anyway).
    pub requires: Vec<Rich>,
    pub conflicts: Vec<Dep>,
    pub obsoletes: Vec<Dep>,
    /// The files primary lists (the "primary" subset: /etc, */bin/*, …).
    pub files: Vec<String>,
    /// `header-range end`: the byte offset where the package's header ends, so lead,
    /// signature and header can be read without the payload.
    pub header_end: Option<u64>,
}

impl RepoPackage {
    /// `name-[epoch:]version-release.arch`.
    pub fn nevra(&self) -> String {
        format!("{}-{}.{}", self.name, self.evr, self.arch)
    }
}

fn flags_of(s: &str) -> u32 {
    match s {
        "EQ" => sense::EQUAL,
        "LT" => sense::LESS,
        "LE" => sense::LESS | sense::EQUAL,
        "GT" => sense::GREATER,
        "GE" => sense::GREATER | sense::EQUAL,
        _ => 0,
    }
}

fn entry_evr(e: &BytesStart<'_>) -> Result<String> {
    let ep = attr(e, b"epoch")?.filter(|s| !s.is_empty());
    let ver = attr(e, b"ver")?.unwrap_or_default();
    let rel = attr(e, b"rel")?.filter(|s| !s.is_empty());
    let mut s = String::new();
    if let Some(ep) = ep {
        s.push_str(&ep);
        s.push(':');
    }
    s.push_str(&ver);
    if let Some(r) = rel {
        s.push('-');
        s.push_str(&r);
    }
    Ok(s)
}

/// A decompressing reader chosen by the file's magic (gzip, xz, zstd, bzip2, or plain).
pub fn decompress<'a, R: Read + 'a>(r: R) -> Result<Box<dyn BufRead + 'a>> {
    let mut b = BufReader::with_capacity(256 * 1024, r);
    let head = b.fill_buf()?.to_vec();
    let inner: Box<dyn Read + 'a> = match head.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(b)),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => {
            Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(b))
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(zstd::stream::read::Decoder::with_buffer(b)?),
        [b'B', b'Z', b'h', ..] => Box::new(bzip2::bufread::MultiBzDecoder::new(b)),
        _ => Box::new(b),
    };
    Ok(Box::new(BufReader::with_capacity(256 * 1024, inner)))
}

/// Stream primary.xml's packages to `each`.
pub fn parse_primary<R: BufRead>(
    r: R,
    what: &str,
    each: &mut dyn FnMut(RepoPackage) -> Result<()>,
) -> Result<usize> {
    let mut x = Xml::new(r, what);
    let mut p: Option<RepoPackage> = None;
    let mut text = String::new();
    // Which dependency list the current rpm:entry elements belong to.
    let mut list: &'static str = "";
    let mut checksum_type = String::new();
    let mut pkgid = false;
    let mut count = 0;
    let mut saw_root = false;
    loop {
        match x.next()? {
            Ev::Start(e, empty) => {
                text.clear();
                let local = e.local_name().as_ref().to_vec();
                match local.as_slice() {
                    b"metadata" => saw_root = true,
                    b"package" => p = Some(RepoPackage::default()),
                    _ => {}
                }
                let Some(pkg) = p.as_mut() else { continue };
                match local.as_slice() {
                    b"version" => {
                        pkg.evr = Evr {
                            epoch: attr(&e, b"epoch")?.and_then(|s| s.parse().ok()),
                            version: attr(&e, b"ver")?.unwrap_or_default(),
                            release: attr(&e, b"rel")?.unwrap_or_default(),
                        }
                    }
                    b"checksum" => {
                        checksum_type = attr(&e, b"type")?.unwrap_or_default();
                        pkgid = attr(&e, b"pkgid")?.as_deref() == Some("YES");
                    }
                    b"time" => {
                        pkg.build_time = attr(&e, b"build")?
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0)
                    }
                    b"size" => {
                        pkg.size = attr(&e, b"package")?
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0)
                    }
                    b"location" => {
                        pkg.location = attr(&e, b"href")?.unwrap_or_default();
                        pkg.base = attr(&e, b"base")?;
                    }
                    b"header-range" => {
                        pkg.header_end = attr(&e, b"end")?.and_then(|s| s.parse().ok())
                    }
                    b"provides" => list = "provides",
                    b"requires" => list = "requires",
                    b"conflicts" => list = "conflicts",
                    b"obsoletes" => list = "obsoletes",
                    b"recommends" | b"suggests" | b"supplements" | b"enhances" => list = "weak",
                    b"entry" => {
                        let name = attr(&e, b"name")?.unwrap_or_default();
                        let flags = attr(&e, b"flags")?.map(|f| flags_of(&f)).unwrap_or(0);
                        let evr = entry_evr(&e)?;
                        match list {
                            "provides" => pkg.provides.push(Dep::new(&name, flags, &evr)),
                            "requires" if !name.starts_with("rpmlib(") => pkg.requires.push(
                                Rich::from_parts(&name, flags, &evr)
                                    .with_context(|| format!("{what}: {}", pkg.name))?,
                            ),
                            "conflicts" => pkg.conflicts.push(Dep::new(&name, flags, &evr)),
                            "obsoletes" => pkg.obsoletes.push(Dep::new(&name, flags, &evr)),
                            _ => {}
                        }
                    }
                    _ => {}
                }
                let _ = empty;
            }
            Ev::Text(t) => text.push_str(&t),
            Ev::End(name) => {
                if let Some(pkg) = p.as_mut() {
                    match name.as_slice() {
                        b"name" => pkg.name = text.trim().to_string(),
                        b"arch" => pkg.arch = text.trim().to_string(),
                        b"checksum" if pkgid || pkg.checksum.is_none() => {
                            pkg.checksum = Some(
                                digest(&checksum_type, &text)
                                    .with_context(|| format!("{what}: {}", pkg.name))?,
                            )
                        }
                        b"file" => pkg.files.push(text.clone()),
                        b"provides" | b"requires" | b"conflicts" | b"obsoletes" | b"recommends"
                        | b"suggests" | b"supplements" | b"enhances" => list = "",
                        _ => {}
                    }
                }
                if name.as_slice() == b"package" {
                    if let Some(pkg) = p.take() {
                        if pkg.name.is_empty() || pkg.location.is_empty() {
                            bail!("{what}: a package entry has no name or location");
                        }
                        count += 1;
                        each(pkg)?;
                    }
                }
                text.clear();
            }
            Ev::Eof => break,
        }
    }
    if !saw_root {
        bail!("{what}: no <metadata> element: not a primary.xml");
    }
    Ok(count)
}

/// Stream filelists.xml: `each(pkgid, name, arch, path)` for every file.
pub fn parse_filelists<R: BufRead>(
    r: R,
    what: &str,
    each: &mut dyn FnMut(&str, &str, &str, &str),
) -> Result<()> {
    let mut x = Xml::new(r, what);
    let mut text = String::new();
    let (mut id, mut name, mut arch) = (String::new(), String::new(), String::new());
    loop {
        match x.next()? {
            Ev::Start(e, _) => {
                text.clear();
                if e.local_name().as_ref() == b"package" {
                    id = attr(&e, b"pkgid")?.unwrap_or_default();
                    name = attr(&e, b"name")?.unwrap_or_default();
                    arch = attr(&e, b"arch")?.unwrap_or_default();
                }
            }
            Ev::Text(t) => text.push_str(&t),
            Ev::End(n) => {
                if n.as_slice() == b"file" {
                    each(&id, &name, &arch, &text);
                }
                text.clear();
            }
            Ev::Eof => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompress_sniffs_every_metadata_compression() {
        use std::io::Write;
        let xml = b"<metadata packages=\"0\"></metadata>\n".repeat(50);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&xml).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&xml).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&xml).unwrap();
        let packed = [
            ("plain", xml.clone()),
            ("gzip", gz.finish().unwrap()),
            ("bzip2", bz.finish().unwrap()),
            ("xz", xz.finish().unwrap()),
            ("zstd", zstd::encode_all(&xml[..], 3).unwrap()),
        ];
        for (name, bytes) in packed {
            let mut out = Vec::new();
            decompress(&bytes[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert!(out == xml, "{name}");
        }
    }

    #[test]
    fn parses_primary_entries_rich_deps_and_entities() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="1">
<package type="rpm">
  <name>a&amp;b</name><arch>x86_64</arch>
  <version epoch="1" ver="2.0" rel="3"/>
  <checksum type="sha256" pkgid="YES">0000000000000000000000000000000000000000000000000000000000000000</checksum>
  <time file="1" build="1700000000"/>
  <size package="1234" installed="0" archive="0"/>
  <location xml:base="http://other.invalid/" href="Packages/a.rpm"/>
  <format>
    <rpm:header-range start="4504" end="9876"/>
    <rpm:provides><rpm:entry name="a" flags="EQ" epoch="1" ver="2.0" rel="3"/></rpm:provides>
    <rpm:requires>
      <rpm:entry name="/bin/sh" pre="1"/>
      <rpm:entry name="rpmlib(PayloadIsZstd)" flags="LE" epoch="0" ver="5.4.18-1"/>
      <rpm:entry name="(pam if systemd)"/>
      <rpm:entry name="libc" flags="GE" epoch="0" ver="2.34"/>
    </rpm:requires>
    <rpm:recommends><rpm:entry name="weak"/></rpm:recommends>
    <file>/usr/bin/a</file>
  </format>
</package>
</metadata>"#;
        let mut got = Vec::new();
        let n = parse_primary(&xml[..], "t", &mut |p| {
            got.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
        let p = &got[0];
        assert_eq!(p.name, "a&b");
        assert_eq!(p.nevra(), "a&b-1:2.0-3.x86_64");
        assert_eq!(p.base.as_deref(), Some("http://other.invalid/"));
        assert_eq!(p.requires.len(), 3);
        assert!(matches!(p.requires[1], Rich::If(..)));
        assert_eq!(p.files, vec!["/usr/bin/a"]);
        assert_eq!(p.size, 1234);
        assert_eq!(p.header_end, Some(9876));
        assert!(parse_primary(&b"<x/>"[..], "t", &mut |_| Ok(())).is_err());
        assert!(digest("md5", "00").is_err());
        assert!(digest("sha256", "abc").is_err());
    }
}
