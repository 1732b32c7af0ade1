//! Declarative configuration: what a Debian install's maintainer scripts produce, made on
//! the host without running any code of the target, so every architecture builds
//! without emulation or root.
//!
//! The packages' own scripts are read by a shell interpreter ([`shell`]) in the order a
//! Debian bootstrap runs them ([`order`]: preinsts while unpacking in apt's order,
//! postinsts in dpkg's configuration order, then the triggers that fired), and each
//! command they run is emulated on the rootfs: account tools ([`accounts`]),
//! update-alternatives, systemctl/deb-systemd-helper/update-rc.d ([`units`]),
//! systemd-tmpfiles, dpkg-divert/dpkg-statoverride/triggers ([`dpkgstate`]), ucf,
//! pam-auth-update, update-shells, ldconfig ([`ldcache`]) and the file utilities. What a
//! script runs that is not emulated is reported per package ([`Report`]); `--run-scripts`
//! remains the way to run the scripts themselves. [`bootstrap`] adds what the bootstrap
//! tool itself leaves (fstab, dpkg and apt locks, an empty /run).

pub mod accounts;
pub mod alternatives;
pub mod bootstrap;
pub mod dpkgstate;
pub mod host;
pub mod ldcache;
pub mod order;
pub mod pam;
pub mod shell;
pub mod shells;
pub mod text;
pub mod tmpfiles;
pub mod ucf;
pub mod units;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Result;

use super::control::parse_stanzas;
use super::dpkgdb::InstalledDeb;
use crate::arch::Arch;
use crate::pkg::extract::{Attrs, Extractor};

/// What the declarative step could not reproduce, per package.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// package name → effects its maintainer scripts have that were not reproduced.
    pub not_reproduced: BTreeMap<String, Vec<String>>,
}

impl Report {
    fn note(&mut self, pkg: &str, what: String) {
        let v = self.not_reproduced.entry(pkg.to_string()).or_default();
        if !v.contains(&what) {
            v.push(what);
        }
    }

    /// One line per package: `name: effect; effect`.
    pub fn lines(&self) -> Vec<String> {
        self.not_reproduced
            .iter()
            .map(|(p, v)| format!("{p}: {}", v.join("; ")))
            .collect()
    }
}

/// One package of the install, as the scripts see it.
pub struct Pkg {
    pub name: String,
    pub arch: String,
    pub version: String,
    pub multi_arch_same: bool,
    pub members: BTreeMap<String, Vec<u8>>,
    pub fields: Vec<(String, String)>,
    /// The paths the package installed ("/usr/bin/x"), for `dpkg-query -L`.
    pub files: Vec<String>,
}

impl Pkg {
    fn field(&self, k: &str) -> &str {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// How dpkg names it in trigger files (`pkg:arch` when Multi-Arch: same).
    fn trig_name(&self) -> String {
        if self.multi_arch_same {
            format!("{}:{}", self.name, self.arch)
        } else {
            self.name.clone()
        }
    }

    /// What ordering needs from it (control-file order of the dependency fields).
    pub fn order_pkg(&self) -> order::OrderPkg {
        let names = |v: &str| -> Vec<Vec<String>> {
            super::resolve::parse_depends(v)
                .unwrap_or_default()
                .into_iter()
                .map(|alts| alts.into_iter().map(|d| d.name).collect())
                .collect()
        };
        let pre = names(self.field("Pre-Depends"));
        let dep = names(self.field("Depends"));
        let mut control = Vec::new();
        for (k, v) in &self.fields {
            if k.eq_ignore_ascii_case("Pre-Depends") || k.eq_ignore_ascii_case("Depends") {
                control.extend(names(v));
            }
        }
        order::OrderPkg {
            name: self.name.clone(),
            essential: self.field("Essential") == "yes",
            priority: self.field("Priority").to_string(),
            pre_depends: pre,
            depends: dep,
            control_depends: control,
            provides: self
                .field("Provides")
                .split(',')
                .map(|p| {
                    p.split('(')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .filter(|p| !p.is_empty())
                .collect(),
            has_postinst: self.members.contains_key("postinst"),
        }
    }
}

/// The state of the install that the emulated tools share.
pub struct Session<'e> {
    pub ex: &'e mut Extractor,
    pub arch: Arch,
    pub mtime: i64,
    pub pkgs: Vec<Pkg>,
    pub accounts: accounts::Accounts,
    pub alternatives: alternatives::Alternatives,
    pub dpkg: dpkgstate::DpkgState,
    pub pam: pam::PamState,
    pub report: Report,
    /// Package whose script is running (index into `pkgs`).
    pub current: usize,
    /// Packages unpacked so far (dpkg-query sees no others).
    pub unpacked: BTreeSet<usize>,
    /// Packages configured so far.
    pub configured: BTreeSet<usize>,
    /// Explicit triggers activated for configured packages: package → trigger names.
    pub pending: BTreeMap<usize, Vec<String>>,
    /// Order packages got their first pending trigger (dpkg's deferred queue).
    pub pending_order: Vec<usize>,
    /// debconf answers set by scripts: question → value.
    pub debconf: HashMap<String, String>,
    /// Packages whose debconf config script has run.
    pub config_ran: BTreeSet<usize>,
    /// A postinst is running (debconf then runs the package's config script first).
    pub in_postinst: bool,
    /// The file mode creation mask of the running script.
    pub umask: u32,
    /// ldconfig was run: the cache is written once, at the end (it only depends on the
    /// files, which are all unpacked before any script runs).
    pub ldconfig: bool,
    /// Files `mktemp` made so far (their names are numbered, not random).
    pub temp_files: u32,
}

/// What a package's maintainer scripts may do that the declarative step does not
/// reproduce, from their text alone (the plan lists it before anything is unpacked;
/// the build's own report is exact). Commands that only the target can run, debconf's
/// database and the journal catalog.
pub fn scan(members: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for script in ["preinst", "postinst", "config"] {
        let Some(src) = members.get(script) else {
            continue;
        };
        let Ok(parsed) = shell::parse(&String::from_utf8_lossy(src)) else {
            add(format!("{script} not understood; not run"));
            continue;
        };
        let commands = shell::commands(&parsed);
        let functions: BTreeSet<&str> = commands
            .iter()
            .filter_map(|a| a[0].strip_suffix("()"))
            .collect();
        for argv in &commands {
            let name = argv[0].rsplit('/').next().unwrap_or(&argv[0]).to_string();
            if argv[0].ends_with("()") || functions.contains(name.as_str()) {
                continue;
            }
            match name.as_str() {
                "." | "source" if argv.iter().any(|a| a.ends_with("debconf/confmodule")) => {
                    add("debconf database /var/cache/debconf (questions answered with their defaults)".into())
                }
                "journalctl" if argv.iter().any(|a| a == "--update-catalog") => add(
                    "journal catalog /var/lib/systemd/catalog/database (systemd-journal-catalog-update.service builds it at first boot)".into(),
                ),
                n if shell::builtin(n) || host::emulated(n) || n.contains('=') => {}
                n => add(format!("may run `{n}`")),
            }
        }
    }
    out
}

/// Dependency-ordered view of the packages for the backend (apt's unpack order).
pub fn unpack_order(pkgs: &[order::OrderPkg]) -> Vec<usize> {
    order::unpack_order(pkgs)
}

/// A package as the configuration step sees it.
pub fn pkg_of(d: &InstalledDeb) -> Pkg {
    let stanza = parse_stanzas(&d.control.control);
    let fields: Vec<(String, String)> = stanza
        .first()
        .map(|s| {
            s.fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    Pkg {
        name: get("Package"),
        arch: get("Architecture"),
        version: get("Version"),
        multi_arch_same: get("Multi-Arch") == "same",
        members: d.control.members.clone(),
        fields,
        files: d
            .files
            .iter()
            .map(|f| String::from_utf8_lossy(&f.path).into_owned())
            .collect(),
    }
}

/// How much of the maintainer scripts' work to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Everything: preinsts, postinsts, triggers (the default, rootless build).
    Full,
    /// What unpacking does (preinsts, trigger interests, dpkg's state); the postinsts run
    /// afterwards for real (`--run-scripts`, `dpkg --configure -a`).
    UnpackOnly,
}

/// Configure the unpacked packages (`debs` in the order they were unpacked), as their
/// maintainer scripts would on a fresh install. `mtime` stamps what is written
/// (SOURCE_DATE_EPOCH or the repository's date; also shadow's "last change" day).
pub fn configure(
    ex: &mut Extractor,
    debs: &[InstalledDeb],
    arch: Arch,
    mtime: i64,
    mode: Mode,
) -> Result<Report> {
    ex.create_dir(b"etc", Attrs::root(0o755, mtime))?;
    let pkgs: Vec<Pkg> = debs.iter().map(pkg_of).collect();
    let mut s = Session {
        ex,
        arch,
        mtime,
        accounts: accounts::Accounts::new(mtime.div_euclid(86_400)),
        alternatives: Default::default(),
        dpkg: Default::default(),
        pam: Default::default(),
        report: Report::default(),
        current: 0,
        unpacked: BTreeSet::new(),
        configured: BTreeSet::new(),
        pending: BTreeMap::new(),
        pending_order: Vec::new(),
        debconf: HashMap::new(),
        config_ran: BTreeSet::new(),
        in_postinst: false,
        umask: 0o022,
        ldconfig: false,
        temp_files: 0,
        pkgs,
    };
    // Accounts that exist already (a rootfs configured before) are the starting point.
    s.load_accounts()?;
    let n = s.pkgs.len();
    // Unpack: trigger interests, then the preinst, package by package.
    for i in 0..n {
        s.unpacked.insert(i);
        if let Some(t) = s.pkgs[i].members.get("triggers").cloned() {
            let name = s.pkgs[i].trig_name();
            s.dpkg.register(&name, &String::from_utf8_lossy(&t));
        }
        s.run_script(i, "preinst", &["install"])?;
    }
    if mode == Mode::UnpackOnly {
        s.write_accounts()?;
        let dpkg = std::mem::take(&mut s.dpkg);
        dpkg.write(s.ex, mtime)?;
        return Ok(s.report);
    }
    // Configure, in dpkg's order.
    let ord: Vec<order::OrderPkg> = s.pkgs.iter().map(Pkg::order_pkg).collect();
    let unpacked: Vec<usize> = (0..n).collect();
    for i in order::configure_order(&ord, &unpacked) {
        s.activate_package_triggers(i);
        s.run_script(i, "postinst", &["configure", ""])?;
        s.configured.insert(i);
    }
    // Triggers that fired after their package was configured.
    let queue = std::mem::take(&mut s.pending_order);
    for i in queue {
        let Some(names) = s.pending.remove(&i) else {
            continue;
        };
        s.run_script(i, "postinst", &["triggered", &names.join(" ")])?;
    }
    if s.ldconfig {
        ldcache::ldconfig(s.ex, s.arch, mtime)?;
    }
    s.ensure_accounts()?;
    bootstrap::finish(&mut s)?;
    s.write_accounts()?;
    let alts = std::mem::take(&mut s.alternatives);
    alts.write(s.ex, mtime)?;
    let dpkg = std::mem::take(&mut s.dpkg);
    dpkg.write(s.ex, mtime)?;
    Ok(s.report)
}

impl Session<'_> {
    /// Run one maintainer script of package `i` with `args`.
    fn run_script(&mut self, i: usize, script: &str, args: &[&str]) -> Result<()> {
        let Some(src) = self.pkgs[i].members.get(script).cloned() else {
            return Ok(());
        };
        self.current = i;
        self.in_postinst = script == "postinst";
        self.umask = 0o022;
        let text = String::from_utf8_lossy(&src).into_owned();
        let name = self.pkgs[i].name.clone();
        let parsed = match shell::parse(&text) {
            Ok(p) => p,
            Err(e) => {
                self.report
                    .note(&name, format!("{script} not understood ({e}); not run"));
                return Ok(());
            }
        };
        let mut sh = shell::Shell::new(
            self.script_env(i, script),
            args.iter().map(|s| s.to_string()).collect(),
        );
        let mut host = host::Host { s: self, depth: 0 };
        sh.run(&parsed, &mut host)?;
        for e in sh.errors {
            self.report.note(&name, format!("{script}: {e}"));
        }
        Ok(())
    }

    pub fn script_env(&self, i: usize, script: &str) -> HashMap<String, String> {
        let p = &self.pkgs[i];
        let mut v = HashMap::new();
        for (k, val) in [
            ("DPKG_MAINTSCRIPT_PACKAGE", p.name.as_str()),
            ("DPKG_MAINTSCRIPT_ARCH", p.arch.as_str()),
            ("DPKG_MAINTSCRIPT_NAME", script),
            ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1"),
            ("DPKG_ADMINDIR", "/var/lib/dpkg"),
            ("DPKG_ROOT", ""),
            ("DPKG_FORCE", "depends"),
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ("DEBIAN_FRONTEND", "noninteractive"),
            ("LC_ALL", "C.UTF-8"),
            ("HOME", "/root"),
            ("IFS", " \t\n"),
        ] {
            v.insert(k.to_string(), val.to_string());
        }
        v.insert("SOURCE_DATE_EPOCH".into(), self.mtime.to_string());
        v.insert(
            "0".into(),
            format!("/var/lib/dpkg/info/{}.{script}", p.trig_name()),
        );
        v
    }

    /// dpkg activates the `activate*` triggers of a package when it configures it; a
    /// package already configured that is interested gets the trigger afterwards.
    fn activate_package_triggers(&mut self, i: usize) {
        let Some(t) = self.pkgs[i].members.get("triggers").cloned() else {
            return;
        };
        for line in String::from_utf8_lossy(&t).lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() >= 2 && w[0].starts_with("activate") {
                self.activate(w[1]);
            }
        }
    }

    pub fn activate(&mut self, trigger: &str) {
        for name in self.dpkg.interested(trigger) {
            let Some(j) = self.pkgs.iter().position(|p| p.trig_name() == name) else {
                continue;
            };
            if !self.configured.contains(&j) {
                continue;
            }
            let v = self.pending.entry(j).or_default();
            if !v.iter().any(|x| x == trigger) {
                v.push(trigger.to_string());
            }
            if !self.pending_order.contains(&j) {
                self.pending_order.push(j);
            }
        }
    }

    /// Packages without Debian's own base-passwd scripts (private repositories, test
    /// doubles) still get the accounts every rootfs needs for its ownership names: the
    /// master files (what base-passwd copies on a new install), else root alone, and
    /// their shadow files.
    fn ensure_accounts(&mut self) -> Result<()> {
        if self.accounts.exists("passwd") && self.accounts.exists("group") {
            return Ok(());
        }
        for (f, master, root) in [
            (
                "passwd",
                "usr/share/base-passwd/passwd.master",
                "root:*:0:0:root:/root:/bin/sh\n",
            ),
            ("group", "usr/share/base-passwd/group.master", "root:*:0:\n"),
        ] {
            let text = match self.ex.read_file(master.as_bytes())? {
                Some(d) => String::from_utf8_lossy(&d).into_owned(),
                None => root.to_string(),
            };
            self.accounts.create_if_missing(f, &text);
        }
        if !self.accounts.exists("shadow") {
            self.accounts.pwconv("0", "99999", "7");
        }
        if !self.accounts.exists("gshadow") {
            self.accounts.grpconv();
        }
        Ok(())
    }

    fn load_accounts(&mut self) -> Result<()> {
        for f in accounts::FILES {
            if let Some(d) = self.ex.read_file(format!("etc/{f}").as_bytes())? {
                self.accounts.set_raw(f, &String::from_utf8_lossy(&d));
            }
        }
        Ok(())
    }

    fn write_accounts(&mut self) -> Result<()> {
        let shadow_gid = self.accounts.gid_of("shadow").unwrap_or(0);
        for f in accounts::FILES {
            let a = if f.ends_with("shadow") {
                Attrs {
                    mode: 0o640,
                    uid: 0,
                    gid: shadow_gid,
                    mtime: self.mtime,
                }
            } else {
                Attrs::root(0o644, self.mtime)
            };
            if let Some(t) = self.accounts.text(f) {
                self.ex
                    .write_file(format!("etc/{f}").as_bytes(), &mut t.as_bytes(), a)?;
            }
            if let Some(t) = self.accounts.backup_text(f) {
                self.ex
                    .write_file(format!("etc/{f}-").as_bytes(), &mut t.as_bytes(), a)?;
            }
        }
        if self.accounts.locked {
            self.ex.write_file(
                b"etc/.pwd.lock",
                &mut &b""[..],
                Attrs::root(0o600, self.mtime),
            )?;
        }
        Ok(())
    }

    /// The package whose script runs.
    pub fn pkg_name(&self) -> String {
        self.pkgs[self.current].name.clone()
    }

    /// Record something the current package's script does that is not reproduced.
    pub fn not_reproduced(&mut self, what: String) {
        let p = self.pkg_name();
        self.report.note(&p, what);
    }

    /// A field of a debconf template (`choices-c` falls back to `Choices`).
    pub fn debconf_field(&self, q: &str, field: &str) -> Option<String> {
        for p in &self.pkgs {
            let Some(t) = p.members.get("templates") else {
                continue;
            };
            let text = String::from_utf8_lossy(t);
            for st in parse_stanzas(&text) {
                if st.get("Template").map(str::trim) == Some(q) {
                    let v = st.get(field).or_else(|| {
                        field
                            .strip_suffix("-c")
                            .or(field.strip_suffix("-C"))
                            .and_then(|f| st.get(f))
                    });
                    return v.map(|v| v.trim().to_string());
                }
            }
        }
        None
    }

    /// A debconf question's value: what a script set, else the template's default.
    pub fn debconf_get(&self, q: &str) -> Option<String> {
        if let Some(v) = self.debconf.get(q) {
            return Some(v.clone());
        }
        for p in &self.pkgs {
            let Some(t) = p.members.get("templates") else {
                continue;
            };
            let text = String::from_utf8_lossy(t);
            for st in parse_stanzas(&text) {
                if st.get("Template").map(str::trim) == Some(q) {
                    return Some(st.get("Default").unwrap_or("").trim().to_string());
                }
            }
        }
        None
    }
}
