//! Shared by the container-build tests: podman in the settings these machines need, with a
//! storage of its own (vfs, under the cargo target dir, so the tests never touch the
//! machine's images and containers and a builder image is bootstrapped once per checkout);
//! the implicit builder image; leftover checks; and the native-vs-container parity check.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use super::common::needs;

/// `CONTAINERS_STORAGE_CONF` for every podman the tests (and the osbuilder they run) start.
pub fn storage_conf() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("podman");
    let conf = base.join("storage.conf");
    std::fs::create_dir_all(&base).unwrap();
    let text = format!(
        "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"/run/osbuilder-tests/podman-{:x}\"\n",
        base.join("graph").display(),
        fxhash(base.to_string_lossy().as_bytes())
    );
    if std::fs::read_to_string(&conf).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&conf, text).unwrap();
    }
    conf
}

fn fxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &c| {
        (h ^ c as u64).wrapping_mul(0x100000001b3)
    })
}

/// podman with the machine's workarounds and the tests' storage.
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args([
        "--runtime",
        "runc",
        "--cgroup-manager=cgroupfs",
        "--events-backend=file",
    ])
    .env("CONTAINERS_STORAGE_CONF", storage_conf());
    c
}

/// osbuilder using the tests' podman storage.
pub fn osb() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osbuilder"));
    c.env("CONTAINERS_STORAGE_CONF", storage_conf())
        .env_remove("OSBUILDER_MIRROR")
        .env_remove("OSBUILDER_OCI_RUNTIME")
        .env_remove("DOCKER_RUNTIME");
    c
}

/// The test can run podman builds here: root (rootless podman needs subordinate ids this
/// machine's test user does not have), podman and runc.
pub fn can_run_podman() -> bool {
    needs::root() && needs::tools(&[("podman", "podman"), ("runc", "runc")])
}

/// Run `cmd` and return its output and pid (the builder containers are named after it).
pub fn run_with_pid(cmd: &mut Command) -> (Output, u32) {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning osbuilder");
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

/// Containers (running or not) that osbuilder process `pid` made.
pub fn containers_of(pid: u32) -> Vec<String> {
    let out = podman()
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .expect("podman ps");
    assert!(out.status.success(), "podman ps -a failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(&format!("osbuilder-{pid}-")))
        .map(str::to_string)
        .collect()
}

/// Nothing but `allowed` names in `dir` (no partial rootfs, no keys folder).
pub fn only_in(dir: &Path, allowed: &[&str]) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    assert!(names.is_empty(), "left in {}: {names:?}", dir.display());
}

static IMAGE: Mutex<Option<String>> = Mutex::new(None);

/// Held while a test runs podman builds: one at a time (two builder containers started
/// together on 2 cores have made podman fail to start one, exit 126: a host limit).
pub fn one_build() -> std::sync::MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Debian builder image, made once per test binary with `osbuilder builder-image` (the
/// native bootstrap: no registry) and reused from the tests' storage afterwards. None (the
/// skip recorded) when the Debian mirror cannot be reached.
pub fn debian_builder_image() -> Option<String> {
    let mut slot = IMAGE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = slot.as_ref() {
        return Some(r.clone());
    }
    needs::mirror()?;
    let out = osb()
        .args(["builder-image", "--distro", "debian", "--cache-dir"])
        .arg(cache_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "builder-image failed:\n{err}");
    eprintln!("{err}");
    let r = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        r.starts_with("localhost/osbuilder/builder-debian-trixie:"),
        "{r}"
    );
    *slot = Some(r.clone());
    Some(r)
}

/// The download cache the container tests share.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("container-cache")
}

/// `dpkg-query -W` of a rootfs: "name:arch version" lines, sorted.
pub fn dpkg_list(root: &Path) -> Vec<String> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            "-f",
            "${Package}:${Architecture} ${Version} ${db:Status-Abbrev}\n",
        ])
        .output()
        .expect("dpkg-query (Debian package dpkg)");
    assert!(
        out.status.success(),
        "dpkg-query failed on {}",
        root.display()
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect();
    v.sort();
    v
}

/// The maintainer-script outputs a container build has and a native one does not (or has
/// otherwise), by class: what docs/container.md lists. Patterns: `*` within a path
/// component, `**` across them.
pub const SCRIPT_OUTPUTS: &[(&str, &[&str])] = &[
    (
        "device nodes and /dev links mmdebstrap puts in its archive",
        &["dev/**"],
    ),
    (
        "accounts made by adduser/useradd (ids in install order) and their backups",
        &[
            "etc/passwd",
            "etc/group",
            "etc/shadow",
            "etc/gshadow",
            "etc/passwd-",
            "etc/group-",
            "etc/shadow-",
            "etc/gshadow-",
            "etc/.pwd.lock",
            "etc/subuid",
            "etc/subgid",
            "etc/security/opasswd",
        ],
    ),
    (
        "dpkg, apt, debconf and ucf state (field order, -old copies, triggers, locks, diversions, statoverrides)",
        &[
            "var/lib/dpkg/**",
            "var/lib/apt/**",
            "var/cache/apt/**",
            "var/cache/debconf/**",
            "var/lib/ucf/**",
            "var/cache/ldconfig/**",
            "var/log/**",
        ],
    ),
    ("ldconfig's cache", &["etc/ld.so.cache"]),
    (
        "modes and owners set with dpkg-statoverride by postinst, which the native backend does not apply yet",
        &[
            "usr/lib/dbus-1.0/dbus-daemon-launch-helper",
            "var/lib/chrony",
            "var/log/chrony",
            "etc/chrony/chrony.keys",
        ],
    ),
    (
        "configuration written by postinst helpers (pam-auth-update, update-rc.d, add-shell, deb-systemd-helper, apparmor)",
        &[
            "etc/pam.d/common-*",
            "var/lib/pam/**",
            "etc/rc?.d/**",
            "etc/shells",
            "var/lib/shells.state",
            "etc/apparmor.d/local",
            "etc/apparmor.d/local/**",
            "var/lib/systemd/**",
            "etc/systemd/system/*.wants/*",
        ],
    ),
    (
        "files mmdebstrap writes (sources.list, fstab, hosts, hostname without newline, networks)",
        &[
            "etc/apt/sources.list",
            "etc/fstab",
            "etc/hosts",
            "etc/hostname",
            "etc/networks",
        ],
    ),
    (
        "/var/run and /var/lock as links to /run (base-files' postinst)",
        &["var/run", "var/lock"],
    ),
    (
        "what systemd's postinst has systemd-tmpfiles create (tmpfiles.d: credstore, private \
         dirs, /etc/mtab, /root/.ssh, locale and vconsole defaults): the native backend \
         reproduces it as mmdebstrap on the host does (tests/deb_parity.rs); in the builder \
         container it is not applied",
        &[
            "etc/credstore",
            "etc/credstore.encrypted",
            "etc/default/locale",
            "etc/mtab",
            "etc/vconsole.conf",
            "root/.ssh",
            "run/lock/subsys",
            "var/cache/private",
            "var/lib/private",
        ],
    ),
    (
        "osbuilder.yaml and the SBOM (whose namespace hashes osbuilder.yaml): a native build \
         records what the maintainer scripts do that it did not reproduce (the container ran \
         them all)",
        &[
            "var/lib/osbuilder/osbuilder.yaml",
            "var/lib/osbuilder/sbom.spdx.json",
        ],
    ),
];

/// What dnf and rpm in the builder container leave that a native rpm build does not make (and
/// the other way round), by class: what docs/container.md lists for rpm distros.
pub const RPM_OUTPUTS: &[(&str, &[&str])] = &[
    (
        "rpm's database as rpm writes it (its own row layout and indexes, the gpg-pubkey \
         entry of each key dnf imported to verify packages, the WAL, shm and lock files)",
        &["var/lib/rpm/**"],
    ),
    (
        "dnf's state, logs and scratch folders (history database, dnf.log, dnf.rpm.log, \
         dnf.librepo.log, hawkey.log, /etc/dnf/modules.d, /var/cache, /var/tmp)",
        &[
            "var/lib/dnf",
            "var/lib/dnf/**",
            "var/log",
            "var/log/dnf*.log",
            "var/log/hawkey.log",
            "etc/dnf",
            "etc/dnf/**",
            "var/cache",
            "var/tmp",
        ],
    ),
    (
        "the device nodes the native backend makes for a guest (/dev/console, /dev/null: an \
         initrd needs them; in the container the engine provides /dev and rpm makes none)",
        &["dev", "dev/**"],
    ),
    (
        "osbuilder.yaml and the SBOM (whose namespace hashes osbuilder.yaml): a native build \
         records the scriptlets it did not run (the container ran them all)",
        &[
            "var/lib/osbuilder/osbuilder.yaml",
            "var/lib/osbuilder/sbom.spdx.json",
        ],
    ),
];

fn glob(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) if pat.get(1) == Some(&b'*') => {
            (0..=s.len()).any(|i| glob(&pat[2..], &s[i..]))
        }
        (Some(b'*'), _) => (0..=s.len())
            .take_while(|&i| i == 0 || s[i - 1] != b'/')
            .any(|i| glob(&pat[1..], &s[i..])),
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&pat[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// The class of a differing path, if the documented list explains it.
pub fn explained<'a>(path: &str, extra: &'a [(&'a str, &'a [&'a str])]) -> Option<&'a str> {
    explained_by(SCRIPT_OUTPUTS, path, extra)
}

/// The same with another documented list (`RPM_OUTPUTS`).
pub fn explained_by<'a>(
    classes: &'a [(&'a str, &'a [&'a str])],
    path: &str,
    extra: &'a [(&'a str, &'a [&'a str])],
) -> Option<&'a str> {
    classes
        .iter()
        .chain(extra.iter())
        .find(|(_, pats)| pats.iter().any(|p| glob(p.as_bytes(), path.as_bytes())))
        .map(|(class, _)| *class)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: char,
    perm: u32,
    owner: (String, String),
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
}

fn names(root: &Path, file: &str) -> BTreeMap<u32, String> {
    std::fs::read_to_string(root.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f[0].to_string()))
        })
        .collect()
}

/// Every path of a rootfs, owners by name (ids of system users depend on install order).
fn tree(root: &Path) -> BTreeMap<String, Node> {
    let users = names(root, "etc/passwd");
    let groups = names(root, "etc/group");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                'o'
            };
            let name = |m: &BTreeMap<u32, String>, id: u32| {
                m.get(&id).cloned().unwrap_or_else(|| id.to_string())
            };
            out.insert(
                rel,
                Node {
                    kind,
                    perm: md.mode() & 0o7777,
                    owner: (name(&users, md.uid()), name(&groups, md.gid())),
                    content: (kind == 'f').then(|| std::fs::read(&p).unwrap()),
                    link: (kind == 'l').then(|| std::fs::read_link(&p).unwrap()),
                },
            );
        }
    }
    out
}

/// What the parity check found.
#[derive(Debug, Default)]
pub struct Parity {
    pub packages: usize,
    pub paths: usize,
    /// Differences explained by the documented list: class → paths.
    pub explained: BTreeMap<String, Vec<String>>,
    /// Differences it does not explain (a failing test).
    pub unexplained: Vec<String>,
}

impl Parity {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "parity: {} packages identical (dpkg-query / rpm -qa); {} paths compared; {} differ, {} of \
             them unexplained\n",
            self.packages,
            self.paths,
            self.explained.values().map(Vec::len).sum::<usize>() + self.unexplained.len(),
            self.unexplained.len()
        );
        for (class, paths) in &self.explained {
            let shown: Vec<&str> = paths.iter().take(6).map(String::as_str).collect();
            s.push_str(&format!(
                "  {:4}  {class}: {}{}\n",
                paths.len(),
                shown.join(" "),
                if paths.len() > shown.len() {
                    " …"
                } else {
                    ""
                }
            ));
        }
        for u in &self.unexplained {
            s.push_str(&format!("  UNEXPLAINED {u}\n"));
        }
        s
    }
}

/// `rpm -qa` of a rootfs (the host's rpm reading the rootfs's database): "name-evr.arch"
/// lines, sorted, without the `gpg-pubkey` entries rpm adds for the keys it imported.
pub fn rpm_list(root: &Path) -> Vec<String> {
    let out = Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args([
            "--dbpath",
            "/var/lib/rpm",
            "-qa",
            "--qf",
            "%{NAME}-%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}.%{ARCH}\n",
        ])
        .output()
        .expect("rpm (Debian package rpm)");
    assert!(
        out.status.success(),
        "rpm -qa failed on {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("gpg-pubkey-"))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Compare a native and a container rootfs of the same request: the same packages and
/// versions (dpkg-query on both, asserted), and file trees that agree apart from the
/// documented maintainer-script outputs (plus `extra` classes for a test's own packages).
pub fn parity(native: &Path, container: &Path, extra: &[(&str, &[&str])]) -> Parity {
    parity_by(dpkg_list, SCRIPT_OUTPUTS, native, container, extra)
}

/// [`parity`] with another package lister and documented list (`rpm_list` and
/// `RPM_OUTPUTS` for rpm distros).
pub fn parity_by(
    list: fn(&Path) -> Vec<String>,
    classes: &[(&str, &[&str])],
    native: &Path,
    container: &Path,
    extra: &[(&str, &[&str])],
) -> Parity {
    let (pn, pc) = (list(native), list(container));
    assert_eq!(
        pn, pc,
        "native and container rootfs list different packages"
    );
    let (tn, tc) = (tree(native), tree(container));
    let mut p = Parity {
        packages: pn.len(),
        ..Default::default()
    };
    let all: std::collections::BTreeSet<&String> = tn.keys().chain(tc.keys()).collect();
    p.paths = all.len();
    for path in all {
        let what = match (tn.get(path), tc.get(path)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(_), None) => "only native",
            (None, Some(_)) => "only container",
            (Some(a), Some(b)) if a.kind != b.kind => "type",
            (Some(a), Some(b)) if a.content != b.content || a.link != b.link => "content",
            (Some(a), Some(b)) if a.perm != b.perm => "mode",
            _ => "owner",
        };
        let shown = format!("/{path} ({what})");
        match explained_by(classes, path, extra) {
            Some(class) => p
                .explained
                .entry(class.to_string())
                .or_default()
                .push(shown),
            None => p.unexplained.push(shown),
        }
    }
    p
}

/// Checks of the matcher (run from the test binary that includes this module with `tests`).
pub fn glob_self_test() {
    assert!(glob(b"dev/**", b"dev/pts/0"));
    assert!(glob(b"etc/rc?.d/**", b"etc/rc2.d/S01dbus"));
    assert!(glob(b"etc/pam.d/common-*", b"etc/pam.d/common-auth"));
    assert!(!glob(b"etc/pam.d/common-*", b"etc/pam.d/x/common-auth"));
    assert!(!glob(b"etc/*-", b"etc/a/b-"));
    assert!(glob(b"etc/*-", b"etc/passwd-"));
}
