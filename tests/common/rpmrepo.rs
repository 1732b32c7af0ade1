//! Hermetic rpm-md repositories for the rpm backend's tests: packages built with the real
//! tools (`rpmbuild` from a generated spec with one subpackage per package, signed with
//! `rpmsign`), hostile packages written by hand (header, signature made with gpg, cpio
//! payload — what rpmbuild would never produce), `createrepo_c` for the metadata and gpg
//! for `repomd.xml.asc`; served on 127.0.0.1.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::Digest;

/// The tools these repositories need, as (program, Debian package).
pub const TOOLS: &[(&str, &str)] = &[
    ("rpmbuild", "rpm"),
    ("rpmsign", "rpm"),
    ("rpm", "rpm"),
    ("createrepo_c", "createrepo-c"),
    ("gpg", "gnupg"),
];

/// A signing key in its own GNUPGHOME, the public key exported armored.
pub struct Gpg {
    pub home: PathBuf,
    pub public: PathBuf,
    pub name: String,
}

/// A fresh RSA signing key (Microsoft signs Azure Linux with RSA).
pub fn gpg_key(dir: &Path, name: &str) -> Gpg {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    assert!(
        Command::new("chmod")
            .arg("700")
            .arg(&home)
            .status()
            .unwrap()
            .success()
    );
    let uid = format!("{name} <{name}@example.invalid>");
    let st = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--quiet", "--passphrase", "", "--quick-gen-key"])
        .arg(&uid)
        .args(["rsa2048", "sign", "never"])
        .status()
        .unwrap();
    assert!(st.success(), "gpg --quick-gen-key failed");
    let public = dir.join(format!("{name}.asc"));
    let out = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--armor", "--export"])
        .output()
        .unwrap();
    std::fs::write(&public, out.stdout).unwrap();
    Gpg {
        home,
        public,
        name: uid,
    }
}

/// A detached signature over `data` (binary, or armored for repomd.xml.asc).
pub fn detach_sign(g: &Gpg, data: &[u8], armor: bool) -> Vec<u8> {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", &g.home).args([
        "--batch",
        "--quiet",
        "--detach-sign",
        "--digest-algo",
        "SHA256",
    ]);
    if armor {
        c.arg("--armor");
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "gpg --detach-sign failed");
    out.stdout
}

/// One file of a subpackage built by rpmbuild.
pub enum F<'a> {
    /// path, content, mode, user, group
    File(&'a str, &'a [u8], u32, &'a str, &'a str),
    /// A file copied from the host (Debian's static busybox), mode 0755.
    Host(&'a str, &'a str),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    /// A hard link to an earlier File of the same package.
    HardLink(&'a str, &'a str),
    /// `%dev(c, major, minor)` with mode 0600.
    CharDev(&'a str, u32, u32),
    /// `%config(noreplace)`.
    Config(&'a str, &'a [u8]),
    /// `%ghost`.
    Ghost(&'a str),
    /// `%caps(...)` on a file.
    Caps(&'a str, &'a [u8], &'a str),
}

/// One binary package built by rpmbuild.
pub struct Spec<'a> {
    pub name: &'a str,
    pub arch: &'a str,
    /// Lines such as `Requires: /bin/sh`, `Provides: x`, `Conflicts: y`.
    pub deps: Vec<String>,
    pub files: Vec<F<'a>>,
    /// `(section, interpreter, body)`, e.g. `("post", "<lua>", "print('x')")`.
    pub scripts: Vec<(&'a str, &'a str, &'a str)>,
}

impl<'a> Spec<'a> {
    pub fn new(name: &'a str, arch: &'a str) -> Spec<'a> {
        Spec {
            name,
            arch,
            deps: Vec::new(),
            files: Vec::new(),
            scripts: Vec::new(),
        }
    }
    pub fn dep(mut self, line: &str) -> Spec<'a> {
        self.deps.push(line.to_string());
        self
    }
    pub fn file(mut self, f: F<'a>) -> Spec<'a> {
        self.files.push(f);
        self
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Build every package of `specs` with rpmbuild into `out` (one spec per arch, one
/// subpackage per package), version `version`, reproducibly (SOURCE_DATE_EPOCH, clamped
/// mtimes, no build ids). `payload` is rpm's `_binary_payload` (`w6.gzdio`,
/// `w19.zstdio`, `w2.xzdio`). Returns the .rpm paths.
pub fn rpmbuild(
    work: &Path,
    out: &Path,
    specs: &[Spec<'_>],
    version: &str,
    payload_io: &str,
) -> Vec<PathBuf> {
    let mut built = Vec::new();
    let mut arches: Vec<&str> = specs.iter().map(|s| s.arch).collect();
    arches.sort();
    arches.dedup();
    for arch in arches {
        let top = work.join(format!("rpmbuild-{arch}"));
        let payload = work.join(format!("payload-{arch}"));
        std::fs::create_dir_all(&payload).unwrap();
        let mut spec = format!(
            "%global debug_package %{{nil}}\n%global __os_install_post %{{nil}}\n\
             %global _build_id_links none\n%global source_date_epoch_from_changelog 0\n\
             %global clamp_mtime_to_source_date_epoch 1\n%global use_source_date_epoch_as_buildtime 1\n\
             %global _binary_payload {payload_io}\n\
             Name: osbuilder-test-src\nVersion: {version}\nRelease: 1\nSummary: test\nLicense: MIT\n\
             BuildArch: {arch}\n%description\ntest packages\n"
        );
        let mut install = String::from("%install\n");
        let mut files_sections = String::new();
        for s in specs.iter().filter(|s| s.arch == arch) {
            spec.push_str(&format!(
                "%package -n {}\nSummary: {}\nAutoReqProv: no\n",
                s.name, s.name
            ));
            for d in &s.deps {
                spec.push_str(d);
                spec.push('\n');
            }
            spec.push_str(&format!("%description -n {}\n{} (test)\n", s.name, s.name));
            for (section, prog, body) in &s.scripts {
                spec.push_str(&format!("%{section} -n {} -p {prog}\n{body}\n", s.name));
            }
            let mut files = format!("%files -n {}\n", s.name);
            for f in &s.files {
                match f {
                    F::File(p, data, mode, user, group) => {
                        let src = payload.join(format!("{}{}", s.name, p.replace('/', "_")));
                        std::fs::write(&src, data).unwrap();
                        install.push_str(&format!(
                            "install -D -m 0644 {} %{{buildroot}}{p}\n",
                            shell_quote(&src.display().to_string())
                        ));
                        files.push_str(&format!("%attr({mode:o},{user},{group}) {p}\n"));
                    }
                    F::Host(p, from) => {
                        install.push_str(&format!("install -D -m 0755 {from} %{{buildroot}}{p}\n"));
                        files.push_str(&format!("%attr(755,root,root) {p}\n"));
                    }
                    F::Dir(p) => {
                        install.push_str(&format!("mkdir -p %{{buildroot}}{p}\n"));
                        files.push_str(&format!("%dir %attr(755,root,root) {p}\n"));
                    }
                    F::Symlink(p, t) => {
                        install.push_str(&format!(
                            "mkdir -p %{{buildroot}}$(dirname {p})\nln -sfn {} %{{buildroot}}{p}\n",
                            shell_quote(t)
                        ));
                        files.push_str(&format!("{p}\n"));
                    }
                    F::HardLink(p, t) => {
                        install.push_str(&format!(
                            "mkdir -p %{{buildroot}}$(dirname {p})\nln %{{buildroot}}{t} %{{buildroot}}{p}\n"
                        ));
                        // One inode: the link has its target's mode and owner, as rpmbuild
                        // would record them from a real buildroot.
                        let (mode, user, group) = s
                            .files
                            .iter()
                            .find_map(|f| match f {
                                F::File(q, _, m, u, g) if q == t => Some((*m, *u, *g)),
                                _ => None,
                            })
                            .expect("a HardLink names an earlier File of its package");
                        files.push_str(&format!("%attr({mode:o},{user},{group}) {p}\n"));
                    }
                    F::CharDev(p, major, minor) => {
                        files.push_str(&format!(
                            "%dev(c,{major},{minor}) %attr(600,root,root) {p}\n"
                        ));
                    }
                    F::Config(p, data) => {
                        let src = payload.join(format!("{}{}", s.name, p.replace('/', "_")));
                        std::fs::write(&src, data).unwrap();
                        install.push_str(&format!(
                            "install -D -m 0644 {} %{{buildroot}}{p}\n",
                            shell_quote(&src.display().to_string())
                        ));
                        files.push_str(&format!("%config(noreplace) %attr(644,root,root) {p}\n"));
                    }
                    F::Ghost(p) => {
                        install.push_str(&format!(
                            "mkdir -p %{{buildroot}}$(dirname {p})\ntouch %{{buildroot}}{p}\n"
                        ));
                        files.push_str(&format!("%ghost %attr(644,root,root) {p}\n"));
                    }
                    F::Caps(p, data, caps) => {
                        let src = payload.join(format!("{}{}", s.name, p.replace('/', "_")));
                        std::fs::write(&src, data).unwrap();
                        install.push_str(&format!(
                            "install -D -m 0755 {} %{{buildroot}}{p}\n",
                            shell_quote(&src.display().to_string())
                        ));
                        files.push_str(&format!("%caps({caps}) %attr(755,root,root) {p}\n"));
                    }
                }
            }
            files_sections.push_str(&files);
            files_sections.push('\n');
        }
        spec.push_str(&install);
        spec.push('\n');
        spec.push_str(&files_sections);
        let spec_path = work.join(format!("test-{arch}.spec"));
        std::fs::write(&spec_path, &spec).unwrap();
        let res = Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("--define")
            .arg(format!("_rpmdir {}", out.display()))
            // %% defers the expansion to each subpackage (a plain %{NAME} would expand now).
            .args([
                "--define",
                "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
            ])
            .args(["--target", arch])
            .arg(&spec_path)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "rpmbuild failed:\n{}\n{spec}",
            String::from_utf8_lossy(&res.stderr)
        );
        for s in specs.iter().filter(|s| s.arch == arch) {
            built.push(out.join(format!("{}-{version}-1.{arch}.rpm", s.name)));
        }
    }
    built
}

/// Sign packages in place with rpmsign (header signature, as rpm ≥ 4.16 makes).
pub fn rpmsign(g: &Gpg, files: &[PathBuf]) {
    // Debian's rpm names /usr/bin/gpg2 (package gnupg2); gnupg's gpg is the same program.
    let gpg = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("gpg"))
        .find(|p| p.is_file())
        .expect("gpg on PATH");
    let res = Command::new("rpmsign")
        .arg("--addsign")
        .arg("--define")
        .arg(format!("__gpg {}", gpg.display()))
        .arg("--define")
        .arg(format!("_gpg_name {}", g.name))
        .arg("--define")
        .arg(format!("_gpg_path {}", g.home.display()))
        .args(files)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "rpmsign failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
}

/// createrepo_c over `dir`, the XML compressed with `compress` (`gz`, `xz`, `bz2`: Debian's
/// createrepo_c 0.17 has no zstd); with a key, `repodata/repomd.xml.asc` too.
pub fn createrepo(dir: &Path, key: Option<&Gpg>, compress: &str) {
    let res = Command::new("createrepo_c")
        .args([
            "--quiet",
            "--no-database",
            "--simple-md-filenames",
            "--revision",
            "1700000000",
        ])
        .arg(format!("--general-compress-type={compress}"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "createrepo_c failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        dir.join(format!("repodata/primary.xml.{compress}"))
            .is_file(),
        "createrepo_c did not compress with {compress}"
    );
    if let Some(g) = key {
        let md = std::fs::read(dir.join("repodata/repomd.xml")).unwrap();
        std::fs::write(
            dir.join("repodata/repomd.xml.asc"),
            detach_sign(g, &md, true),
        )
        .unwrap();
    }
}

// ---- Hand-written packages (hostile cases) -------------------------------------------

/// One file as the header lists it.
#[derive(Clone)]
pub struct HFile {
    pub path: String,
    /// st_mode with type bits.
    pub mode: u32,
    pub data: Vec<u8>,
    pub linkto: String,
    pub rdev: u16,
}

impl HFile {
    pub fn file(path: &str, data: &[u8]) -> HFile {
        HFile {
            path: path.into(),
            mode: 0o100644,
            data: data.to_vec(),
            linkto: String::new(),
            rdev: 0,
        }
    }
    pub fn dir(path: &str) -> HFile {
        HFile {
            path: path.into(),
            mode: 0o040755,
            data: Vec::new(),
            linkto: String::new(),
            rdev: 0,
        }
    }
    pub fn symlink(path: &str, target: &str) -> HFile {
        HFile {
            path: path.into(),
            mode: 0o120777,
            data: Vec::new(),
            linkto: target.into(),
            rdev: 0,
        }
    }
    pub fn chardev(path: &str, major: u16, minor: u16) -> HFile {
        HFile {
            path: path.into(),
            mode: 0o020666,
            data: Vec::new(),
            linkto: String::new(),
            rdev: (major << 8) | minor,
        }
    }
}

/// One cpio entry of a hand-written payload: name as archived, mode, content.
pub struct CEntry {
    pub name: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

impl CEntry {
    /// The entry rpm would write for a header file.
    pub fn of(f: &HFile) -> CEntry {
        CEntry {
            name: format!(".{}", f.path),
            mode: f.mode,
            data: if f.mode & 0o170000 == 0o120000 {
                f.linkto.as_bytes().to_vec()
            } else {
                f.data.clone()
            },
        }
    }
}

fn cpio(entries: &[CEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8], ino: usize| {
        out.extend_from_slice(
            format!(
                "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                0,
                0,
                1,
                1_700_000_000u32,
                data.len(),
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            )
            .as_bytes(),
        );
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, e) in entries.iter().enumerate() {
        push(&mut out, &e.name, e.mode, &e.data, i + 1);
    }
    push(&mut out, "TRAILER!!!", 0, b"", 0);
    out
}

/// Header entry value.
enum V {
    Str(String),
    Strs(Vec<String>),
    I16(Vec<u16>),
    I32(Vec<u32>),
    Bin(Vec<u8>),
}

/// An RPM header with an immutable region (`region` = 62 or 63), entries sorted by tag.
fn header(region: u32, mut tags: Vec<(u32, V)>) -> Vec<u8> {
    tags.sort_by_key(|t| t.0);
    let mut store = Vec::new();
    let mut index = Vec::new();
    for (tag, v) in &tags {
        let (ty, count, align, data): (u32, u32, usize, Vec<u8>) = match v {
            V::Str(s) => (6, 1, 1, [s.as_bytes(), b"\0"].concat()),
            V::Strs(v) => (
                8,
                v.len() as u32,
                1,
                v.iter()
                    .flat_map(|s| [s.as_bytes(), b"\0"].concat())
                    .collect(),
            ),
            V::I16(v) => (
                3,
                v.len() as u32,
                2,
                v.iter().flat_map(|x| x.to_be_bytes()).collect(),
            ),
            V::I32(v) => (
                4,
                v.len() as u32,
                4,
                v.iter().flat_map(|x| x.to_be_bytes()).collect(),
            ),
            V::Bin(b) => (7, b.len() as u32, 1, b.clone()),
        };
        while store.len() % align != 0 {
            store.push(0);
        }
        index.push((*tag, ty, store.len() as u32, count));
        store.extend_from_slice(&data);
    }
    // The region trailer: an entry naming the region, its offset the negated index size.
    let il = index.len() as u32 + 1;
    let trailer_off = store.len() as u32;
    store.extend_from_slice(&region.to_be_bytes());
    store.extend_from_slice(&7u32.to_be_bytes());
    store.extend_from_slice(&(-((il * 16) as i32)).to_be_bytes());
    store.extend_from_slice(&16u32.to_be_bytes());
    let mut out = vec![0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
    out.extend_from_slice(&il.to_be_bytes());
    out.extend_from_slice(&(store.len() as u32).to_be_bytes());
    for (tag, ty, off, count) in std::iter::once((region, 7, trailer_off, 16)).chain(index) {
        for v in [tag, ty, off, count] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out.extend_from_slice(&store);
    out
}

/// A hand-written, signed package: `files` as the header lists them, `payload` as the
/// cpio archive holds them (pass `CEntry::of` of each file for an honest one).
pub fn hand_rpm(name: &str, files: &[HFile], payload: &[CEntry], key: &Gpg) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&cpio(payload)).unwrap();
    let payload = gz.finish().unwrap();
    let mut dirs: Vec<String> = Vec::new();
    let (mut base, mut idx) = (Vec::new(), Vec::new());
    for f in files {
        let (d, b) = f.path.rsplit_once('/').unwrap();
        let d = format!("{d}/");
        let i = dirs.iter().position(|x| *x == d).unwrap_or_else(|| {
            dirs.push(d.clone());
            dirs.len() - 1
        });
        base.push(b.to_string());
        idx.push(i as u32);
    }
    let digest = |f: &HFile| {
        if f.mode & 0o170000 == 0o100000 {
            hex::encode(sha2::Sha256::digest(&f.data))
        } else {
            String::new()
        }
    };
    let mut tags = vec![
        (1000, V::Str(name.into())),
        (1001, V::Str("1".into())),
        (1002, V::Str("1".into())),
        (1004, V::Str("hostile test package".into())),
        (1005, V::Str("hostile test package".into())),
        (1006, V::I32(vec![1_700_000_000])),
        (
            1009,
            V::I32(vec![files.iter().map(|f| f.data.len() as u32).sum()]),
        ),
        (1014, V::Str("MIT".into())),
        (1016, V::Str("Unspecified".into())),
        (1021, V::Str("linux".into())),
        (1022, V::Str("x86_64".into())),
        (1124, V::Str("cpio".into())),
        (1125, V::Str("gzip".into())),
        (1126, V::Str("1".into())),
        (1047, V::Strs(vec![name.into()])),
        (1112, V::I32(vec![8])),
        (1113, V::Strs(vec!["1-1".into()])),
        (
            5092,
            V::Strs(vec![hex::encode(sha2::Sha256::digest(&payload))]),
        ),
        (5093, V::I32(vec![8])),
    ];
    if !files.is_empty() {
        tags.extend([
            (1116, V::I32(idx)),
            (1117, V::Strs(base)),
            (1118, V::Strs(dirs)),
            (
                1028,
                V::I32(files.iter().map(|f| f.data.len() as u32).collect()),
            ),
            (1030, V::I16(files.iter().map(|f| f.mode as u16).collect())),
            (1033, V::I16(files.iter().map(|f| f.rdev).collect())),
            (1034, V::I32(vec![1_700_000_000; files.len()])),
            (1035, V::Strs(files.iter().map(digest).collect())),
            (
                1036,
                V::Strs(files.iter().map(|f| f.linkto.clone()).collect()),
            ),
            (1037, V::I32(vec![0; files.len()])),
            (1039, V::Strs(vec!["root".into(); files.len()])),
            (1040, V::Strs(vec!["root".into(); files.len()])),
            (1095, V::I32(vec![1; files.len()])),
            (1096, V::I32((1..=files.len() as u32).collect())),
            (5011, V::I32(vec![8])),
        ]);
    }
    let main = header(63, tags);
    let sig = detach_sign(key, &main, false);
    let sighdr = header(
        62,
        vec![
            (268, V::Bin(sig)),
            (273, V::Str(hex::encode(sha2::Sha256::digest(&main)))),
            (1000, V::I32(vec![(main.len() + payload.len()) as u32])),
        ],
    );
    let mut lead = vec![0u8; 96];
    lead[..4].copy_from_slice(&[0xed, 0xab, 0xee, 0xdb]);
    lead[4] = 3;
    lead[7] = 0;
    let nevr = format!("{name}-1-1");
    lead[10..10 + nevr.len().min(65)].copy_from_slice(&nevr.as_bytes()[..nevr.len().min(65)]);
    lead[79] = 5;
    let mut out = lead;
    out.extend_from_slice(&sighdr);
    while out.len() % 8 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&main);
    out.extend_from_slice(&payload);
    out
}

/// SHA-256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}
