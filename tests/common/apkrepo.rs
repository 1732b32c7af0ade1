//! Test helper: build signed Alpine repositories (apk v2 packages and APKINDEX.tar.gz)
//! with a test RSA key, and serve a folder over HTTP on 127.0.0.1.
//!
//! The layout follows what abuild produces: a package is three gzip members (signature
//! tar segment, control tar segment with `.PKGINFO`, data tar with PAX
//! `APK-TOOLS.checksum.SHA1` headers); segments other than the last are "cut" (no tar
//! end-of-archive blocks).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use rand::SeedableRng;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha1::{Digest, Sha1};
use sha2::Sha256;

pub const KEY_NAME: &str = "osbuilder-test-0001.rsa.pub";

/// One test key per test binary (deterministic, so failures reproduce).
pub fn test_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x05b1_1de4);
        RsaPrivateKey::new(&mut rng, 2048).unwrap()
    })
}

pub fn other_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        RsaPrivateKey::new(&mut rng, 2048).unwrap()
    })
}

pub fn public_pem(key: &RsaPrivateKey) -> String {
    key.to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

/// Write the test public key into a fresh keys folder (for `--keys-dir`).
pub fn write_keys_dir(dir: &Path) -> PathBuf {
    let k = dir.join("keys");
    std::fs::create_dir_all(&k).unwrap();
    std::fs::write(k.join(KEY_NAME), public_pem(test_key())).unwrap();
    k
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A tar archive; `cut` drops the end-of-archive blocks (abuild-tar --cut).
fn tar_of(entries: &[Entry], cut: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        e.append(&mut b);
    }
    let mut out = b.into_inner().unwrap();
    if cut {
        out.truncate(out.len() - 1024);
    }
    out
}

#[derive(Clone, Debug)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    HardLink(String),
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Write the PAX checksum header (real packages do, for files and symlinks).
    pub pax: bool,
}

impl Entry {
    pub fn file(path: &str, data: &[u8], mode: u32) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File(data.to_vec()),
            mode,
            uid: 0,
            gid: 0,
            pax: true,
        }
    }
    pub fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            pax: false,
        }
    }
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Symlink(target.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            pax: true,
        }
    }
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::HardLink(target.into()),
            mode: 0o644,
            uid: 0,
            gid: 0,
            pax: false,
        }
    }
    pub fn owned(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    fn append(&self, b: &mut tar::Builder<Vec<u8>>) {
        let sha = match &self.kind {
            Kind::File(d) => Some(Sha1::digest(d)),
            Kind::Symlink(t) => Some(Sha1::digest(t.as_bytes())),
            _ => None,
        };
        if let (true, Some(sha)) = (self.pax, sha) {
            let hex: String = sha.iter().map(|x| format!("{x:02x}")).collect();
            let rec = pax_record("APK-TOOLS.checksum.SHA1", &hex);
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(rec.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_600_000_000);
            h.set_path(format!("PaxHeaders/{}", short(&self.path)))
                .unwrap();
            h.set_cksum();
            b.append(&h, rec.as_slice()).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(self.mode);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(1_600_000_000);
        // Raw names: the tar crate's set_path refuses '..', which hostile tests need.
        let name = self.path.as_bytes();
        assert!(name.len() <= 100, "test paths must fit a ustar name");
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        let data: &[u8] = match &self.kind {
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                d
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                &[]
            }
            Kind::Symlink(t) | Kind::HardLink(t) => {
                h.set_entry_type(if matches!(self.kind, Kind::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_size(0);
                let t = t.as_bytes();
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
                &[]
            }
        };
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
}

fn short(p: &str) -> String {
    p.chars()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<String>()
        .replace("..", "__")
}

fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// A package to build.
#[derive(Clone, Debug, Default)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub depends: Vec<String>,
    pub provides: Vec<String>,
    pub install_if: Vec<String>,
    pub provider_priority: Option<u32>,
    pub replaces: Vec<String>,
    pub files: Vec<Entry>,
    pub scripts: Vec<(String, Vec<u8>)>,
    /// Replace the data member after computing datahash (to test tampering).
    pub tamper_data: bool,
}

impl Pkg {
    pub fn new(name: &str, version: &str, arch: &str) -> Pkg {
        Pkg {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            ..Default::default()
        }
    }
}

/// A built package: its bytes and its APKINDEX record.
pub struct Built {
    pub bytes: Vec<u8>,
    pub index_record: String,
    pub file_name: String,
}

pub fn sign_segment(key: &RsaPrivateKey, key_name: &str, signed: &[u8]) -> Vec<u8> {
    let sig = key
        .sign(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(signed))
        .unwrap();
    let sig_entry = Entry {
        path: format!(".SIGN.RSA.{key_name}"),
        kind: Kind::File(sig),
        mode: 0o644,
        uid: 0,
        gid: 0,
        pax: false,
    };
    gzip(&tar_of(&[sig_entry], true))
}

pub fn build_package(p: &Pkg, key: &RsaPrivateKey) -> Built {
    let data_member = gzip(&tar_of(&p.files, false));
    let datahash: String = Sha256::digest(&data_member)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    let installed: usize = p
        .files
        .iter()
        .map(|f| match &f.kind {
            Kind::File(d) => d.len().div_ceil(4096) * 4096,
            _ => 0,
        })
        .sum();
    let mut info = format!(
        "# Generated by the osbuilder tests\npkgname = {}\npkgver = {}\npkgdesc = test package {}\n\
         url = https://example.invalid/\nbuilddate = 1600000000\nsize = {installed}\narch = {}\n\
         origin = {}\nlicense = MIT\n",
        p.name, p.version, p.name, p.arch, p.name
    );
    for d in &p.depends {
        info.push_str(&format!("depend = {d}\n"));
    }
    for d in &p.provides {
        info.push_str(&format!("provides = {d}\n"));
    }
    if !p.install_if.is_empty() {
        info.push_str(&format!("install_if = {}\n", p.install_if.join(" ")));
    }
    if let Some(k) = p.provider_priority {
        info.push_str(&format!("provider_priority = {k}\n"));
    }
    for r in &p.replaces {
        info.push_str(&format!("replaces = {r}\n"));
    }
    info.push_str(&format!("datahash = {datahash}\n"));
    let mut control = vec![Entry::file(".PKGINFO", info.as_bytes(), 0o644)];
    control[0].pax = false;
    for (n, body) in &p.scripts {
        let mut e = Entry::file(n, body, 0o755);
        e.pax = false;
        control.push(e);
    }
    let control_member = gzip(&tar_of(&control, true));
    let sig_member = sign_segment(key, KEY_NAME, &control_member);
    let data_member = if p.tamper_data {
        let mut files = p.files.clone();
        files.push(Entry::file("etc/evil", b"injected\n", 0o644));
        gzip(&tar_of(&files, false))
    } else {
        data_member
    };
    let mut bytes = sig_member;
    bytes.extend(&control_member);
    bytes.extend(&data_member);
    let c = format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(Sha1::digest(&control_member))
    );
    let mut rec = format!(
        "C:{c}\nP:{}\nV:{}\nA:{}\nS:{}\nI:{installed}\nT:test package {}\nU:https://example.invalid/\nL:MIT\no:{}\nt:1600000000\n",
        p.name,
        p.version,
        p.arch,
        bytes.len(),
        p.name,
        p.name
    );
    if !p.depends.is_empty() {
        rec.push_str(&format!("D:{}\n", p.depends.join(" ")));
    }
    if !p.provides.is_empty() {
        rec.push_str(&format!("p:{}\n", p.provides.join(" ")));
    }
    if !p.install_if.is_empty() {
        rec.push_str(&format!("i:{}\n", p.install_if.join(" ")));
    }
    if let Some(k) = p.provider_priority {
        rec.push_str(&format!("k:{k}\n"));
    }
    if !p.replaces.is_empty() {
        rec.push_str(&format!("r:{}\n", p.replaces.join(" ")));
    }
    Built {
        bytes,
        index_record: rec,
        file_name: format!("{}-{}.apk", p.name, p.version),
    }
}

/// A signed APKINDEX.tar.gz over the records.
pub fn build_index(records: &[String], key: &RsaPrivateKey, description: &str) -> Vec<u8> {
    let mut text = String::new();
    for r in records {
        text.push_str(r);
        text.push('\n');
    }
    let entries = [
        Entry {
            pax: false,
            ..Entry::file("DESCRIPTION", description.as_bytes(), 0o644)
        },
        Entry {
            pax: false,
            ..Entry::file("APKINDEX", text.as_bytes(), 0o644)
        },
    ];
    let index_member = gzip(&tar_of(&entries, false));
    let mut out = sign_segment(key, KEY_NAME, &index_member);
    out.extend(index_member);
    out
}

/// Write a repository `MIRROR/v<ver>/main/<arch>/` with the packages and a signed index.
pub fn write_repo(mirror: &Path, release: &str, arch: &str, pkgs: &[Pkg], key: &RsaPrivateKey) {
    let dir = mirror.join(release).join("main").join(arch);
    std::fs::create_dir_all(&dir).unwrap();
    let mut records = Vec::new();
    for p in pkgs {
        let b = build_package(p, key);
        std::fs::write(dir.join(&b.file_name), &b.bytes).unwrap();
        records.push(b.index_record);
    }
    std::fs::write(
        dir.join("APKINDEX.tar.gz"),
        build_index(&records, key, &format!("{release} test repository")),
    )
    .unwrap();
}

/// Serve `root` over HTTP/1.1 on 127.0.0.1 (GET only, one `bytes=A-B` range at most,
/// one thread per connection).
/// Returns the base URL. The server lives until the test process exits.
pub fn serve(root: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                // `Range: bytes=A-B` (what reading an rpm's header alone sends)
                let mut range: Option<(usize, usize)> = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let lower = h.trim().to_ascii_lowercase();
                    if let Some(r) = lower.strip_prefix("range: bytes=") {
                        if let Some((a, b)) = r.split_once('-') {
                            range = a.parse().ok().zip(b.parse().ok());
                        }
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let rel = path.trim_start_matches('/');
                let file = root.join(rel);
                let body = if rel.split('/').any(|c| c == "..") {
                    None
                } else {
                    std::fs::read(&file).ok()
                };
                let _ = match body {
                    Some(b) if range.is_some_and(|(a, z)| a <= z && z < b.len()) => {
                        let (a, z) = range.unwrap();
                        conn.write_all(
                            format!(
                                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{z}/{}\r\n\
                                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                                b.len(),
                                z + 1 - a
                            )
                            .as_bytes(),
                        )
                        .and_then(|_| conn.write_all(&b[a..=z]))
                    }
                    Some(b) => conn
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                b.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|_| conn.write_all(&b)),
                    None => conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
                let _ = conn.flush();
                let _ = conn.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// The arch of [`sample_packages`] (the host's busybox is in it).
pub const SAMPLE_ARCH: &str = "x86_64";

/// The applet paths busybox lists (`--list-full`), as Alpine ships them in
/// /etc/busybox-paths.d.
fn busybox_paths() -> String {
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// A small Alpine-like repository for [`SAMPLE_ARCH`]: baselayout (data + dirs), busybox, a library
/// reached through `so:`, an install_if doc package, and the alpine-base meta package.
pub fn sample_packages(with_paths_list: bool) -> Vec<Pkg> {
    let mut data = Pkg::new("alpine-baselayout-data", "3.6.8-r1", "noarch");
    data.files = vec![
        Entry::dir("etc"),
        Entry::file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        Entry::file("etc/group", b"root:x:0:root\nshadow:x:42:\n", 0o644),
        Entry::file("etc/shadow", b"root:*::0:::::\n", 0o640),
        Entry::file("etc/hostname", b"osbuilder\n", 0o644),
        Entry::file(
            "etc/inittab",
            b"::sysinit:/bin/echo OSBUILDER-ALPINE-READY\n::sysinit:/bin/busybox poweroff -f\n",
            0o644,
        ),
    ];
    let mut base = Pkg::new("alpine-baselayout", "3.6.8-r1", SAMPLE_ARCH);
    base.depends = vec!["alpine-baselayout-data=3.6.8-r1".into(), "/bin/sh".into()];
    base.files = vec![
        Entry::dir("dev"),
        Entry::dir("proc"),
        Entry::dir("sys"),
        Entry::dir("etc"),
        Entry::dir("etc/crontabs"),
        Entry::file(
            "etc/crontabs/root",
            b"# min hour day month weekday command\n",
            0o600,
        ),
        Entry {
            mode: 0o700,
            ..Entry::dir("root")
        },
        Entry {
            mode: 0o1777,
            ..Entry::dir("tmp")
        },
        Entry::dir("var"),
        Entry::symlink("var/run", "/run"),
        Entry::dir("run"),
    ];
    base.scripts = vec![(
        ".post-install".into(),
        b"#!/bin/sh\nchmod 640 /etc/shadow\n".to_vec(),
    )];
    let mut bb = Pkg::new("busybox", "1.35.0-r99", SAMPLE_ARCH);
    bb.provides = vec!["/bin/sh".into(), "cmd:busybox=1.35.0-r99".into()];
    bb.depends = vec!["so:libosb.so.1".into()];
    bb.files = vec![
        Entry::dir("bin"),
        Entry::file("bin/busybox", &super::static_busybox(), 0o755),
        Entry::dir("etc"),
        Entry::file("etc/securetty", b"console\n", 0o644),
    ];
    if with_paths_list {
        bb.files.push(Entry::dir("etc/busybox-paths.d"));
        bb.files.push(Entry::file(
            "etc/busybox-paths.d/busybox",
            busybox_paths().as_bytes(),
            0o644,
        ));
    }
    bb.scripts = vec![(
        ".post-install".into(),
        b"#!/bin/busybox sh\n/bin/busybox --install -s\n".to_vec(),
    )];
    let mut lib = Pkg::new("libosb", "1.0-r0", SAMPLE_ARCH);
    lib.provides = vec!["so:libosb.so.1=1.0.0".into()];
    lib.files = vec![
        Entry::dir("usr"),
        Entry::dir("usr/lib"),
        Entry::file("usr/lib/libosb.so.1", b"not really a library\n", 0o755),
        Entry::hardlink("usr/lib/libosb.so.1.0", "usr/lib/libosb.so.1"),
    ];
    // An older libosb that must lose to 1.0-r0.
    let mut lib_old = Pkg::new("libosb", "0.9_rc1-r3", SAMPLE_ARCH);
    lib_old.provides = vec!["so:libosb.so.1=0.9".into()];
    lib_old.files = vec![Entry::dir("usr")];
    let mut doc = Pkg::new("busybox-doc", "1.35.0-r99", "noarch");
    doc.install_if = vec!["docs".into(), "busybox=1.35.0-r99".into()];
    doc.files = vec![
        Entry::dir("usr"),
        Entry::dir("usr/share"),
        Entry::file("usr/share/bb.txt", b"doc\n", 0o644),
    ];
    let mut docs = Pkg::new("docs", "0.2-r0", "noarch");
    docs.files = vec![];
    let mut meta = Pkg::new("alpine-base", "3.22.0-r0", SAMPLE_ARCH);
    meta.depends = vec!["alpine-baselayout".into(), "busybox".into(), "docs".into()];
    vec![data, base, bb, lib, lib_old, doc, docs, meta]
}

/// [`sample_packages`] written, signed and served: `mirror` for `--mirror`, `keys` for
/// `--keys-dir`, `dir` a scratch folder that lives as long as the value.
pub struct Sample {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub mirror: String,
    pub keys: PathBuf,
}

/// The sample repository (release v3.22), served on 127.0.0.1. `with_paths_list`: busybox
/// ships its applet list.
pub fn sample(with_paths_list: bool) -> Sample {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let www = dir.join("www");
    write_repo(
        &www,
        "v3.22",
        SAMPLE_ARCH,
        &sample_packages(with_paths_list),
        test_key(),
    );
    let keys = write_keys_dir(&dir);
    Sample {
        mirror: serve(&www),
        _dir: d,
        dir,
        keys,
    }
}

impl Sample {
    /// `osbuilder rootfs --distro alpine --agent-init` of alpine-base from the sample
    /// repository (its own download cache), into `out`.
    pub fn rootfs(&self, out: &Path) -> std::process::Command {
        let mut c = super::osbuilder();
        c.args([
            "rootfs",
            "--distro",
            "alpine",
            "--agent-init",
            "--arch",
            SAMPLE_ARCH,
            "--os-version",
            "3.22",
        ])
        .args(["--mirror", &self.mirror])
        .arg("--keys-dir")
        .arg(&self.keys)
        .args(["--packages", "alpine-base"])
        .arg("-o")
        .arg(out)
        .env("OSBUILDER_CACHE_DIR", self.dir.join("cache"))
        .env("SOURCE_DATE_EPOCH", "1700000000");
        c
    }
}
