//! Declarative configuration: what the maintainer scripts would have produced where the
//! guest needs it, computed on the host without running any code of the target, so
//! every architecture builds without emulation or root.
//!
//! - /etc/passwd, group, shadow, gshadow from base-passwd's master files, plus the system
//!   users and groups packages declare in sysusers.d (systemd, dbus, chrony…);
//! - alternatives (awk → mawk…) from the `update-alternatives --install` calls in the
//!   packages' postinst scripts: the highest priority wins, as in auto mode;
//! - /etc/hostname, /etc/hosts, an empty /etc/machine-id, /etc/shells.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::dpkgdb::InstalledDeb;
use crate::pkg::extract::{Attrs, Extractor};

#[derive(Clone, Debug)]
struct User {
    name: String,
    uid: u32,
    gid: u32,
    gecos: String,
    home: String,
    shell: String,
}

#[derive(Clone, Debug)]
struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

#[derive(Default)]
struct Accounts {
    users: Vec<User>,
    groups: Vec<Group>,
}

impl Accounts {
    fn uid_used(&self, id: u32) -> bool {
        self.users.iter().any(|u| u.uid == id)
    }
    fn gid_used(&self, id: u32) -> bool {
        self.groups.iter().any(|g| g.gid == id)
    }
    fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
    /// systemd-sysusers allocates dynamic system ids downward from 999.
    fn free_id(&self, both: bool) -> u32 {
        (100..=999)
            .rev()
            .find(|&i| !self.gid_used(i) && (!both || !self.uid_used(i)))
            .unwrap_or(999)
    }

    fn parse_master(&mut self, passwd: &str, group: &str) {
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 3 {
                if let Ok(gid) = f[2].parse() {
                    self.groups.push(Group {
                        name: f[0].into(),
                        gid,
                        members: f
                            .get(3)
                            .map(|m| {
                                m.split(',')
                                    .filter(|s| !s.is_empty())
                                    .map(String::from)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                }
            }
        }
        for l in passwd.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 7 {
                if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                    self.users.push(User {
                        name: f[0].into(),
                        uid,
                        gid,
                        gecos: f[4].into(),
                        home: f[5].into(),
                        shell: f[6].into(),
                    });
                }
            }
        }
    }

    /// Apply one sysusers.d file (types g, u, m; r is not needed for fixed allocation).
    fn apply_sysusers(&mut self, text: &str) {
        for line in text.lines() {
            let words = split_sysusers(line);
            if words.len() < 2 || words[0].starts_with('#') {
                continue;
            }
            let (kind, name) = (words[0].as_str(), words[1].clone());
            let id = words.get(2).map(String::as_str).unwrap_or("-");
            match kind {
                "g" => {
                    if self.group(&name).is_some() {
                        continue;
                    }
                    let gid = id
                        .parse()
                        .ok()
                        .filter(|g| !self.gid_used(*g))
                        .unwrap_or_else(|| self.free_id(false));
                    self.groups.push(Group {
                        name,
                        gid,
                        members: vec![],
                    });
                }
                "u" | "u!" => {
                    if self.users.iter().any(|u| u.name == name) {
                        continue;
                    }
                    let (uid_s, gid_s) = id.split_once(':').unwrap_or((id, ""));
                    let uid = uid_s
                        .parse()
                        .ok()
                        .filter(|u| !self.uid_used(*u))
                        .unwrap_or_else(|| match self.group(&name) {
                            Some(g) if !self.uid_used(g.gid) => g.gid,
                            _ => self.free_id(true),
                        });
                    let gid = if gid_s.is_empty() {
                        match self.group(&name) {
                            Some(g) => g.gid,
                            None => {
                                let gid = if self.gid_used(uid) {
                                    self.free_id(true)
                                } else {
                                    uid
                                };
                                self.groups.push(Group {
                                    name: name.clone(),
                                    gid,
                                    members: vec![],
                                });
                                gid
                            }
                        }
                    } else if let Ok(g) = gid_s.parse() {
                        g
                    } else {
                        self.group(gid_s).map(|g| g.gid).unwrap_or(65534)
                    };
                    let opt = |i: usize, d: &str| {
                        words
                            .get(i)
                            .filter(|w| w.as_str() != "-")
                            .cloned()
                            .unwrap_or_else(|| d.to_string())
                    };
                    self.users.push(User {
                        name,
                        uid,
                        gid,
                        gecos: opt(3, ""),
                        home: opt(4, "/"),
                        shell: opt(5, "/usr/sbin/nologin"),
                    });
                }
                "m" => {
                    if let Some(gname) = words.get(2) {
                        if self.group(gname).is_none() {
                            let gid = self.free_id(false);
                            self.groups.push(Group {
                                name: gname.clone(),
                                gid,
                                members: vec![],
                            });
                        }
                        if let Some(g) = self.groups.iter_mut().find(|g| &g.name == gname) {
                            if !g.members.contains(&name) {
                                g.members.push(name);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

impl Accounts {
    /// Debian's adduser allocates system ids upward from FIRST_SYSTEM_UID=100.
    fn free_id_up(&self, both: bool) -> u32 {
        (100..=999)
            .find(|&i| !self.gid_used(i) && (!both || !self.uid_used(i)))
            .unwrap_or(999)
    }

    /// Apply the literal `adduser --system …` / `addgroup --system …` calls of a script.
    fn apply_adduser(&mut self, script: &str) {
        let joined = script.replace("\\\n", " ");
        for line in joined.lines() {
            let words = split_sysusers(line.split(['#', ';', '|', '&']).next().unwrap_or(""));
            let Some(pos) = words.iter().position(|w| w == "adduser" || w == "addgroup") else {
                continue;
            };
            let args = &words[pos + 1..];
            if !args.iter().any(|a| a == "--system") || args.iter().any(|a| a.contains('$')) {
                continue;
            }
            let mut opts: BTreeMap<&str, &str> = BTreeMap::new();
            let mut flags = BTreeSet::new();
            let mut names = Vec::new();
            let mut i = 0;
            while i < args.len() {
                let a = args[i].as_str();
                if matches!(
                    a,
                    "--home"
                        | "--shell"
                        | "--comment"
                        | "--gecos"
                        | "--ingroup"
                        | "--gid"
                        | "--uid"
                ) {
                    if let Some(v) = args.get(i + 1) {
                        opts.insert(a, v.as_str());
                    }
                    i += 2;
                    continue;
                }
                if a.starts_with("--") {
                    flags.insert(a);
                } else {
                    names.push(a);
                }
                i += 1;
            }
            let Some(name) = names.first().map(|s| s.to_string()) else {
                continue;
            };
            if words[pos] == "addgroup" {
                if self.group(&name).is_none() {
                    let gid = self.free_id_up(false);
                    self.groups.push(Group {
                        name,
                        gid,
                        members: vec![],
                    });
                }
                continue;
            }
            if names.len() == 2 {
                // adduser USER GROUP: membership.
                let (u, g) = (names[0].to_string(), names[1]);
                if let Some(gr) = self.groups.iter_mut().find(|x| x.name == g) {
                    if !gr.members.contains(&u) {
                        gr.members.push(u);
                    }
                }
                continue;
            }
            if self.users.iter().any(|u| u.name == name) {
                continue;
            }
            let uid = self.free_id_up(flags.contains("--group"));
            let gid = if flags.contains("--group") {
                match self.group(&name) {
                    Some(g) => g.gid,
                    None => {
                        self.groups.push(Group {
                            name: name.clone(),
                            gid: uid,
                            members: vec![],
                        });
                        uid
                    }
                }
            } else if let Some(g) = opts.get("--ingroup").and_then(|g| self.group(g)) {
                g.gid
            } else {
                65534 // nogroup, adduser's default for system users
            };
            self.users.push(User {
                name,
                uid,
                gid,
                gecos: opts
                    .get("--comment")
                    .or(opts.get("--gecos"))
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                home: opts
                    .get("--home")
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "/nonexistent".into()),
                shell: opts
                    .get("--shell")
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "/usr/sbin/nologin".into()),
            });
        }
    }
}

/// Split a sysusers.d line into words, honouring double quotes.
fn split_sysusers(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.trim().chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// One `update-alternatives --install` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alternative {
    pub link: String,
    pub name: String,
    pub path: String,
    pub priority: i64,
    /// (link, name, path)
    pub slaves: Vec<(String, String, String)>,
}

/// Find the literal `update-alternatives --install` calls in a maintainer script.
pub fn parse_alternatives(script: &str) -> Vec<Alternative> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let Some(pos) = line.find("update-alternatives") else {
            continue;
        };
        let words: Vec<&str> = line[pos..].split_whitespace().collect();
        let Some(i) = words.iter().position(|w| *w == "--install") else {
            continue;
        };
        let args: Vec<&str> = words[i + 1..]
            .iter()
            .take_while(|w| !matches!(**w, ";" | "&&" | "||" | "|"))
            .map(|w| w.trim_end_matches(';').trim_matches(['"', '\'']))
            .collect();
        if args.len() < 4 || args.iter().any(|a| a.contains('$') || a.contains('`')) {
            continue;
        }
        let Ok(priority) = args[3].parse() else {
            continue;
        };
        let mut alt = Alternative {
            link: args[0].into(),
            name: args[1].into(),
            path: args[2].into(),
            priority,
            slaves: vec![],
        };
        let mut j = 4;
        while j + 3 < args.len() && args[j] == "--slave" {
            alt.slaves
                .push((args[j + 1].into(), args[j + 2].into(), args[j + 3].into()));
            j += 4;
        }
        out.push(alt);
    }
    out
}

fn rel(p: &str) -> &[u8] {
    p.trim_start_matches('/').as_bytes()
}

/// Produce the configuration files. `mtime` stamps generated files (SOURCE_DATE_EPOCH).
pub fn configure(ex: &mut Extractor, debs: &[InstalledDeb], mtime: i64) -> Result<()> {
    let file = Attrs::root(0o644, mtime);
    ex.create_dir(b"etc", Attrs::root(0o755, mtime))?;

    // Accounts.
    let mut acc = Accounts::default();
    let passwd = ex.read_file(b"usr/share/base-passwd/passwd.master")?;
    let group = ex.read_file(b"usr/share/base-passwd/group.master")?;
    if let (Some(p), Some(g)) = (passwd, group) {
        acc.parse_master(&String::from_utf8_lossy(&p), &String::from_utf8_lossy(&g));
    } else {
        // No base-passwd in the set: root alone, so ownership names still resolve.
        acc.parse_master("root:x:0:0:root:/root:/bin/sh\n", "root:x:0:\n");
    }
    let mut sysusers: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for d in debs {
        for f in &d.files {
            let p = String::from_utf8_lossy(&f.path).into_owned();
            if (p.starts_with("/usr/lib/sysusers.d/") || p.starts_with("/lib/sysusers.d/"))
                && p.ends_with(".conf")
            {
                let base = p.rsplit('/').next().unwrap().to_string();
                if let Some(data) = ex.read_file(rel(&p))? {
                    sysusers.insert(base, data);
                }
            }
        }
    }
    for data in sysusers.values() {
        acc.apply_sysusers(&String::from_utf8_lossy(data));
    }
    let mut scripts: Vec<(String, &Vec<u8>)> = debs
        .iter()
        .filter_map(|d| d.control.members.get("postinst").map(|s| (d.name(), s)))
        .collect();
    scripts.sort();
    for (_, script) in scripts {
        acc.apply_adduser(&String::from_utf8_lossy(script));
    }
    let days = mtime / 86400;
    let mut pw = String::new();
    let mut sh = String::new();
    for u in &acc.users {
        pw.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            u.name, u.uid, u.gid, u.gecos, u.home, u.shell
        ));
        sh.push_str(&format!("{}:*:{days}:0:99999:7:::\n", u.name));
    }
    let mut gr = String::new();
    let mut gsh = String::new();
    for g in &acc.groups {
        gr.push_str(&format!("{}:x:{}:{}\n", g.name, g.gid, g.members.join(",")));
        gsh.push_str(&format!("{}:*::{}\n", g.name, g.members.join(",")));
    }
    let shadow_gid = acc.group("shadow").map(|g| g.gid).unwrap_or(0);
    ex.write_file(b"etc/passwd", &mut pw.as_bytes(), file)?;
    ex.write_file(b"etc/group", &mut gr.as_bytes(), file)?;
    let secret = Attrs {
        mode: 0o640,
        uid: 0,
        gid: shadow_gid,
        mtime,
    };
    ex.write_file(b"etc/shadow", &mut sh.as_bytes(), secret)?;
    ex.write_file(b"etc/gshadow", &mut gsh.as_bytes(), secret)?;

    // Alternatives: highest priority per name, as update-alternatives' auto mode.
    let mut best: BTreeMap<String, Alternative> = BTreeMap::new();
    let mut all: BTreeMap<String, Vec<Alternative>> = BTreeMap::new();
    for d in debs {
        if let Some(script) = d.control.members.get("postinst") {
            for alt in parse_alternatives(&String::from_utf8_lossy(script)) {
                if ex.read_file(rel(&alt.path))?.is_none() {
                    continue;
                }
                all.entry(alt.name.clone()).or_default().push(alt.clone());
                match best.get(&alt.name) {
                    Some(b) if b.priority >= alt.priority => {}
                    _ => {
                        best.insert(alt.name.clone(), alt);
                    }
                }
            }
        }
    }
    if !best.is_empty() {
        ex.create_dir(b"etc/alternatives", Attrs::root(0o755, mtime))?;
        ex.create_dir(b"var/lib/dpkg/alternatives", Attrs::root(0o755, mtime))?;
    }
    let link_attrs = Attrs::root(0o777, mtime);
    for (name, alt) in &best {
        let etc = format!("/etc/alternatives/{name}");
        ex.symlink(rel(&etc), alt.path.as_bytes(), link_attrs)?;
        ex.symlink(rel(&alt.link), etc.as_bytes(), link_attrs)?;
        for (slink, sname, spath) in &alt.slaves {
            if ex.read_file(rel(spath))?.is_some() {
                let setc = format!("/etc/alternatives/{sname}");
                ex.symlink(rel(&setc), spath.as_bytes(), link_attrs)?;
                ex.symlink(rel(slink), setc.as_bytes(), link_attrs)?;
            }
        }
        // update-alternatives' administrative file, so the guest can manage it later.
        let alts = &all[name];
        let mut slave_names: Vec<(String, String)> = Vec::new();
        for a in alts {
            for (l, n, _) in &a.slaves {
                if !slave_names.iter().any(|(sn, _)| sn == n) {
                    slave_names.push((n.clone(), l.clone()));
                }
            }
        }
        let mut admin = format!("auto\n{}\n", alt.link);
        for (n, l) in &slave_names {
            admin.push_str(&format!("{n}\n{l}\n"));
        }
        admin.push('\n');
        for a in alts {
            admin.push_str(&format!("{}\n{}\n", a.path, a.priority));
            for (n, _) in &slave_names {
                let p = a
                    .slaves
                    .iter()
                    .find(|(_, sn, _)| sn == n)
                    .map(|s| s.2.as_str())
                    .unwrap_or("");
                admin.push_str(p);
                admin.push('\n');
            }
        }
        admin.push('\n');
        ex.write_file(
            format!("var/lib/dpkg/alternatives/{name}").as_bytes(),
            &mut admin.as_bytes(),
            file,
        )?;
    }

    enable_units(ex, debs, mtime)?;
    first_install_defaults(ex, debs, &acc, mtime)?;

    // Host identity: nothing from the build host leaks in.
    ex.write_file(b"etc/hostname", &mut &b"localhost\n"[..], file)?;
    ex.write_file(
        b"etc/hosts",
        &mut &b"127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"[..],
        file,
    )?;
    // Empty: systemd generates an id at first boot (and treats the system as unprovisioned).
    ex.write_file(b"etc/machine-id", &mut &b""[..], Attrs::root(0o444, mtime))?;

    // /etc/shells, as add-shell would have written it for the shells present.
    let mut shells = String::from("# /etc/shells: valid login shells\n");
    let mut present = BTreeSet::new();
    for s in [
        "/bin/sh",
        "/usr/bin/sh",
        "/bin/bash",
        "/usr/bin/bash",
        "/bin/dash",
        "/usr/bin/dash",
        "/bin/rbash",
        "/usr/bin/rbash",
    ] {
        if ex.read_file(rel(s))?.is_some() && present.insert(s) {
            shells.push_str(s);
            shells.push('\n');
        }
    }
    ex.write_file(b"etc/shells", &mut shells.as_bytes(), file)?;
    Ok(())
}

/// What the postinst scripts of base-files, libc-bin, tzdata, libpam-modules and chrony
/// do on a first install: copy shipped defaults into /etc and /root, create the FHS
/// folders and log files, point /etc/localtime at UTC.
fn first_install_defaults(
    ex: &mut Extractor,
    debs: &[InstalledDeb],
    acc: &Accounts,
    mtime: i64,
) -> Result<()> {
    let gid = |name: &str| acc.group(name).map(|g| g.gid).unwrap_or(0);
    let installed = |n: &str| debs.iter().any(|d| d.name() == n);
    let copies: [(&str, &str, u32, u32); 8] = [
        (
            "usr/share/base-files/dot.profile",
            "root/.profile",
            0o644,
            0,
        ),
        ("usr/share/base-files/dot.bashrc", "root/.bashrc", 0o644, 0),
        ("usr/share/base-files/profile", "etc/profile", 0o644, 0),
        ("usr/share/base-files/motd", "etc/motd", 0o644, 0),
        (
            "usr/share/base-files/info.dir",
            "usr/share/info/dir",
            0o644,
            0,
        ),
        (
            "usr/share/libc-bin/nsswitch.conf",
            "etc/nsswitch.conf",
            0o644,
            0,
        ),
        (
            "usr/share/chrony/chrony.conf",
            "etc/chrony/chrony.conf",
            0o644,
            0,
        ),
        (
            "usr/share/chrony/chrony.keys",
            "etc/chrony/chrony.keys",
            0o640,
            gid("_chrony"),
        ),
    ];
    for (src, dst, mode, g) in copies {
        if ex.read_file(dst.as_bytes())?.is_some() {
            continue;
        }
        if let Some(data) = ex.read_file(src.as_bytes())? {
            ex.write_file(
                dst.as_bytes(),
                &mut data.as_slice(),
                Attrs {
                    mode,
                    uid: 0,
                    gid: g,
                    mtime,
                },
            )?;
        }
    }
    if installed("base-files") {
        for d in [
            "mnt",
            "srv",
            "opt",
            "etc/opt",
            "var/opt",
            "media",
            "usr/local",
            "usr/local/share",
            "usr/local/share/man",
            "usr/local/bin",
            "usr/local/games",
            "usr/local/lib",
            "usr/local/libexec",
            "usr/local/include",
            "usr/local/sbin",
            "usr/local/src",
            "usr/local/etc",
        ] {
            ex.create_dir(d.as_bytes(), Attrs::root(0o755, mtime))?;
        }
        ex.create_dir(
            b"var/mail",
            Attrs {
                mode: 0o2775,
                uid: 0,
                gid: gid("mail"),
                mtime,
            },
        )?;
        ex.create_dir(b"run/lock", Attrs::root(0o1777, mtime))?;
        let link = Attrs::root(0o777, mtime);
        if ex.read_file(b"var/spool/mail").is_ok() {
            ex.create_dir(b"var/spool", Attrs::root(0o755, mtime))?;
            ex.symlink(b"var/spool/mail", b"../mail", link)?;
        }
        ex.symlink(b"usr/local/man", b"share/man", link)?;
        for origin in ["debian", "ubuntu"] {
            if ex
                .read_file(format!("etc/dpkg/origins/{origin}").as_bytes())?
                .is_some()
            {
                ex.symlink(b"etc/dpkg/origins/default", origin.as_bytes(), link)?;
                break;
            }
        }
        let utmp = gid("utmp");
        for (f, mode) in [
            ("var/log/wtmp", 0o664),
            ("var/log/btmp", 0o660),
            ("var/log/lastlog", 0o664),
        ] {
            ex.write_file(
                f.as_bytes(),
                &mut &b""[..],
                Attrs {
                    mode,
                    uid: 0,
                    gid: utmp,
                    mtime,
                },
            )?;
        }
    }
    if ex.read_file(b"usr/share/zoneinfo/Etc/UTC")?.is_some() {
        ex.symlink(
            b"etc/localtime",
            b"/usr/share/zoneinfo/Etc/UTC",
            Attrs::root(0o777, mtime),
        )?;
    }
    if installed("libpam-modules") && ex.read_file(b"etc/environment")?.is_none() {
        ex.write_file(b"etc/environment", &mut &b""[..], Attrs::root(0o644, mtime))?;
    }
    Ok(())
}

/// Units a fresh install enables: `deb-systemd-helper enable 'U'` (dh_installsystemd's
/// snippet; those guarded by `debian-installed` are only re-enabled on upgrade) and
/// literal `systemctl … enable U` calls (systemd's own postinst).
pub fn units_to_enable(script: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = words.iter().position(|w| *w == "enable") else {
            continue;
        };
        let by_helper = words[..i].contains(&"deb-systemd-helper");
        let by_systemctl = words[..i].contains(&"systemctl");
        if !(by_helper || by_systemctl) {
            continue;
        }
        let Some(unit) = words.get(i + 1).map(|u| u.trim_matches(['\'', '"'])) else {
            continue;
        };
        if unit.contains('$') || !unit.contains('.') {
            continue;
        }
        if by_helper && script.contains(&format!("debian-installed '{unit}'")) {
            continue;
        }
        if !out.iter().any(|u| u == unit) {
            out.push(unit.to_string());
        }
    }
    out
}

/// Create the [Install] symlinks of the units packages enable on a fresh install.
fn enable_units(ex: &mut Extractor, debs: &[InstalledDeb], mtime: i64) -> Result<()> {
    let mut units = Vec::new();
    for d in debs {
        if let Some(script) = d.control.members.get("postinst") {
            units.extend(units_to_enable(&String::from_utf8_lossy(script)));
        }
    }
    units.sort();
    units.dedup();
    for unit in units {
        enable_unit(ex, &unit, mtime)?;
    }
    Ok(())
}

/// Create one unit's [Install] symlinks (WantedBy, RequiredBy, Alias) under
/// /etc/systemd/system, as `systemctl enable` would. Returns false when the rootfs has no
/// such unit in /usr/lib/systemd/system (nothing is written then).
pub fn enable_unit(ex: &mut Extractor, unit: &str, mtime: i64) -> Result<bool> {
    let link = Attrs::root(0o777, mtime);
    // getty@tty1.service is an instance of getty@.service.
    let file = match unit.split_once('@') {
        Some((base, rest)) if !rest.starts_with('.') => {
            format!("{base}@.{}", rest.rsplit('.').next().unwrap_or("service"))
        }
        _ => unit.to_string(),
    };
    let unit_path = format!("/usr/lib/systemd/system/{file}");
    let Some(text) = ex.read_file(rel(&unit_path))? else {
        return Ok(false);
    };
    let text = String::from_utf8_lossy(&text);
    let mut in_install = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        for target in v.split_whitespace() {
            let path = match k.trim() {
                "WantedBy" => format!("etc/systemd/system/{target}.wants/{unit}"),
                "RequiredBy" => format!("etc/systemd/system/{target}.requires/{unit}"),
                "Alias" => format!("etc/systemd/system/{target}"),
                _ => continue,
            };
            ex.symlink(path.as_bytes(), unit_path.as_bytes(), link)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternatives_are_read_from_scripts() {
        let s = "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n  update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n    --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz\nfi\nupdate-alternatives --install $X y z 1\n";
        let a = parse_alternatives(s);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].name, "awk");
        assert_eq!(a[0].path, "/usr/bin/mawk");
        assert_eq!(a[0].priority, 5);
        assert_eq!(a[0].slaves.len(), 1);
    }

    #[test]
    fn units_enabled_on_fresh_install() {
        let s = "if true; then\n\tdeb-systemd-helper enable 'chrony.service' >/dev/null || true\n\tif deb-systemd-helper debian-installed 'chrony-wait.service'; then\n\t\tdeb-systemd-helper enable 'chrony-wait.service'\n\tfi\nfi\nsystemctl ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} enable getty@tty1.service || true\nsystemctl enable $unit\n";
        assert_eq!(units_to_enable(s), ["chrony.service", "getty@tty1.service"]);
    }

    #[test]
    fn sysusers_allocate_like_systemd() {
        let mut acc = Accounts::default();
        acc.parse_master(
            "root:x:0:0:root:/root:/bin/bash\n",
            "root:x:0:\nshadow:x:42:\n",
        );
        acc.apply_sysusers("g systemd-journal - -\nu messagebus - \"System Message Bus\" /nonexistent\nu _chr 998:998 \"Chrony\" /var/lib/chrony\nm _chr shadow\n");
        let mb = acc.users.iter().find(|u| u.name == "messagebus").unwrap();
        assert_eq!(mb.home, "/nonexistent");
        assert_eq!(mb.shell, "/usr/sbin/nologin");
        assert_eq!(acc.group("systemd-journal").unwrap().gid, 999);
        assert_eq!(acc.group("shadow").unwrap().members, ["_chr"]);
        assert!(
            acc.users
                .iter()
                .all(|u| u.uid != 999 || u.name == "messagebus")
        );
        acc.apply_adduser("  adduser --system \\\n  --group --quiet --comment \"Chrony daemon\" \\\n --home /var/lib/chrony --no-create-home _chrony\n");
        let c = acc.users.iter().find(|u| u.name == "_chrony").unwrap();
        assert_eq!(
            (c.uid, c.gid, c.home.as_str()),
            (100, 100, "/var/lib/chrony")
        );
        assert_eq!(c.gecos, "Chrony daemon");
    }
}
