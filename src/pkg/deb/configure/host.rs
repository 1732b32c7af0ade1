//! The commands maintainer scripts run, emulated on the rootfs being configured: file
//! utilities, the Debian tools (adduser, update-alternatives, dpkg-divert, ucf…) and
//! systemd's offline tools. A command the rootfs does not provide fails as it would
//! (127), except the Essential set, which scripts may use without depending on it and
//! which counts as present even in a rootfs built without it (agent-init). A shell script
//! of the rootfs that is not emulated (shadowconfig, add-shell…) is read by the same
//! interpreter; anything else is reported as not reproduced.

use anyhow::Result;
use md5::Digest as _;

use super::shell::{self, Outcome, Shell};
use super::{Session, accounts, pam, shells, text, tmpfiles, ucf, units};
use crate::pkg::extract::Attrs;
use crate::tree::mtree::MType;

/// Commands of Essential packages (coreutils, dash, debianutils, diffutils, dpkg,
/// findutils, grep, gzip, hostname, init-system-helpers, libc-bin, login, mawk, sed,
/// tar, util-linux…): scripts may use them without a dependency.
const ESSENTIAL: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "cat",
    "cp",
    "mv",
    "rm",
    "ln",
    "mkdir",
    "rmdir",
    "touch",
    "chmod",
    "chown",
    "chgrp",
    "install",
    "readlink",
    "realpath",
    "dirname",
    "basename",
    "md5sum",
    "cmp",
    "diff",
    "grep",
    "egrep",
    "fgrep",
    "sed",
    "awk",
    "mawk",
    "cut",
    "tr",
    "sort",
    "uniq",
    "head",
    "tail",
    "wc",
    "seq",
    "mktemp",
    "date",
    "id",
    "uname",
    "sync",
    "sleep",
    "stat",
    "find",
    "xargs",
    "tee",
    "env",
    "printf",
    "echo",
    "test",
    "[",
    "true",
    "false",
    "which",
    "ischroot",
    "run-parts",
    "tempfile",
    "update-shells",
    "add-shell",
    "remove-shell",
    "dpkg",
    "dpkg-query",
    "dpkg-divert",
    "dpkg-statoverride",
    "dpkg-trigger",
    "dpkg-maintscript-helper",
    "dpkg-realpath",
    "update-alternatives",
    "deb-systemd-helper",
    "deb-systemd-invoke",
    "invoke-rc.d",
    "update-rc.d",
    "service",
    "ldconfig",
    "getent",
    "hostname",
    "gzip",
    "zcat",
    "tar",
    "logger",
    "mountpoint",
    "perl",
    "pidof",
    "kill",
    "ls",
    "expr",
    "nproc",
];

/// Commands that change nothing a rootfs keeps (or only query): not worth reporting.
const HARMLESS: &[&str] = &[
    "logger",
    "sleep",
    "sync",
    "stty",
    "tput",
    "locale",
    "clear",
    "kill",
    "killall",
    "udevadm",
    "modprobe",
    "sysctl",
    "mountpoint",
    "dbus-send",
    "initctl",
    "start",
    "stop",
    "restart",
    "reload",
    "status",
    "apparmor_parser",
    "aa-enabled",
    "update-menus",
    "update-mime",
    "nscd",
    "systemd-detect-virt",
    "nproc",
    "dbus-uuidgen",
    "systemd-machine-id-setup",
    "pwck",
    "grpck",
];

/// The commands [`Host`] emulates (besides `db_*` and [`HARMLESS`]).
pub const EMULATED: &[&str] = &[
    ":",
    "true",
    "false",
    "mkdir",
    "rmdir",
    "rm",
    "touch",
    "ln",
    "cp",
    "mv",
    "chmod",
    "chown",
    "chgrp",
    "install",
    "cat",
    "readlink",
    "realpath",
    "dpkg-realpath",
    "dirname",
    "basename",
    "md5sum",
    "cmp",
    "grep",
    "egrep",
    "fgrep",
    "sed",
    "head",
    "tail",
    "wc",
    "sort",
    "cut",
    "tr",
    "seq",
    "mktemp",
    "date",
    "id",
    "uname",
    "which",
    "command",
    "getent",
    "ischroot",
    "pidof",
    "getcap",
    "dpkg",
    "dpkg-query",
    "dpkg-maintscript-helper",
    "deb-systemd-invoke",
    "invoke-rc.d",
    "service",
    "dpkg-trigger",
    "dpkg-divert",
    "dpkg-statoverride",
    "update-alternatives",
    "adduser",
    "addgroup",
    "groupadd",
    "useradd",
    "usermod",
    "chfn",
    "gpasswd",
    "pwconv",
    "grpconv",
    "systemd-sysusers",
    "systemd-tmpfiles",
    "systemctl",
    "deb-systemd-helper",
    "update-rc.d",
    "ucf",
    "ucfr",
    "pam-auth-update",
    "update-shells",
    "ldconfig",
    "journalctl",
    "umask",
];

/// Whether a command of a maintainer script is emulated (or changes nothing kept).
pub fn emulated(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    EMULATED.contains(&base) || HARMLESS.contains(&base) || base.starts_with("db_")
}

pub struct Host<'a, 'e> {
    pub s: &'a mut Session<'e>,
    /// Nesting of scripts run as commands (shadowconfig…), to stop runaway recursion.
    pub depth: usize,
}

fn rel(p: &str) -> String {
    let p = p.trim_start_matches('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            c => out.push(c),
        }
    }
    out.join("/")
}

fn account_file(p: &str) -> Option<&'static str> {
    match rel(p).as_str() {
        "etc/passwd" => Some("passwd"),
        "etc/group" => Some("group"),
        "etc/shadow" => Some("shadow"),
        "etc/gshadow" => Some("gshadow"),
        _ => None,
    }
}

/// Parse `-abc` style flags and `--long[=v]` options; returns (flags, positional).
fn opts(args: &[String], with_value: &[&str]) -> (Vec<(String, String)>, Vec<String>) {
    let mut flags = Vec::new();
    let mut pos = Vec::new();
    let mut i = 0;
    let mut done = false;
    while i < args.len() {
        let a = &args[i];
        if done || a == "-" || !a.starts_with('-') {
            pos.push(a.clone());
        } else if a == "--" {
            done = true;
        } else if let Some(long) = a.strip_prefix("--") {
            match long.split_once('=') {
                Some((k, v)) => flags.push((format!("--{k}"), v.to_string())),
                None if with_value.contains(&a.as_str()) => {
                    i += 1;
                    flags.push((a.clone(), args.get(i).cloned().unwrap_or_default()));
                }
                None => flags.push((a.clone(), String::new())),
            }
        } else {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut k = 0;
            while k < chars.len() {
                let f = format!("-{}", chars[k]);
                if with_value.contains(&f.as_str()) {
                    let rest: String = chars[k + 1..].iter().collect();
                    let v = if rest.is_empty() {
                        i += 1;
                        args.get(i).cloned().unwrap_or_default()
                    } else {
                        rest
                    };
                    flags.push((f, v));
                    break;
                }
                flags.push((f, String::new()));
                k += 1;
            }
        }
        i += 1;
    }
    (flags, pos)
}

fn has(flags: &[(String, String)], names: &[&str]) -> bool {
    flags.iter().any(|(f, _)| names.contains(&f.as_str()))
}

fn value<'a>(flags: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    flags
        .iter()
        .rev()
        .find(|(f, _)| names.contains(&f.as_str()))
        .map(|(_, v)| v.as_str())
}

/// chmod's MODE (octal, or symbolic like `+x`, `u+s`, `go-w`) applied to `old`.
fn chmod_mode(spec: &str, old: u32, is_dir: bool) -> Option<u32> {
    if let Ok(m) = u32::from_str_radix(spec, 8) {
        return Some(m);
    }
    let mut mode = old;
    for clause in spec.split(',') {
        let who_end = clause.find(['+', '-', '=']).unwrap_or(clause.len());
        let who = &clause[..who_end];
        let op = clause[who_end..].chars().next()?;
        let perms = &clause[who_end + 1..];
        let mut mask = 0u32;
        let who = if who.is_empty() { "a" } else { who };
        for w in who.chars() {
            mask |= match w {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return None,
            };
        }
        let mut bits = 0u32;
        for p in perms.chars() {
            bits |= match p {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if is_dir || old & 0o111 != 0 => 0o111,
                'X' => 0,
                's' => 0o6000,
                't' => 0o1000,
                _ => return None,
            };
        }
        let bits = bits & mask;
        mode = match op {
            '+' => mode | bits,
            '-' => mode & !bits,
            _ => (mode & !mask) | bits,
        };
    }
    Some(mode)
}

impl Host<'_, '_> {
    fn exists_cmd(&mut self, name: &str) -> Result<Option<String>> {
        if name.contains('/') {
            let st = self.s.ex.stat(rel(name).as_bytes())?;
            return Ok(st
                .filter(|s| s.kind == MType::File && s.mode & 0o111 != 0)
                .map(|_| name.to_string()));
        }
        for d in [
            "usr/local/sbin",
            "usr/local/bin",
            "usr/sbin",
            "usr/bin",
            "sbin",
            "bin",
        ] {
            let p = format!("{d}/{name}");
            if let Some(st) = self.s.ex.stat(p.as_bytes())? {
                if st.kind == MType::File && st.mode & 0o111 != 0 {
                    return Ok(Some(format!("/{p}")));
                }
            }
        }
        Ok(None)
    }

    /// Is `name` available to the script: installed, or part of the Essential set.
    fn available(&mut self, name: &str) -> Result<bool> {
        let base = name.rsplit('/').next().unwrap_or(name);
        Ok(ESSENTIAL.contains(&base) || self.exists_cmd(name)?.is_some())
    }

    fn attrs_of(&mut self, p: &str) -> Result<Option<Attrs>> {
        Ok(self.s.ex.lstat(rel(p).as_bytes())?.map(|st| Attrs {
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            mtime: self.s.mtime,
        }))
    }

    fn owner(&self, spec: &str) -> (Option<u32>, Option<u32>) {
        let (u, g) = match spec.split_once([':', '.']) {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let uid = if u.is_empty() {
            None
        } else {
            u.parse().ok().or_else(|| self.s.accounts.uid_of(u))
        };
        let gid = match g {
            Some("") => {
                uid.and_then(|_| self.s.accounts.user(u).and_then(|f| f.get(3)?.parse().ok()))
            }
            Some(g) => g.parse().ok().or_else(|| self.s.accounts.gid_of(g)),
            None => None,
        };
        (uid, gid)
    }

    fn copy(&mut self, src: &str, dst: &str, preserve: bool, links: bool) -> Result<i32> {
        let dst_rel = match self.s.ex.stat(rel(dst).as_bytes())? {
            Some(st) if st.kind == MType::Dir => {
                format!("{}/{}", rel(dst), src.rsplit('/').next().unwrap_or(src))
            }
            _ => rel(dst),
        };
        if let Some(af) = account_file(&dst_rel) {
            let data = self.read_any(src)?.unwrap_or_default();
            self.s.accounts.set_raw(af, &String::from_utf8_lossy(&data));
            return Ok(0);
        }
        if links {
            if let Some(t) = self.s.ex.read_link(rel(src).as_bytes())? {
                self.s.ex.remove_file(dst_rel.as_bytes())?;
                self.s
                    .ex
                    .symlink(dst_rel.as_bytes(), &t, Attrs::root(0o777, self.s.mtime))?;
                return Ok(0);
            }
        }
        let Some(data) = self.read_any(src)? else {
            return Ok(1);
        };
        let src_attrs = if src == "/dev/null" {
            Some(Attrs::root(0o644, self.s.mtime))
        } else {
            self.s.ex.stat(rel(src).as_bytes())?.map(|st| Attrs {
                mode: st.mode,
                uid: st.uid,
                gid: st.gid,
                mtime: self.s.mtime,
            })
        };
        let existing = self.attrs_of(&dst_rel)?;
        let a = match (preserve, existing, src_attrs) {
            (true, _, Some(a)) => a,
            (false, Some(e), _) => e,
            (false, None, Some(a)) => Attrs {
                mode: a.mode & 0o777 & !self.s.umask,
                uid: 0,
                gid: 0,
                mtime: self.s.mtime,
            },
            _ => Attrs::root(0o644, self.s.mtime),
        };
        self.s
            .ex
            .write_file(dst_rel.as_bytes(), &mut data.as_slice(), a)?;
        Ok(0)
    }

    fn read_any(&mut self, p: &str) -> Result<Option<Vec<u8>>> {
        if p == "/dev/null" {
            return Ok(Some(Vec::new()));
        }
        if let Some(af) = account_file(p) {
            return Ok(self.s.accounts.text(af).map(String::into_bytes));
        }
        self.s.ex.read_file(rel(p).as_bytes())
    }

    fn builtin(
        &mut self,
        sh: &mut Shell,
        argv: &[String],
        stdin: &[u8],
    ) -> Result<Option<Outcome>> {
        let name = argv[0].rsplit('/').next().unwrap_or(&argv[0]).to_string();
        let args = &argv[1..];
        let mtime = self.s.mtime;
        let st = |s: i32| Some(Outcome::status(s));
        Ok(match name.as_str() {
            "true" | ":" => st(0),
            "false" => st(1),
            "mkdir" => {
                let (f, pos) = opts(args, &["-m", "--mode"]);
                let mode = value(&f, &["-m", "--mode"])
                    .and_then(|m| chmod_mode(m, 0o777 & !self.s.umask, true))
                    .unwrap_or(0o777 & !self.s.umask);
                let mut r = 0;
                for p in pos {
                    if self.s.ex.lstat(rel(&p).as_bytes())?.is_some() {
                        if !has(&f, &["-p", "--parents"]) {
                            r = 1;
                        }
                        continue;
                    }
                    self.s
                        .ex
                        .create_dir(rel(&p).as_bytes(), Attrs::root(mode, mtime))?;
                }
                st(r)
            }
            "rmdir" => {
                let (_, pos) = opts(args, &[]);
                for p in pos {
                    self.s.ex.remove_dir(rel(&p).as_bytes())?;
                }
                st(0)
            }
            "rm" => {
                let (f, pos) = opts(args, &[]);
                for p in pos {
                    match self.s.ex.lstat(rel(&p).as_bytes())? {
                        Some(s) if s.kind == MType::Dir => {
                            // Without -r, rm leaves a directory alone (and fails).
                            let recursive = has(&f, &["-r", "-R", "--recursive"]);
                            if recursive && !self.s.ex.remove_dir(rel(&p).as_bytes())? {
                                self.s.not_reproduced(format!("rm -r {p}"));
                            }
                        }
                        Some(_) => self.s.ex.remove_file(rel(&p).as_bytes())?,
                        None => {}
                    }
                }
                st(0)
            }
            "touch" => {
                let (_, pos) = opts(args, &["-r", "--reference", "-d", "-t"]);
                for p in pos {
                    if account_file(&p).is_some() {
                        continue;
                    }
                    if self.s.ex.lstat(rel(&p).as_bytes())?.is_none() {
                        let mode = 0o666 & !self.s.umask;
                        self.s.ex.write_file(
                            rel(&p).as_bytes(),
                            &mut &b""[..],
                            Attrs::root(mode, mtime),
                        )?;
                    }
                }
                st(0)
            }
            "ln" => {
                let (f, pos) = opts(args, &["-t"]);
                if !has(&f, &["-s", "--symbolic"]) {
                    self.s.not_reproduced(format!("ln {}", args.join(" ")));
                    return Ok(st(1));
                }
                let [target, link] = pos.as_slice() else {
                    return Ok(st(1));
                };
                let mut at = rel(link);
                let no_deref = has(
                    &f,
                    &["-n", "-T", "--no-dereference", "--no-target-directory"],
                );
                if !no_deref {
                    if let Some(s) = self.s.ex.stat(at.as_bytes())? {
                        if s.kind == MType::Dir {
                            at = format!("{at}/{}", target.rsplit('/').next().unwrap_or(target));
                        }
                    }
                }
                if self.s.ex.lstat(at.as_bytes())?.is_some() {
                    if !has(&f, &["-f", "--force"]) {
                        return Ok(st(1));
                    }
                    self.s.ex.remove_file(at.as_bytes())?;
                }
                self.s
                    .ex
                    .symlink(at.as_bytes(), target.as_bytes(), Attrs::root(0o777, mtime))?;
                st(0)
            }
            "cp" => {
                let (f, pos) = opts(args, &["-t", "--reference"]);
                let preserve = has(&f, &["-p", "-a", "--archive", "--preserve"]);
                let links = has(&f, &["-d", "-a", "-P", "--no-dereference", "--archive"]);
                if pos.len() < 2 {
                    return Ok(st(1));
                }
                let dst = pos.last().unwrap().clone();
                let mut r = 0;
                for src in &pos[..pos.len() - 1] {
                    r |= self.copy(src, &dst, preserve, links)?;
                }
                st(r)
            }
            "mv" => {
                let (_, pos) = opts(args, &[]);
                let [src, dst] = pos.as_slice() else {
                    return Ok(st(1));
                };
                if self.s.ex.lstat(rel(src).as_bytes())?.is_none() {
                    return Ok(st(1));
                }
                self.copy(src, dst, true, true)?;
                self.s.ex.remove_file(rel(src).as_bytes())?;
                st(0)
            }
            "chmod" => {
                let (_, pos) = opts(args, &["--reference"]);
                let Some((spec, paths)) = pos.split_first() else {
                    return Ok(st(1));
                };
                for p in paths {
                    if account_file(p).is_some() {
                        continue;
                    }
                    let Some(s) = self.s.ex.stat(rel(p).as_bytes())? else {
                        continue;
                    };
                    if let Some(m) = chmod_mode(spec, s.mode, s.kind == MType::Dir) {
                        self.s.ex.set_attrs(rel(p).as_bytes(), Some(m), None)?;
                    }
                }
                st(0)
            }
            "chown" | "chgrp" => {
                let (_, pos) = opts(args, &["--reference"]);
                let Some((spec, paths)) = pos.split_first() else {
                    return Ok(st(1));
                };
                let (uid, gid) = if name == "chgrp" {
                    (
                        None,
                        spec.parse().ok().or_else(|| self.s.accounts.gid_of(spec)),
                    )
                } else {
                    self.owner(spec)
                };
                for p in paths {
                    if account_file(p).is_some() {
                        continue;
                    }
                    let Some(s) = self.s.ex.stat(rel(p).as_bytes())? else {
                        continue;
                    };
                    let o = (uid.unwrap_or(s.uid), gid.unwrap_or(s.gid));
                    self.s.ex.set_attrs(rel(p).as_bytes(), None, Some(o))?;
                }
                st(0)
            }
            "install" => {
                let (f, pos) = opts(
                    args,
                    &["-m", "--mode", "-o", "--owner", "-g", "--group", "-t"],
                );
                let mode = value(&f, &["-m", "--mode"])
                    .and_then(|m| chmod_mode(m, 0o755, false))
                    .unwrap_or(0o755);
                let uid = value(&f, &["-o", "--owner"])
                    .and_then(|o| self.owner(o).0)
                    .unwrap_or(0);
                let gid = value(&f, &["-g", "--group"])
                    .and_then(|g| g.parse().ok().or_else(|| self.s.accounts.gid_of(g)))
                    .unwrap_or(0);
                let a = Attrs {
                    mode,
                    uid,
                    gid,
                    mtime,
                };
                if has(&f, &["-d", "--directory"]) {
                    for p in pos {
                        if self.s.ex.lstat(rel(&p).as_bytes())?.is_none() {
                            self.s.ex.create_dir(rel(&p).as_bytes(), a)?;
                        } else {
                            self.s.ex.set_attrs(
                                rel(&p).as_bytes(),
                                Some(mode),
                                Some((uid, gid)),
                            )?;
                        }
                    }
                    return Ok(st(0));
                }
                let [src, dst] = pos.as_slice() else {
                    return Ok(st(1));
                };
                let Some(data) = self.read_any(src)? else {
                    return Ok(st(1));
                };
                self.s
                    .ex
                    .write_file(rel(dst).as_bytes(), &mut data.as_slice(), a)?;
                st(0)
            }
            "cat" => {
                let (_, pos) = opts(args, &[]);
                if pos.is_empty() {
                    Some(Outcome {
                        status: 0,
                        stdout: stdin.to_vec(),
                    })
                } else {
                    let mut out = Vec::new();
                    let mut r = 0;
                    for p in pos {
                        match if p == "-" {
                            Some(stdin.to_vec())
                        } else {
                            self.read_any(&p)?
                        } {
                            Some(d) => out.extend(d),
                            None => r = 1,
                        }
                    }
                    Some(Outcome {
                        status: r,
                        stdout: out,
                    })
                }
            }
            "readlink" | "realpath" | "dpkg-realpath" => {
                let (f, pos) = opts(args, &["--root", "--relative-to", "--relative-base"]);
                let Some(p) = pos.first() else {
                    return Ok(st(1));
                };
                let canon = has(&f, &["-f", "-e", "-m", "--canonicalize"]) || name != "readlink";
                if !canon {
                    return Ok(Some(match self.s.ex.read_link(rel(p).as_bytes())? {
                        Some(t) => Outcome::text(format!("{}\n", String::from_utf8_lossy(&t))),
                        None => Outcome::status(1),
                    }));
                }
                if has(&f, &["-s", "--no-symlinks"]) {
                    return Ok(Some(Outcome::text(format!("/{}\n", rel(p)))));
                }
                match self.s.ex.resolve(rel(p).as_bytes())? {
                    Some(r) => Some(Outcome::text(format!("/{}\n", String::from_utf8_lossy(&r)))),
                    None if has(&f, &["-m"]) || name == "dpkg-realpath" => {
                        // The existing part resolved, the rest appended.
                        let (dir, base) = rel(p)
                            .rsplit_once('/')
                            .map(|(a, b)| (a.to_string(), b.to_string()))
                            .unwrap_or_default();
                        let d = self
                            .s
                            .ex
                            .resolve(dir.as_bytes())?
                            .map(|r| String::from_utf8_lossy(&r).into_owned())
                            .unwrap_or(dir);
                        Some(Outcome::text(format!("/{}/{base}\n", d).replace("//", "/")))
                    }
                    None => st(1),
                }
            }
            "dirname" => {
                let p = args.first().cloned().unwrap_or_default();
                let d = match p.trim_end_matches('/').rsplit_once('/') {
                    Some(("", _)) => "/".to_string(),
                    Some((d, _)) => d.to_string(),
                    None => ".".to_string(),
                };
                Some(Outcome::text(format!("{d}\n")))
            }
            "basename" => {
                let p = args.first().cloned().unwrap_or_default();
                let mut b = p
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                if let Some(suf) = args.get(1) {
                    if b != *suf {
                        b = b.strip_suffix(suf.as_str()).unwrap_or(&b).to_string();
                    }
                }
                Some(Outcome::text(format!("{b}\n")))
            }
            "md5sum" => {
                let (_, pos) = opts(args, &[]);
                let files = if pos.is_empty() {
                    vec!["-".to_string()]
                } else {
                    pos
                };
                let mut out = String::new();
                for p in files {
                    let d = if p == "-" {
                        Some(stdin.to_vec())
                    } else {
                        self.read_any(&p)?
                    };
                    let Some(d) = d else { return Ok(st(1)) };
                    out.push_str(&format!("{}  {p}\n", hex::encode(md5::Md5::digest(&d))));
                }
                Some(Outcome::text(out))
            }
            "cmp" => {
                let (_, pos) = opts(args, &[]);
                let [a, b] = pos.as_slice() else {
                    return Ok(st(2));
                };
                match (self.read_any(a)?, self.read_any(b)?) {
                    (Some(x), Some(y)) => st(if x == y { 0 } else { 1 }),
                    _ => st(2),
                }
            }
            "grep" | "egrep" | "fgrep" => Some(self.grep(&name, args, stdin)?),
            "sed" => Some(self.sed(args, stdin)?),
            // perl-base is Essential: scripts probe for it with `perl -e ""`.
            "perl" if args.len() == 2 && args[0] == "-e" && args[1].trim().is_empty() => st(0),
            "head" | "tail" => {
                let (f, pos) = opts(args, &["-n", "-c"]);
                let n: usize = value(&f, &["-n"])
                    .and_then(|v| v.trim_start_matches('+').parse().ok())
                    .unwrap_or(10);
                let data = match pos.first() {
                    Some(p) => self.read_any(p)?.unwrap_or_default(),
                    None => stdin.to_vec(),
                };
                let text = String::from_utf8_lossy(&data).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                let pick: Vec<&str> = if name == "head" {
                    lines.iter().take(n).copied().collect()
                } else {
                    lines
                        .iter()
                        .skip(lines.len().saturating_sub(n))
                        .copied()
                        .collect()
                };
                Some(Outcome::text(
                    pick.iter().map(|l| format!("{l}\n")).collect::<String>(),
                ))
            }
            "wc" => {
                let text = String::from_utf8_lossy(stdin).into_owned();
                Some(Outcome::text(format!("{}\n", text.lines().count())))
            }
            "sort" => {
                let text = String::from_utf8_lossy(stdin).into_owned();
                let mut l: Vec<&str> = text.lines().collect();
                l.sort();
                if args.iter().any(|a| a == "-u") {
                    l.dedup();
                }
                Some(Outcome::text(
                    l.iter().map(|x| format!("{x}\n")).collect::<String>(),
                ))
            }
            "cut" => {
                let (f, _) = opts(args, &["-d", "-f", "-c"]);
                let d = value(&f, &["-d"])
                    .unwrap_or("\t")
                    .chars()
                    .next()
                    .unwrap_or('\t');
                let n: usize = value(&f, &["-f"]).and_then(|v| v.parse().ok()).unwrap_or(1);
                let text = String::from_utf8_lossy(stdin).into_owned();
                let out: String = text
                    .lines()
                    .map(|l| {
                        format!(
                            "{}\n",
                            l.split(d)
                                .nth(n.saturating_sub(1))
                                .unwrap_or(if l.contains(d) { "" } else { l })
                        )
                    })
                    .collect();
                Some(Outcome::text(out))
            }
            "tr" => {
                let (f, pos) = opts(args, &[]);
                let text = String::from_utf8_lossy(stdin).into_owned();
                let set = |s: &str| -> Vec<char> {
                    s.replace("\\n", "\n")
                        .replace("\\t", "\t")
                        .chars()
                        .collect()
                };
                let out: String = if has(&f, &["-d", "--delete"]) {
                    let del = set(pos.first().map(String::as_str).unwrap_or(""));
                    text.chars().filter(|c| !del.contains(c)).collect()
                } else {
                    let (a, b) = (
                        set(pos.first().map(String::as_str).unwrap_or("")),
                        set(pos.get(1).map(String::as_str).unwrap_or("")),
                    );
                    text.chars()
                        .map(|c| match a.iter().position(|x| *x == c) {
                            Some(i) => *b.get(i).or(b.last()).unwrap_or(&c),
                            None => c,
                        })
                        .collect()
                };
                Some(Outcome::text(out))
            }
            "seq" => {
                let n: Vec<i64> = args.iter().filter_map(|a| a.parse().ok()).collect();
                let (a, step, b) = match n.as_slice() {
                    [b] => (1, 1, *b),
                    [a, b] => (*a, 1, *b),
                    [a, s, b] => (*a, *s, *b),
                    _ => return Ok(st(1)),
                };
                let mut out = String::new();
                let mut i = a;
                while step != 0 && ((step > 0 && i <= b) || (step < 0 && i >= b)) {
                    out.push_str(&format!("{i}\n"));
                    i += step;
                }
                Some(Outcome::text(out))
            }
            "mktemp" => {
                let (f, _) = opts(args, &["-p", "--tmpdir"]);
                self.s.temp_files += 1;
                let p = format!("tmp/tmp.osb{:04}", self.s.temp_files);
                self.s.ex.create_dir(b"tmp", Attrs::root(0o1777, mtime))?;
                if has(&f, &["-d", "--directory"]) {
                    self.s
                        .ex
                        .create_dir(p.as_bytes(), Attrs::root(0o700, mtime))?;
                } else {
                    self.s
                        .ex
                        .write_file(p.as_bytes(), &mut &b""[..], Attrs::root(0o600, mtime))?;
                }
                Some(Outcome::text(format!("/{p}\n")))
            }
            "date" => {
                if args.iter().any(|a| a == "+%s") {
                    Some(Outcome::text(format!("{mtime}\n")))
                } else {
                    Some(Outcome::text("Thu Jan  1 00:00:00 UTC 1970\n"))
                }
            }
            "id" => Some(Outcome::text(if args.iter().any(|a| a.contains('n')) {
                "root\n"
            } else {
                "0\n"
            })),
            "uname" => {
                let a = args.first().map(String::as_str).unwrap_or("-s");
                Some(Outcome::text(match a {
                    "-m" => format!("{}\n", self.s.arch.name()),
                    "-r" => "6.12.0\n".to_string(),
                    "-n" => "localhost\n".to_string(),
                    _ => "Linux\n".to_string(),
                }))
            }
            "which" => {
                let Some(c) = args.iter().find(|a| !a.starts_with('-')) else {
                    return Ok(st(1));
                };
                match self.exists_cmd(c)? {
                    Some(p) => Some(Outcome::text(format!("{p}\n"))),
                    None => st(1),
                }
            }
            "command" => {
                // `command -v NAME` for what the shell does not know.
                let c = args.get(1).cloned().unwrap_or_default();
                match self.exists_cmd(&c)? {
                    Some(p) => Some(Outcome::text(format!("{p}\n"))),
                    None if ESSENTIAL.contains(&c.as_str()) => {
                        Some(Outcome::text(format!("/usr/bin/{c}\n")))
                    }
                    None => st(1),
                }
            }
            "getent" => {
                let (Some(db), Some(key)) = (args.first(), args.get(1)) else {
                    return Ok(st(1));
                };
                match self.s.accounts.getent(db, key) {
                    Some(l) => Some(Outcome::text(format!("{l}\n"))),
                    None => st(2),
                }
            }
            "ischroot" => st(0),
            "pidof" => st(1),
            "getcap" => st(0),
            "dpkg" => Some(self.dpkg(args)?),
            "dpkg-query" => Some(self.dpkg_query(args)?),
            "dpkg-maintscript-helper" => st(0),
            "deb-systemd-invoke" | "invoke-rc.d" | "service" => st(0),
            "dpkg-trigger" => {
                let (_, pos) = opts(args, &["--by-package", "--admindir"]);
                for t in pos {
                    self.s.activate(&t);
                }
                st(0)
            }
            "dpkg-divert" => {
                let pkg = self.s.pkg_name();
                match self.s.dpkg.divert(self.s.ex, args, &pkg)? {
                    Ok((r, out)) => Some(Outcome {
                        status: r,
                        stdout: out.into_bytes(),
                    }),
                    Err(e) => {
                        self.s.not_reproduced(e);
                        st(0)
                    }
                }
            }
            "dpkg-statoverride" => {
                let acc = self.s.accounts.clone();
                match self.s.dpkg.statoverride(self.s.ex, &acc, args)? {
                    Ok((r, out)) => Some(Outcome {
                        status: r,
                        stdout: out.into_bytes(),
                    }),
                    Err(e) => {
                        self.s.not_reproduced(e);
                        st(0)
                    }
                }
            }
            "update-alternatives" => {
                if let Err(e) = self.s.alternatives.command(args) {
                    self.s.not_reproduced(e);
                }
                st(0)
            }
            "adduser" | "addgroup" => {
                let a = accounts::AddUser::parse(argv);
                let conf = self.s.ex.read_file(b"etc/adduser.conf")?;
                let ranges = accounts::Ranges::from_conf(
                    conf.as_deref()
                        .map(|c| std::str::from_utf8(c).unwrap_or("")),
                );
                if let Err(e) = accounts::adduser(&mut self.s.accounts, &a, ranges) {
                    self.s.not_reproduced(e);
                }
                st(0)
            }
            "groupadd" => Some(self.groupadd(args)),
            "useradd" => Some(self.useradd(args)),
            "usermod" | "chfn" | "gpasswd" => Some(self.usermod(&name, args)),
            "pwconv" => {
                let defs = self.login_defs()?;
                self.s.accounts.pwconv(&defs.0, &defs.1, &defs.2);
                st(0)
            }
            "grpconv" => {
                self.s.accounts.grpconv();
                st(0)
            }
            "systemd-sysusers" => {
                let (_, pos) = opts(args, &["--root", "--image", "--replace"]);
                let texts = self.sysusers_texts(&pos, stdin)?;
                accounts::sysusers(&mut self.s.accounts, &texts);
                st(0)
            }
            "systemd-tmpfiles" => {
                let (f, pos) = opts(args, &["--root", "--prefix", "--exclude-prefix", "--image"]);
                if has(&f, &["--create"]) {
                    let acc = self.s.accounts.clone();
                    for n in tmpfiles::create(self.s.ex, &acc, &pos, mtime)? {
                        self.s.not_reproduced(n);
                    }
                }
                st(0)
            }
            "systemctl" | "deb-systemd-helper" | "update-rc.d" => {
                let done = match name.as_str() {
                    "systemctl" => units::systemctl(self.s.ex, args, mtime)?,
                    "deb-systemd-helper" => units::deb_systemd_helper(self.s.ex, args, mtime)?,
                    _ => units::update_rc_d(self.s.ex, args, mtime)?,
                };
                // None: a form of the command the units module does not reproduce.
                match done {
                    Some(r) => st(r),
                    None => {
                        self.s.not_reproduced(format!("{name} {}", args.join(" ")));
                        st(0)
                    }
                }
            }
            "ucf" => {
                if let Err(e) = ucf::ucf(self.s.ex, args, mtime)? {
                    self.s.not_reproduced(e);
                }
                st(0)
            }
            "ucfr" => {
                if let Err(e) = ucf::ucfr(self.s.ex, args, mtime)? {
                    self.s.not_reproduced(e);
                }
                st(0)
            }
            "pam-auth-update" => {
                if let Err(e) = pam::pam_auth_update(self.s.ex, &mut self.s.pam, args, mtime)? {
                    self.s.not_reproduced(e);
                }
                st(0)
            }
            "update-shells" => {
                shells::update_shells(self.s.ex, mtime)?;
                st(0)
            }
            "ldconfig" => {
                if args.iter().any(|a| a == "-p" || a == "--print-cache") {
                    return Ok(st(0));
                }
                self.s.ldconfig = true;
                st(0)
            }
            "journalctl" => {
                if args.iter().any(|a| a == "--update-catalog") {
                    self.s.not_reproduced(
                        "journal catalog /var/lib/systemd/catalog/database (systemd-journal-catalog-update.service builds it at first boot)".into(),
                    );
                }
                st(0)
            }
            n if n.starts_with("db_") => Some(self.debconf(sh, n, args)),
            n if HARMLESS.contains(&n) => st(0),
            _ => None,
        })
    }

    fn grep(&mut self, name: &str, args: &[String], stdin: &[u8]) -> Result<Outcome> {
        let (f, pos) = opts(args, &["-e", "-f", "-m", "--regexp"]);
        let fixed = name == "fgrep" || has(&f, &["-F", "--fixed-strings"]);
        let extended = name == "egrep" || has(&f, &["-E", "--extended-regexp"]);
        let (pat, files) = match value(&f, &["-e", "--regexp"]) {
            Some(p) => (p.to_string(), pos),
            None => match pos.split_first() {
                Some((p, rest)) => (p.clone(), rest.to_vec()),
                None => return Ok(Outcome::status(2)),
            },
        };
        let data = if files.is_empty() {
            stdin.to_vec()
        } else {
            let mut d = Vec::new();
            for p in &files {
                d.extend(self.read_any(p)?.unwrap_or_default());
            }
            d
        };
        let Some(re) = text::compile(
            &pat,
            extended,
            fixed,
            has(&f, &["-i", "--ignore-case"]),
            has(&f, &["-x", "--line-regexp"]),
            has(&f, &["-w", "--word-regexp"]),
        ) else {
            self.s.not_reproduced(format!("grep pattern {pat:?}"));
            return Ok(Outcome::status(2));
        };
        let invert = has(&f, &["-v", "--invert-match"]);
        let text = String::from_utf8_lossy(&data).into_owned();
        let hits: Vec<&str> = text.lines().filter(|l| re.is_match(l) != invert).collect();
        let status = if hits.is_empty() { 1 } else { 0 };
        if has(&f, &["-q", "--quiet", "--silent"]) {
            return Ok(Outcome::status(status));
        }
        if has(&f, &["-c", "--count"]) {
            return Ok(Outcome {
                status,
                stdout: format!("{}\n", hits.len()).into_bytes(),
            });
        }
        Ok(Outcome {
            status,
            stdout: hits
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .into_bytes(),
        })
    }

    fn sed(&mut self, args: &[String], stdin: &[u8]) -> Result<Outcome> {
        let (f, pos) = opts(args, &["-e", "--expression", "-f"]);
        let mut scripts: Vec<String> = f
            .iter()
            .filter(|(k, _)| k == "-e" || k == "--expression")
            .map(|(_, v)| v.clone())
            .collect();
        let mut files = pos;
        if scripts.is_empty() {
            if files.is_empty() {
                return Ok(Outcome::status(1));
            }
            scripts.push(files.remove(0));
        }
        let script = scripts.join("\n");
        let quiet = has(&f, &["-n", "--quiet", "--silent"]);
        let extended = has(&f, &["-E", "-r", "--regexp-extended"]);
        let in_place = f
            .iter()
            .any(|(k, _)| k == "-i" || k.starts_with("--in-place"));
        let inputs: Vec<(Option<String>, Vec<u8>)> = if files.is_empty() {
            vec![(None, stdin.to_vec())]
        } else {
            let mut v = Vec::new();
            for p in files {
                let d = self.read_any(&p)?.unwrap_or_default();
                v.push((Some(p), d));
            }
            v
        };
        let mut out = Vec::new();
        for (path, data) in inputs {
            let Some(res) = text::sed(&script, &String::from_utf8_lossy(&data), quiet, extended)
            else {
                self.s.not_reproduced(format!("sed {script:?}"));
                return Ok(Outcome::status(1));
            };
            match (in_place, path) {
                (true, Some(p)) => shell::Host::write(self, &p, res.as_bytes(), false)?,
                _ => out.extend(res.into_bytes()),
            }
        }
        Ok(Outcome {
            status: 0,
            stdout: out,
        })
    }

    fn dpkg(&mut self, args: &[String]) -> Result<Outcome> {
        match args.first().map(String::as_str) {
            Some("--compare-versions") => {
                let (a, op, b) = (
                    args.get(1).map(String::as_str).unwrap_or(""),
                    args.get(2).map(String::as_str).unwrap_or(""),
                    args.get(3).map(String::as_str).unwrap_or(""),
                );
                Ok(Outcome::status(if compare_versions(a, op, b) {
                    0
                } else {
                    1
                }))
            }
            Some("--print-architecture") => {
                Ok(Outcome::text(format!("{}\n", self.s.arch.debian())))
            }
            Some("--print-foreign-architectures") => Ok(Outcome::text("")),
            Some(a) if a.starts_with("--assert") => Ok(Outcome::status(0)),
            Some("-s" | "--status") => {
                let name = args.get(1).cloned().unwrap_or_default();
                self.dpkg_query(&[
                    "-W".into(),
                    "-f=Package: ${Package}\nStatus: ${Status}\nVersion: ${Version}\n".into(),
                    name,
                ])
            }
            _ => {
                self.s.not_reproduced(format!("dpkg {}", args.join(" ")));
                Ok(Outcome::status(1))
            }
        }
    }

    fn dpkg_query(&mut self, args: &[String]) -> Result<Outcome> {
        let (f, pos) = opts(args, &["-f", "--showformat", "--admindir"]);
        if has(&f, &["-L", "--listfiles"]) {
            let mut out = String::new();
            for want in &pos {
                let want = want.split(':').next().unwrap_or(want);
                let unpacked = &self.s.unpacked;
                if let Some((_, p)) = self
                    .s
                    .pkgs
                    .iter()
                    .enumerate()
                    .find(|(i, p)| p.name == want && unpacked.contains(i))
                {
                    for f in &p.files {
                        out.push_str(f);
                        out.push('\n');
                    }
                }
            }
            return Ok(Outcome {
                status: if out.is_empty() { 1 } else { 0 },
                stdout: out.into_bytes(),
            });
        }
        if !has(&f, &["-W", "--show"]) {
            self.s
                .not_reproduced(format!("dpkg-query {}", args.join(" ")));
            return Ok(Outcome::status(1));
        }
        let fmt = value(&f, &["-f", "--showformat"])
            .unwrap_or("${binary:Package}\t${Version}\n")
            .to_string();
        let mut out = String::new();
        let mut found = false;
        for want in &pos {
            let want = want.split(':').next().unwrap_or(want);
            for (i, p) in self.s.pkgs.iter().enumerate() {
                if p.name != want || !self.s.unpacked.contains(&i) {
                    continue;
                }
                found = true;
                let status = if self.s.configured.contains(&i) {
                    "install ok installed"
                } else {
                    "install ok unpacked"
                };
                let line = fmt
                    .replace("${Package}", &p.name)
                    .replace("${binary:Package}", &p.trig_name())
                    .replace("${Version}", &p.version)
                    .replace("${Architecture}", &p.arch)
                    .replace("${Status}", status)
                    .replace(
                        "${db:Status-Status}",
                        status.rsplit(' ').next().unwrap_or(""),
                    )
                    .replace(
                        "${db:Status-Abbrev}",
                        if status.ends_with("installed") {
                            "ii "
                        } else {
                            "iU "
                        },
                    )
                    .replace("\\n", "\n")
                    .replace("\\t", "\t");
                out.push_str(&line);
            }
        }
        Ok(Outcome {
            status: if found { 0 } else { 1 },
            stdout: out.into_bytes(),
        })
    }

    fn login_defs(&mut self) -> Result<(String, String, String)> {
        let text = self.s.ex.read_file(b"etc/login.defs")?.unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let get = |k: &str, d: &str| {
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    (w.next() == Some(k))
                        .then(|| w.next().map(String::from))
                        .flatten()
                })
                .next_back()
                .unwrap_or_else(|| d.to_string())
        };
        Ok((
            get("PASS_MIN_DAYS", "0"),
            get("PASS_MAX_DAYS", "99999"),
            get("PASS_WARN_AGE", "7"),
        ))
    }

    fn sysusers_texts(&mut self, names: &[String], stdin: &[u8]) -> Result<Vec<String>> {
        let dirs = [
            "etc/sysusers.d",
            "run/sysusers.d",
            "usr/local/lib/sysusers.d",
            "usr/lib/sysusers.d",
        ];
        let mut wanted: Vec<String> = names.to_vec();
        if wanted.is_empty() {
            let mut all = std::collections::BTreeSet::new();
            for d in dirs {
                for n in self.s.ex.read_dir(d.as_bytes())?.unwrap_or_default() {
                    if n.ends_with(b".conf") {
                        all.insert(String::from_utf8_lossy(&n).into_owned());
                    }
                }
            }
            wanted = all.into_iter().collect();
        }
        let mut out = Vec::new();
        for n in wanted {
            if n == "-" {
                out.push(String::from_utf8_lossy(stdin).into_owned());
                continue;
            }
            if n.contains('/') {
                if let Some(d) = self.read_any(&n)? {
                    out.push(String::from_utf8_lossy(&d).into_owned());
                }
                continue;
            }
            for d in dirs {
                if let Some(t) = self.s.ex.read_file(format!("{d}/{n}").as_bytes())? {
                    out.push(String::from_utf8_lossy(&t).into_owned());
                    break;
                }
            }
        }
        Ok(out)
    }

    fn groupadd(&mut self, args: &[String]) -> Outcome {
        let (f, pos) = opts(args, &["-g", "--gid", "-K", "--key", "-R", "--root", "-P"]);
        let Some(name) = pos.first() else {
            return Outcome::status(2);
        };
        if self.s.accounts.group(name).is_some() {
            return Outcome::status(if has(&f, &["-f", "--force"]) { 0 } else { 9 });
        }
        let gid = match value(&f, &["-g", "--gid"]).and_then(|g| g.parse().ok()) {
            Some(g) => g,
            None if has(&f, &["-r", "--system"]) => (100..=999)
                .rev()
                .find(|&g| !self.s.accounts.gid_used(g))
                .unwrap_or(999),
            None => (1000..60000)
                .find(|&g| !self.s.accounts.gid_used(g))
                .unwrap_or(1000),
        };
        self.s.accounts.groupadd(name, gid);
        Outcome::status(0)
    }

    fn useradd(&mut self, args: &[String]) -> Outcome {
        let (f, pos) = opts(
            args,
            &[
                "-u",
                "--uid",
                "-g",
                "--gid",
                "-d",
                "--home-dir",
                "-s",
                "--shell",
                "-c",
                "--comment",
                "-K",
                "--key",
                "-G",
                "--groups",
                "-R",
                "--root",
                "-k",
                "-e",
                "-f",
                "-p",
            ],
        );
        let Some(name) = pos.first() else {
            return Outcome::status(2);
        };
        if self.s.accounts.user(name).is_some() {
            return Outcome::status(9);
        }
        if !has(&f, &["-r", "--system"]) {
            self.s
                .not_reproduced(format!("useradd {name} (a normal user)"));
            return Outcome::status(0);
        }
        let uid = value(&f, &["-u", "--uid"])
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| {
                (100..=999)
                    .rev()
                    .find(|&u| !self.s.accounts.uid_used(u))
                    .unwrap_or(999)
            });
        let gid = match value(&f, &["-g", "--gid"]) {
            Some(g) => g
                .parse()
                .ok()
                .or_else(|| self.s.accounts.gid_of(g))
                .unwrap_or(65534),
            None => {
                let g = if self.s.accounts.gid_used(uid) {
                    (100..=999)
                        .rev()
                        .find(|&g| !self.s.accounts.gid_used(g))
                        .unwrap_or(999)
                } else {
                    uid
                };
                self.s.accounts.groupadd(name, g);
                g
            }
        };
        let home = value(&f, &["-d", "--home-dir"])
            .unwrap_or("/nonexistent")
            .to_string();
        let shell = value(&f, &["-s", "--shell"])
            .unwrap_or("/usr/sbin/nologin")
            .to_string();
        self.s
            .accounts
            .useradd_system(name, uid, gid, &home, &shell);
        if let Some(c) = value(&f, &["-c", "--comment"]) {
            self.s.accounts.set_gecos(name, c);
        }
        Outcome::status(0)
    }

    fn usermod(&mut self, name: &str, args: &[String]) -> Outcome {
        let (f, pos) = opts(
            args,
            &[
                "-c",
                "--comment",
                "-G",
                "--groups",
                "-a",
                "-d",
                "-s",
                "-f",
                "-M",
                "--members",
            ],
        );
        match name {
            "gpasswd" => {
                if let (Some(u), Some(g)) = (value(&f, &["-a"]), pos.first()) {
                    self.s.accounts.add_member(g, u);
                    return Outcome::status(0);
                }
            }
            "chfn" => {
                if let (Some(c), Some(u)) = (value(&f, &["-f"]), pos.first()) {
                    self.s.accounts.set_gecos(u, c);
                    return Outcome::status(0);
                }
            }
            _ => {
                let Some(u) = pos.first() else {
                    return Outcome::status(2);
                };
                let mut done = false;
                if let Some(c) = value(&f, &["-c", "--comment"]) {
                    self.s.accounts.set_gecos(u, c);
                    done = true;
                }
                if let Some(gs) = value(&f, &["-G", "--groups"]) {
                    for g in gs.split(',') {
                        self.s.accounts.add_member(g, u);
                    }
                    done = true;
                }
                if done {
                    return Outcome::status(0);
                }
            }
        }
        self.s.not_reproduced(format!("{name} {}", args.join(" ")));
        Outcome::status(0)
    }

    fn debconf(&mut self, sh: &mut Shell, cmd: &str, args: &[String]) -> Outcome {
        let q = args.first().cloned().unwrap_or_default();
        match cmd {
            "db_get" => match self.s.debconf_get(&q) {
                Some(v) => {
                    sh.vars.insert("RET".into(), v);
                    Outcome::status(0)
                }
                None => {
                    sh.vars.insert("RET".into(), String::new());
                    Outcome::status(10)
                }
            },
            "db_set" => {
                self.s.debconf.insert(q, args[1..].join(" "));
                Outcome::status(0)
            }
            "db_fget" => {
                sh.vars.insert("RET".into(), "false".into());
                Outcome::status(0)
            }
            "db_version" => {
                sh.vars.insert("RET".into(), "2.0".into());
                Outcome::status(0)
            }
            "db_input" => Outcome::status(30),
            "db_metaget" => {
                let field = args.get(1).cloned().unwrap_or_default();
                let v = self.s.debconf_field(&q, &field).unwrap_or_default();
                sh.vars.insert("RET".into(), v);
                Outcome::status(0)
            }
            _ => Outcome::status(0),
        }
    }
}

/// `dpkg --compare-versions A OP B`, empty versions as dpkg treats them.
fn compare_versions(a: &str, op: &str, b: &str) -> bool {
    use std::cmp::Ordering::*;
    let nl = op.ends_with("-nl");
    let op = op.trim_end_matches("-nl");
    let ord = match (a.is_empty(), b.is_empty()) {
        (true, true) => Equal,
        (true, false) => {
            if nl {
                Greater
            } else {
                Less
            }
        }
        (false, true) => {
            if nl {
                Less
            } else {
                Greater
            }
        }
        _ => crate::pkg::deb::version::compare(a, b),
    };
    match op {
        "lt" | "<<" => ord == Less,
        "le" | "<=" => ord != Greater,
        "eq" | "=" => ord == Equal,
        "ne" => ord != Equal,
        "ge" | ">=" => ord != Less,
        "gt" | ">>" => ord == Greater,
        _ => false,
    }
}

impl shell::Host for Host<'_, '_> {
    fn exec(&mut self, sh: &mut Shell, argv: &[String], stdin: &[u8]) -> Result<Outcome> {
        let name = argv[0].rsplit('/').next().unwrap_or(&argv[0]).to_string();
        if name.starts_with("db_") || name == "command" {
            return Ok(self.builtin(sh, argv, stdin)?.unwrap_or_default());
        }
        if name == "umask" {
            return Ok(
                match argv.get(1).and_then(|m| u32::from_str_radix(m, 8).ok()) {
                    Some(m) => {
                        self.s.umask = m & 0o777;
                        Outcome::ok()
                    }
                    None => Outcome::text(format!("{:04o}\n", self.s.umask)),
                },
            );
        }
        if !self.available(&argv[0])? {
            return Ok(Outcome::status(127));
        }
        if let Some(o) = self.builtin(sh, argv, stdin)? {
            return Ok(o);
        }
        // A shell script of the rootfs: read it with the same interpreter.
        if let Some(path) = self.exists_cmd(&argv[0])? {
            if let Some(data) = self.s.ex.read_file(rel(&path).as_bytes())? {
                if (data.starts_with(b"#!/bin/sh") || data.starts_with(b"#! /bin/sh"))
                    && self.depth < 8
                {
                    if let Ok(script) = shell::parse(&String::from_utf8_lossy(&data)) {
                        let mut sub = Shell::new(sh.vars.clone(), argv[1..].to_vec());
                        sub.vars.insert("0".into(), path.clone());
                        self.depth += 1;
                        let status = sub.run(&script, self)?;
                        self.depth -= 1;
                        return Ok(Outcome::status(status));
                    }
                }
            }
        }
        let shown: Vec<&str> = argv.iter().take(6).map(String::as_str).collect();
        self.s.not_reproduced(format!("runs `{}`", shown.join(" ")));
        Ok(Outcome::status(1))
    }

    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>> {
        self.read_any(path)
    }

    fn write(&mut self, path: &str, data: &[u8], append: bool) -> Result<()> {
        if path == "/dev/null" || path.starts_with("/dev/") || path.starts_with("/proc/") {
            return Ok(());
        }
        let mut content = Vec::new();
        if append {
            content = self.read_any(path)?.unwrap_or_default();
        }
        content.extend_from_slice(data);
        if let Some(af) = account_file(path) {
            self.s
                .accounts
                .set_raw(af, &String::from_utf8_lossy(&content));
            return Ok(());
        }
        let new = Attrs::root(0o666 & !self.s.umask, self.s.mtime);
        let a = self.attrs_of(path)?.unwrap_or(new);
        let a = if a.mode & 0o170000 != 0 {
            Attrs::root(0o644, self.s.mtime)
        } else {
            a
        };
        self.s
            .ex
            .write_file(rel(path).as_bytes(), &mut content.as_slice(), a)?;
        Ok(())
    }

    fn test_file(&mut self, op: &str, path: &str) -> Result<bool> {
        if let Some(af) = account_file(path) {
            return Ok(matches!(op, "-e" | "-f" | "-r" | "-w" | "-s") && self.s.accounts.exists(af));
        }
        let r = rel(path);
        Ok(match op {
            "-L" | "-h" => self
                .s
                .ex
                .lstat(r.as_bytes())?
                .is_some_and(|s| s.kind == MType::Link),
            _ => match self.s.ex.stat(r.as_bytes())? {
                None => false,
                Some(s) => match op {
                    "-e" | "-r" | "-w" => true,
                    "-f" => s.kind == MType::File,
                    "-d" => s.kind == MType::Dir,
                    "-x" => s.mode & 0o111 != 0,
                    "-s" => s.size > 0 || s.kind == MType::Dir,
                    "-c" => s.kind == MType::Char,
                    "-b" => s.kind == MType::Block,
                    "-p" => s.kind == MType::Fifo,
                    "-S" => s.kind == MType::Socket,
                    "-g" => s.mode & 0o2000 != 0,
                    "-u" => s.mode & 0o4000 != 0,
                    "-k" => s.mode & 0o1000 != 0,
                    _ => false,
                },
            },
        })
    }

    fn list(&mut self, dir: &str) -> Result<Vec<String>> {
        Ok(self
            .s
            .ex
            .read_dir(rel(dir).as_bytes())?
            .unwrap_or_default()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect())
    }

    fn source(&mut self, path: &str) -> Result<Option<String>> {
        if path.ends_with("/debconf/confmodule") || path.ends_with("confmodule.sh") {
            self.s.not_reproduced(
                "debconf database /var/cache/debconf (questions answered with their defaults)"
                    .into(),
            );
            // debconf runs the package's config script first when a postinst starts using
            // it (as dpkg-preconfigure would have).
            let i = self.s.current;
            if self.s.in_postinst && self.s.config_ran.insert(i) {
                if let Some(src) = self.s.pkgs[i].members.get("config").cloned() {
                    if let Ok(script) = shell::parse(&String::from_utf8_lossy(&src)) {
                        let env = self.s.script_env(i, "config");
                        let mut sub = Shell::new(env, vec!["configure".into(), String::new()]);
                        self.depth += 1;
                        sub.run(&script, self)?;
                        self.depth -= 1;
                    }
                }
            }
            return Ok(None);
        }
        Ok(self
            .read_any(path)?
            .map(|d| String::from_utf8_lossy(&d).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_modes() {
        let a: Vec<String> = ["-pZ", "a", "b"].iter().map(|s| s.to_string()).collect();
        let (f, p) = opts(&a, &[]);
        assert!(has(&f, &["-p"]) && has(&f, &["-Z"]));
        assert_eq!(p, ["a", "b"]);
        assert_eq!(chmod_mode("u+s", 0o755, false), Some(0o4755));
        assert_eq!(chmod_mode("644", 0o755, false), Some(0o644));
        assert!(compare_versions("", "lt", "1.0"));
        assert!(!compare_versions("", "lt-nl", "1.0"));
    }
}
