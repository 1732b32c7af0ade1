//! Test helper: Debian's kernels and static busybox, fetched with the host's own APT.
//!
//! Until `osbuilder kernel fetch` exists, boot tests get their kernels here: APT runs with a
//! private state and cache directory under the cargo target dir and a single foreign or native
//! architecture, so it reads the mirror from the host's sources (never a hard-coded host),
//! verifies the Release signature and package hashes itself, and leaves the host's APT state
//! alone. Extracted files are cached, so later runs need no network at all.
//!
//! When the mirror cannot be reached the helpers return None after printing why; the calling
//! test then skips. Any other failure panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `<target>/tmp/debian-cache`: shared by every test binary, kept between runs.
pub fn cache_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-cache")
}

/// Debian's cloud kernel for `deb_arch` ("amd64", "arm64"): the path of its vmlinuz.
pub fn cloud_kernel(deb_arch: &str) -> Option<PathBuf> {
    let dir = fetch(
        deb_arch,
        &format!("linux-image-cloud-{deb_arch}"),
        "./boot/vmlinuz-*",
    )?;
    let boot = dir.join("boot");
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(&boot)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    kernels.sort();
    Some(
        kernels
            .pop()
            .expect("the kernel package holds boot/vmlinuz-*"),
    )
}

/// Debian's static busybox for `deb_arch`.
pub fn static_busybox(deb_arch: &str) -> Option<PathBuf> {
    let dir = fetch(deb_arch, "busybox-static", "./bin/busybox")?;
    Some(dir.join("bin/busybox"))
}

/// Download `package` (resolving a metapackage to the package it depends on) for `arch` and
/// extract the members matching `pattern` into a cached directory, which is returned.
fn fetch(arch: &str, package: &str, pattern: &str) -> Option<PathBuf> {
    let root = cache_root();
    std::fs::create_dir_all(&root).unwrap();
    let _lock = Lock::take(&root.join(format!("{arch}.lock")));
    let dest = root.join(format!("{arch}-{package}"));
    if dest.join(".done").exists() {
        return Some(dest);
    }
    let apt = Apt::new(&root.join(format!("apt-{arch}")), arch);
    if let Err(why) = apt.update() {
        eprintln!("SKIP: the Debian mirror from the host's APT sources is unreachable: {why}");
        return None;
    }
    let real = apt.resolve(package);
    let deb = apt.download(&real);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    extract(&deb, &dest, pattern);
    std::fs::write(dest.join(".done"), format!("{real}\n")).unwrap();
    Some(dest)
}

struct Apt {
    dir: PathBuf,
    arch: String,
}

impl Apt {
    fn new(dir: &Path, arch: &str) -> Apt {
        for d in ["state/lists/partial", "cache/archives/partial", "debs"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let status = dir.join("state/status");
        if !status.exists() {
            std::fs::write(&status, "").unwrap();
        }
        Apt {
            dir: dir.to_path_buf(),
            arch: arch.to_string(),
        }
    }

    fn cmd(&self, tool: &str) -> Command {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let mut c = Command::new(tool);
        for o in [
            format!("Dir::State={}", d("state")),
            format!("Dir::State::status={}", d("state/status")),
            format!("Dir::Cache={}", d("cache")),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures::={}", self.arch),
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "Acquire::Retries=2".into(),
            "Acquire::http::Timeout=20".into(),
            // As root, APT drops to _apt for downloads, which cannot write our private dirs.
            "APT::Sandbox::User=root".into(),
        ] {
            c.arg("-o").arg(o);
        }
        c.stdin(Stdio::null());
        c
    }

    /// `apt-get update`; Err(reason) when the mirror could not be reached.
    fn update(&self) -> Result<(), String> {
        let out = self
            .cmd("apt-get")
            .args(["-q", "update"])
            .output()
            .expect("apt-get is needed for the boot tests (Debian package apt)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let has_packages = std::fs::read_dir(self.dir.join("state/lists"))
            .unwrap()
            .any(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.contains(&format!("binary-{}_Packages", self.arch))
            });
        if out.status.success() && has_packages {
            return Ok(());
        }
        let network = [
            "Could not resolve",
            "Temporary failure resolving",
            "Could not connect",
            "Connection failed",
            "Unable to connect",
            "Network is unreachable",
            "Connection timed out",
        ];
        if network.iter().any(|n| text.contains(n)) {
            return Err(text
                .lines()
                .find(|l| l.starts_with(['E', 'W']))
                .unwrap_or("")
                .into());
        }
        panic!(
            "apt-get update for {} failed ({}):\n{text}",
            self.arch, out.status
        );
    }

    /// A metapackage (linux-image-cloud-arm64) → the real package it depends on.
    fn resolve(&self, package: &str) -> String {
        let out = self
            .cmd("apt-cache")
            .args(["depends", package])
            .output()
            .unwrap();
        assert!(out.status.success(), "apt-cache depends {package}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        // The first Depends: line names the newest candidate's dependency.
        match text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|d| d.starts_with("linux-image-"))
        {
            Some(real) if package.starts_with("linux-image-") => real.trim().to_string(),
            _ => package.to_string(),
        }
    }

    fn download(&self, package: &str) -> PathBuf {
        let debs = self.dir.join("debs");
        let out = self
            .cmd("apt-get")
            .args(["-q", "download", package])
            .current_dir(&debs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "apt-get download {package} ({}) failed: {}",
            self.arch,
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = format!("{package}_");
        std::fs::read_dir(&debs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .expect("apt-get download wrote the .deb")
    }
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x PATTERN`: only what the tests need.
fn extract(deb: &Path, dest: &Path, pattern: &str) {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .expect("dpkg-deb (Debian package dpkg)");
    let status = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(dest)
        .arg(pattern)
        .stdin(dpkg.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(
        dpkg.wait().unwrap().success() && status.success(),
        "extracting {}",
        deb.display()
    );
}

/// An exclusive lock on a file (released when dropped): test threads and test binaries
/// fetching the same arch wait for each other instead of racing in one APT directory.
struct Lock(#[allow(dead_code)] std::fs::File);

impl Lock {
    fn take(path: &Path) -> Lock {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::create(path).unwrap();
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        Lock(f)
    }
}
