//! Test helpers: build .deb files and a signed APT repository, and serve it on 127.0.0.1.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

/// One member of a test package's data archive. Names are written raw (hostile ones too).
pub enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32, u32, u32), // name, data, mode, uid, gid
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Char(&'a str, u32, u32),
}

fn header(
    kind: tar::EntryType,
    name: &str,
    link: &str,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(uid as u64);
    h.set_gid(gid as u64);
    h.set_mtime(1_700_000_000);
    if matches!(kind, tar::EntryType::Char) {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    let g = h.as_gnu_mut().unwrap();
    g.name[..name.len()].copy_from_slice(name.as_bytes());
    g.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    h
}

pub fn data_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (tar::Header, &[u8]) = match e {
            E::Dir(n) => (
                header(tar::EntryType::Directory, n, "", 0, 0o755, 0, 0),
                b"",
            ),
            E::File(n, d, m, u, g) => (
                header(tar::EntryType::Regular, n, "", d.len() as u64, *m, *u, *g),
                d,
            ),
            E::Symlink(n, t) => (header(tar::EntryType::Symlink, n, t, 0, 0o777, 0, 0), b""),
            E::HardLink(n, t) => (header(tar::EntryType::Link, n, t, 0, 0o644, 0, 0), b""),
            E::Char(n, _, _) => (header(tar::EntryType::Char, n, "", 0, 0o666, 0, 0), b""),
        };
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A .deb with the given control stanza (without trailing newline) and data entries.
pub fn make_deb(control: &str, entries: &[E], postinst: Option<&str>) -> Vec<u8> {
    make_deb_compressed(control, entries, postinst, "xz")
}

/// As `make_deb`, with the data member compressed as "xz", "zst" (Ubuntu's default) or "gz".
pub fn make_deb_compressed(
    control: &str,
    entries: &[E],
    postinst: Option<&str>,
    comp: &str,
) -> Vec<u8> {
    let mut ctl = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], mode: u32| {
        let h = header(
            tar::EntryType::Regular,
            name,
            "",
            data.len() as u64,
            mode,
            0,
            0,
        );
        ctl.append(&h, data).unwrap();
    };
    add("./control", format!("{control}\n").as_bytes(), 0o644);
    if let Some(p) = postinst {
        add("./postinst", p.as_bytes(), 0o755);
    }
    // md5sums of regular files, as dh_md5sums writes them.
    let sums: String = entries
        .iter()
        .filter_map(|e| match e {
            E::File(n, d, ..) => Some(format!(
                "{:x}  {}\n",
                md5::Md5::digest(d),
                n.trim_start_matches("./")
            )),
            _ => None,
        })
        .collect();
    if !sums.is_empty() {
        add("./md5sums", sums.as_bytes(), 0o644);
    }
    let ctl = ctl.into_inner().unwrap();
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let data = data_tar(entries);
    let (data_name, data_body) = match comp {
        "zst" => ("data.tar.zst", zstd::encode_all(&data[..], 3).unwrap()),
        "gz" => ("data.tar.gz", gz(&data)),
        _ => {
            let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
            xz.write_all(&data).unwrap();
            ("data.tar.xz", xz.finish().unwrap())
        }
    };
    let mut ar = ar::Builder::new(Vec::new());
    for (name, body) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", gz(&ctl)),
        (data_name, data_body),
    ] {
        let mut h = ar::Header::new(name.as_bytes().to_vec(), body.len() as u64);
        h.set_mode(0o644);
        ar.append(&h, &body[..]).unwrap();
    }
    ar.into_inner().unwrap()
}

pub struct Pkg {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub extra: String,
    pub deb: Vec<u8>,
}

/// `extra` holds additional control fields ("Depends: x\n").
pub fn pkg(name: &str, version: &str, arch: &str, extra: &str, entries: &[E]) -> Pkg {
    pkg_with_script(name, version, arch, extra, entries, None)
}

/// A package whose data member is zstd-compressed, as Ubuntu builds them.
pub fn pkg_zst(name: &str, version: &str, arch: &str, extra: &str, entries: &[E]) -> Pkg {
    let mut p = pkg(name, version, arch, extra, entries);
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: Test <t@example.invalid>\n{extra}Description: test package {name}"
    );
    p.deb = make_deb_compressed(control.trim_end(), entries, None, "zst");
    p
}

pub fn pkg_with_script(
    name: &str,
    version: &str,
    arch: &str,
    extra: &str,
    entries: &[E],
    postinst: Option<&str>,
) -> Pkg {
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: Test <t@example.invalid>\n{extra}Description: test package {name}"
    );
    Pkg {
        name: name.into(),
        version: version.into(),
        arch: arch.into(),
        extra: extra.into(),
        deb: make_deb(control.trim_end(), entries, postinst),
    }
}

pub struct Gpg {
    pub home: PathBuf,
    pub public: PathBuf,
}

/// A fresh signing key in its own GNUPGHOME; the public key exported armored.
pub fn gpg_key(dir: &Path, name: &str) -> Gpg {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&home).unwrap().permissions(),
        0o700,
    );
    Command::new("chmod")
        .arg("700")
        .arg(&home)
        .status()
        .unwrap();
    let st = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--quiet", "--passphrase", "", "--quick-gen-key"])
        .arg(format!("{name} <{name}@example.invalid>"))
        .args(["ed25519", "sign", "never"])
        .status()
        .expect("gpg is needed for these tests (apt-get install gpg)");
    assert!(st.success());
    let public = dir.join(format!("{name}.asc"));
    let out = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--armor", "--export"])
        .output()
        .unwrap();
    std::fs::write(&public, out.stdout).unwrap();
    Gpg { home, public }
}

pub fn clearsign(g: &Gpg, text: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gpg")
        .env("GNUPGHOME", &g.home)
        .args([
            "--batch",
            "--quiet",
            "--clearsign",
            "--digest-algo",
            "SHA256",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

pub fn sha256(d: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(d))
}

/// Write a repository for `arch` under `root` (the mirror URL's folder):
/// pool/, dists/<suite>/main/binary-<arch>/Packages.gz, Release, InRelease.
pub fn write_repo(
    root: &Path,
    suite: &str,
    arch: &str,
    pkgs: &[Pkg],
    key: &Gpg,
    extra_release: &str,
) {
    let mut packages = String::new();
    for p in pkgs {
        let file = format!(
            "pool/main/{}_{}_{}.deb",
            p.name,
            p.version.replace(':', "%3a"),
            p.arch
        );
        let path = root.join(&file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &p.deb).unwrap();
        packages.push_str(&format!(
            "Package: {}\nVersion: {}\nArchitecture: {}\n{}Filename: {file}\nSize: {}\nSHA256: {}\nDescription: test\n\n",
            p.name,
            p.version,
            p.arch,
            p.extra,
            p.deb.len(),
            sha256(&p.deb)
        ));
    }
    let dists = root.join("dists").join(suite);
    let bin = dists.join(format!("main/binary-{arch}"));
    std::fs::create_dir_all(&bin).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(packages.as_bytes()).unwrap();
    let gzdata = gz.finish().unwrap();
    std::fs::write(bin.join("Packages.gz"), &gzdata).unwrap();
    std::fs::write(bin.join("Packages"), packages.as_bytes()).unwrap();
    let release = format!(
        "Origin: Test\nSuite: {suite}\nCodename: {suite}\nDate: Sat, 01 Nov 2025 00:00:00 UTC\n{extra_release}Architectures: {arch}\nComponents: main\nSHA256:\n {} {} main/binary-{arch}/Packages.gz\n {} {} main/binary-{arch}/Packages\n",
        sha256(&gzdata),
        gzdata.len(),
        sha256(packages.as_bytes()),
        packages.len()
    );
    std::fs::write(dists.join("Release"), &release).unwrap();
    std::fs::write(dists.join("InRelease"), clearsign(key, release.as_bytes())).unwrap();
}

/// A repository written by [`write_repo`] under `www/<subdir>` of a fresh folder (mode
/// 755, so an unprivileged build can read it), signed with a fresh key and served: `url` is
/// the mirror (`--mirror`), `key.public` the keyring to trust (`--keyring`).
pub struct Repo {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub url: String,
    pub key: Gpg,
}

pub fn signed_repo(subdir: &str, suite: &str, arch: &str, pkgs: &[Pkg]) -> Repo {
    let dir = tempfile::tempdir().unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(dir.path())
        .status()
        .unwrap();
    let key = gpg_key(dir.path(), "repo");
    let root = dir.path().join("www").join(subdir);
    std::fs::create_dir_all(&root).unwrap();
    write_repo(&root, suite, arch, pkgs, &key, "");
    let url = format!("{}/{subdir}", serve(&dir.path().join("www")));
    Repo {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        url,
        key,
    }
}

/// Serve `root` over HTTP on 127.0.0.1 (GET only) from a background thread.
pub fn serve(root: &Path) -> String {
    serve_with(root, |_| Fault::None)
}

/// What the test server does with one request: the faults of a flaky mirror.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    None,
    /// Half the body, then nothing more (the connection stays open).
    StallForever,
    /// Half the body, a pause, then the rest.
    Pause(std::time::Duration),
    /// Half the body, then the connection closes.
    Truncate,
    /// 404, as a mirror that lists a file in its index but does not serve it.
    NotFound,
}

/// Like [`serve`], with `fault(path)` deciding what happens to each request.
pub fn serve_with(root: &Path, fault: impl Fn(&str) -> Fault + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = root.to_path_buf();
    let fault = std::sync::Arc::new(fault);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let root = root.clone();
            let fault = fault.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&buf);
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let rel = path.trim_start_matches('/');
                let file = root.join(rel);
                let not_found =
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                if rel.split('/').any(|c| c == "..") || !file.is_file() {
                    let _ = s.write_all(not_found);
                    return;
                }
                let body = std::fs::read(&file).unwrap();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let half = body.len() / 2;
                match fault(&path) {
                    Fault::None => {
                        let _ = s.write_all(&[head.as_bytes(), &body].concat());
                    }
                    Fault::NotFound => {
                        let _ = s.write_all(not_found);
                    }
                    f => {
                        let _ = s.write_all(&[head.as_bytes(), &body[..half]].concat());
                        let _ = s.flush();
                        match f {
                            Fault::StallForever => {
                                std::thread::sleep(std::time::Duration::from_secs(3600))
                            }
                            Fault::Pause(d) => {
                                std::thread::sleep(d);
                                let _ = s.write_all(&body[half..]);
                            }
                            _ => {} // Truncate: the connection closes here
                        }
                    }
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

pub fn osbuilder() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osbuilder"));
    c.env_remove("OSBUILDER_MIRROR")
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

/// Run and return (success, stdout, stderr).
pub fn run(c: &mut Command) -> (bool, String, String) {
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
