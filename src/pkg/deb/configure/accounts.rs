//! /etc/passwd, group, shadow and gshadow as the account tools of a Debian install leave
//! them: base-passwd's preinst creates passwd and group, `shadowconfig on` (pwconv,
//! grpconv) moves the passwords into shadow and gshadow, `adduser --system` allocates
//! upward from FIRST_SYSTEM_UID/GID (uid and gid separately) through groupadd, useradd
//! and usermod, and systemd-sysusers allocates downward from 999. Each tool rewrites only
//! the files it changes and keeps the previous version as `file-`, so the backups are
//! those of the last change, as on a real system. Days since the epoch come from the
//! build timestamp (SOURCE_DATE_EPOCH), as shadow and systemd read it.

use std::collections::BTreeMap;

/// The four files, in the order the tools write them.
pub const FILES: [&str; 4] = ["passwd", "group", "shadow", "gshadow"];

/// One of the account files: its lines, and what it held before the last write.
#[derive(Clone, Debug, Default)]
pub struct AccountFile {
    /// None until something creates it.
    pub lines: Option<Vec<String>>,
    /// The content before the last write (the `-` backup), when there was one.
    pub backup: Option<Vec<String>>,
}

/// The account database of the rootfs being configured.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    pub files: BTreeMap<&'static str, AccountFile>,
    /// Set when a tool locked the files (lckpwdf leaves /etc/.pwd.lock behind).
    pub locked: bool,
    /// Days since the epoch of the build (shadow's "last change").
    pub day: i64,
}

/// A passwd or group line split into fields.
fn fields(line: &str) -> Vec<String> {
    line.split(':').map(String::from).collect()
}

impl Accounts {
    pub fn new(day: i64) -> Accounts {
        let mut files = BTreeMap::new();
        for f in FILES {
            files.insert(f, AccountFile::default());
        }
        Accounts {
            files,
            locked: false,
            day,
        }
    }

    fn lines(&self, f: &str) -> &[String] {
        self.files
            .get(f)
            .and_then(|a| a.lines.as_deref())
            .unwrap_or(&[])
    }

    pub fn exists(&self, f: &str) -> bool {
        self.files.get(f).is_some_and(|a| a.lines.is_some())
    }

    /// Replace a file's content as one tool run does (backup = previous content).
    fn commit(&mut self, f: &'static str, new: Vec<String>) {
        let e = self.files.entry(f).or_default();
        if e.lines.as_ref() == Some(&new) {
            return;
        }
        e.backup = e.lines.take();
        e.lines = Some(new);
        self.locked = true;
    }

    /// Create a file with `content` where it is missing (base-passwd's preinst, `cp`).
    pub fn create_if_missing(&mut self, f: &'static str, content: &str) {
        let e = self.files.entry(f).or_default();
        if e.lines.is_none() {
            e.lines = Some(content.lines().map(String::from).collect());
        }
    }

    /// Set a file's content as a script's plain write would (no backup, no lock).
    pub fn set_raw(&mut self, f: &'static str, content: &str) {
        self.files.entry(f).or_default().lines = Some(content.lines().map(String::from).collect());
    }

    pub fn text(&self, f: &str) -> Option<String> {
        self.files
            .get(f)
            .and_then(|a| a.lines.as_ref())
            .map(|l| join(l))
    }

    pub fn backup_text(&self, f: &str) -> Option<String> {
        self.files
            .get(f)
            .and_then(|a| a.backup.as_ref())
            .map(|l| join(l))
    }

    pub fn user(&self, name: &str) -> Option<Vec<String>> {
        self.lines("passwd")
            .iter()
            .map(|l| fields(l))
            .find(|f| f[0] == name)
    }

    pub fn group(&self, name: &str) -> Option<Vec<String>> {
        self.lines("group")
            .iter()
            .map(|l| fields(l))
            .find(|f| f[0] == name)
    }

    pub fn uid_of(&self, name: &str) -> Option<u32> {
        self.user(name).and_then(|f| f.get(2)?.parse().ok())
    }

    pub fn gid_of(&self, name: &str) -> Option<u32> {
        self.group(name).and_then(|f| f.get(2)?.parse().ok())
    }

    pub fn uid_used(&self, id: u32) -> bool {
        self.lines("passwd")
            .iter()
            .any(|l| fields(l).get(2).and_then(|v| v.parse::<u32>().ok()) == Some(id))
    }

    pub fn gid_used(&self, id: u32) -> bool {
        self.lines("group")
            .iter()
            .any(|l| fields(l).get(2).and_then(|v| v.parse::<u32>().ok()) == Some(id))
    }

    /// `getent passwd|group NAME|ID` output line.
    pub fn getent(&self, db: &str, key: &str) -> Option<String> {
        let f = match db {
            "passwd" => "passwd",
            "group" => "group",
            "shadow" => "shadow",
            "gshadow" => "gshadow",
            _ => return None,
        };
        self.lines(f)
            .iter()
            .find(|l| {
                let fs = fields(l);
                fs[0] == key
                    || (f != "shadow"
                        && f != "gshadow"
                        && fs.get(2).map(String::as_str) == Some(key))
            })
            .cloned()
    }

    /// pwconv: a shadow entry for every user without one, the password moved there.
    pub fn pwconv(&mut self, min: &str, max: &str, warn: &str) {
        let passwd = self.lines("passwd").to_vec();
        let mut shadow = self.lines("shadow").to_vec();
        let mut new_passwd = Vec::new();
        for l in &passwd {
            let mut f = fields(l);
            if f.len() < 7 {
                new_passwd.push(l.clone());
                continue;
            }
            if !shadow.iter().any(|s| fields(s)[0] == f[0]) {
                let pw = if f[1] == "x" {
                    "!".to_string()
                } else {
                    f[1].clone()
                };
                shadow.push(format!("{}:{pw}:{}:{min}:{max}:{warn}:::", f[0], self.day));
            }
            f[1] = "x".into();
            new_passwd.push(f.join(":"));
        }
        self.commit("passwd", new_passwd);
        self.commit("shadow", shadow);
    }

    /// grpconv: a gshadow entry for every group without one.
    pub fn grpconv(&mut self) {
        let group = self.lines("group").to_vec();
        let mut gshadow = self.lines("gshadow").to_vec();
        let mut new_group = Vec::new();
        for l in &group {
            let mut f = fields(l);
            if f.len() < 4 {
                new_group.push(l.clone());
                continue;
            }
            if !gshadow.iter().any(|s| fields(s)[0] == f[0]) {
                let pw = if f[1] == "x" {
                    "!".to_string()
                } else {
                    f[1].clone()
                };
                gshadow.push(format!("{}:{pw}::{}", f[0], f[3]));
            }
            f[1] = "x".into();
            new_group.push(f.join(":"));
        }
        self.commit("group", new_group);
        self.commit("gshadow", gshadow);
    }

    /// groupadd -g GID NAME (shadow 4.x: group and gshadow, password "!").
    pub fn groupadd(&mut self, name: &str, gid: u32) {
        let mut g = self.lines("group").to_vec();
        g.push(format!("{name}:x:{gid}:"));
        self.commit("group", g);
        if self.exists("gshadow") {
            let mut gs = self.lines("gshadow").to_vec();
            gs.push(format!("{name}:!::"));
            self.commit("gshadow", gs);
        }
    }

    /// useradd -r (system account): passwd and shadow; no aging fields for system users.
    pub fn useradd_system(&mut self, name: &str, uid: u32, gid: u32, home: &str, shell: &str) {
        let mut p = self.lines("passwd").to_vec();
        p.push(format!("{name}:x:{uid}:{gid}::{home}:{shell}"));
        self.commit("passwd", p);
        if self.exists("shadow") {
            let mut s = self.lines("shadow").to_vec();
            s.push(format!("{name}:!:{}::::::", self.day));
            self.commit("shadow", s);
        }
    }

    /// usermod -c COMMENT NAME: passwd only.
    pub fn set_gecos(&mut self, name: &str, gecos: &str) {
        let p: Vec<String> = self
            .lines("passwd")
            .iter()
            .map(|l| {
                let mut f = fields(l);
                if f[0] == name && f.len() >= 7 {
                    f[4] = gecos.to_string();
                    f.join(":")
                } else {
                    l.clone()
                }
            })
            .collect();
        self.commit("passwd", p);
    }

    /// usermod -a -G GROUP USER / gpasswd -a: group and gshadow member lists (both keep
    /// the members in their fourth field).
    pub fn add_member(&mut self, group: &str, user: &str) {
        for f in ["group", "gshadow"] {
            if !self.exists(f) {
                continue;
            }
            let idx = 3;
            let new: Vec<String> = self
                .lines(f)
                .iter()
                .map(|l| {
                    let mut fs = fields(l);
                    if fs[0] == group && fs.len() > idx {
                        let mut m: Vec<&str> =
                            fs[idx].split(',').filter(|s| !s.is_empty()).collect();
                        if !m.contains(&user) {
                            m.push(user);
                        }
                        fs[idx] = m.join(",");
                        fs.join(":")
                    } else {
                        l.clone()
                    }
                })
                .collect();
            self.commit(f, new);
        }
    }

    /// The first id in `min..=max` free in the database(s) named.
    pub fn first_free(&self, min: u32, max: u32, uid: bool, gid: bool) -> Option<u32> {
        (min..=max).find(|&i| !(uid && self.uid_used(i) || gid && self.gid_used(i)))
    }
}

fn join(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    if !lines.is_empty() {
        s.push('\n');
    }
    s
}

/// One `adduser`/`addgroup` invocation as maintainer scripts write it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddUser {
    pub group_only: bool,
    pub system: bool,
    pub make_group: bool,
    pub names: Vec<String>,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub comment: Option<String>,
    pub ingroup: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl AddUser {
    /// Parse `adduser …` or `addgroup …` arguments (argv[0] decides which).
    pub fn parse(argv: &[String]) -> AddUser {
        let mut a = AddUser {
            group_only: argv[0].ends_with("addgroup"),
            ..Default::default()
        };
        let mut i = 1;
        while i < argv.len() {
            let s = argv[i].as_str();
            let (key, inline) = match s.split_once('=') {
                Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
                _ => (s, None),
            };
            let mut value = || {
                inline.clone().or_else(|| {
                    i += 1;
                    argv.get(i).cloned()
                })
            };
            match key {
                "--system" => a.system = true,
                "--group" => {
                    if a.group_only {
                        // `addgroup --group` is plain addgroup.
                    } else {
                        a.make_group = true
                    }
                }
                "--home" => a.home = value(),
                "--shell" => a.shell = value(),
                "--comment" | "--gecos" => a.comment = value(),
                "--ingroup" => a.ingroup = value(),
                "--uid" => a.uid = value().and_then(|v| v.parse().ok()),
                "--gid" => a.gid = value().and_then(|v| v.parse().ok()),
                "--firstuid" | "--lastuid" | "--firstgid" | "--lastgid" | "--conf" => {
                    let _ = value();
                }
                k if k.starts_with('-') => {}
                _ => a.names.push(s.to_string()),
            }
            i += 1;
        }
        a
    }
}

/// adduser.conf's system ranges (Debian's defaults when the file says nothing).
#[derive(Clone, Copy, Debug)]
pub struct Ranges {
    pub first_uid: u32,
    pub last_uid: u32,
    pub first_gid: u32,
    pub last_gid: u32,
}

impl Ranges {
    pub fn from_conf(text: Option<&str>) -> Ranges {
        let mut r = Ranges {
            first_uid: 100,
            last_uid: 999,
            first_gid: 100,
            last_gid: 999,
        };
        for l in text.unwrap_or("").lines() {
            let Some((k, v)) = l.split_once('=') else {
                continue;
            };
            let v: Option<u32> = v.trim().trim_matches('"').parse().ok();
            match (k.trim(), v) {
                ("FIRST_SYSTEM_UID", Some(v)) => r.first_uid = v,
                ("LAST_SYSTEM_UID", Some(v)) => r.last_uid = v,
                ("FIRST_SYSTEM_GID", Some(v)) => r.first_gid = v,
                ("LAST_SYSTEM_GID", Some(v)) => r.last_gid = v,
                _ => {}
            }
        }
        r
    }
}

/// Run `adduser`/`addgroup` as Debian's adduser 3.15x does for system accounts and
/// memberships. Returns an error text for what is not emulated (normal users).
pub fn adduser(acc: &mut Accounts, a: &AddUser, ranges: Ranges) -> Result<(), String> {
    if a.group_only {
        let Some(name) = a.names.first() else {
            return Err("addgroup without a name".into());
        };
        if acc.group(name).is_some() {
            return Ok(());
        }
        let gid = match a.gid {
            Some(g) => g,
            None if a.system => acc
                .first_free(ranges.first_gid, ranges.last_gid, false, true)
                .ok_or("no free system gid")?,
            None => return Err(format!("addgroup {name} (a non-system group)")),
        };
        acc.groupadd(name, gid);
        return Ok(());
    }
    if a.names.len() == 2 && !a.system {
        // adduser USER GROUP: membership (usermod -a -G).
        if acc.user(&a.names[0]).is_some() && acc.group(&a.names[1]).is_some() {
            acc.add_member(&a.names[1], &a.names[0]);
        }
        return Ok(());
    }
    if !a.system {
        return Err(format!(
            "adduser {} (a normal user)",
            a.names.first().map(String::as_str).unwrap_or("")
        ));
    }
    let Some(name) = a.names.first() else {
        return Err("adduser without a name".into());
    };
    if acc.user(name).is_some() {
        return Ok(());
    }
    let uid = match a.uid {
        Some(u) => u,
        None => acc
            .first_free(ranges.first_uid, ranges.last_uid, true, false)
            .ok_or("no free system uid")?,
    };
    let (gid, new_group) = if a.make_group {
        match acc.gid_of(name) {
            Some(g) => (g, false),
            None => {
                let g = match (a.gid, a.uid) {
                    (Some(g), _) => g,
                    (None, Some(u)) => u,
                    _ => acc
                        .first_free(ranges.first_gid, ranges.last_gid, false, true)
                        .ok_or("no free system gid")?,
                };
                (g, true)
            }
        }
    } else if let Some(g) = &a.ingroup {
        (acc.gid_of(g).unwrap_or(65534), false)
    } else if let Some(g) = a.gid {
        (g, false)
    } else {
        (65534, false)
    };
    if new_group {
        acc.groupadd(name, gid);
    }
    let home = a.home.clone().unwrap_or_else(|| "/nonexistent".into());
    let shell = a
        .shell
        .clone()
        .unwrap_or_else(|| "/usr/sbin/nologin".into());
    acc.useradd_system(name, uid, gid, &home, &shell);
    if let Some(c) = &a.comment {
        acc.set_gecos(name, c);
    }
    Ok(())
}

/// One sysusers.d line.
#[derive(Clone, Debug)]
struct SysItem {
    kind: String,
    name: String,
    id: String,
    gecos: Option<String>,
    home: Option<String>,
    shell: Option<String>,
}

/// Split a sysusers.d line into words, honouring double quotes.
fn words(line: &str) -> Vec<String> {
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

fn items(text: &str) -> Vec<SysItem> {
    let mut out = Vec::new();
    for line in text.lines() {
        let w = words(line);
        if w.len() < 2 || w[0].starts_with('#') {
            continue;
        }
        let opt = |i: usize| w.get(i).filter(|s| s.as_str() != "-").cloned();
        out.push(SysItem {
            kind: w[0].clone(),
            name: w[1].clone(),
            id: w.get(2).cloned().unwrap_or_else(|| "-".into()),
            gecos: opt(3),
            home: opt(4),
            shell: opt(5),
        });
    }
    out
}

/// systemd-sysusers over the given files' contents (in the order given): groups first
/// (with the group of each `u` line), then users, new entries appended; ids counted
/// down from 999 and a user's uid matching its group's gid where free. One run writes
/// each changed file once.
pub fn sysusers(acc: &mut Accounts, texts: &[String]) {
    let all: Vec<SysItem> = texts.iter().flat_map(|t| items(t)).collect();
    let mut groups: Vec<(String, u32)> = Vec::new();
    let mut users: Vec<(SysItem, u32, u32)> = Vec::new();
    let mut members: Vec<(String, String)> = Vec::new();
    let gid_taken = |acc: &Accounts, groups: &[(String, u32)], id: u32| {
        acc.gid_used(id) || groups.iter().any(|(_, g)| *g == id)
    };
    let uid_taken = |acc: &Accounts, users: &[(SysItem, u32, u32)], id: u32| {
        acc.uid_used(id) || users.iter().any(|(_, u, _)| *u == id)
    };
    let find_gid = |acc: &Accounts, groups: &[(String, u32)], name: &str| {
        acc.gid_of(name)
            .or_else(|| groups.iter().find(|(n, _)| n == name).map(|(_, g)| *g))
    };
    // Groups: explicit g lines and the implicit group of u lines, in file order.
    for it in &all {
        let (want_group, fixed): (bool, Option<u32>) = match it.kind.as_str() {
            "g" => (true, it.id.parse().ok()),
            "u" | "u!" => {
                let (u, g) = it.id.split_once(':').unwrap_or((it.id.as_str(), ""));
                if !g.is_empty() {
                    (false, None)
                } else {
                    (true, u.parse().ok())
                }
            }
            "m" => {
                members.push((it.name.clone(), it.id.clone()));
                (false, None)
            }
            _ => (false, None),
        };
        if !want_group || find_gid(acc, &groups, &it.name).is_some() {
            continue;
        }
        let gid = match fixed.filter(|g| !gid_taken(acc, &groups, *g)) {
            Some(g) => g,
            None => {
                // Prefer an id free as both gid and uid, for users' groups.
                let both = it.kind.starts_with('u');
                (1..=999u32)
                    .rev()
                    .find(|&i| !gid_taken(acc, &groups, i) && (!both || !uid_taken(acc, &users, i)))
                    .unwrap_or(999)
            }
        };
        groups.push((it.name.clone(), gid));
    }
    for it in &all {
        if !it.kind.starts_with('u') || acc.user(&it.name).is_some() {
            continue;
        }
        if users.iter().any(|(u, _, _)| u.name == it.name) {
            continue;
        }
        let (u, g) = it.id.split_once(':').unwrap_or((it.id.as_str(), ""));
        let gid = if g.is_empty() {
            find_gid(acc, &groups, &it.name).unwrap_or(65534)
        } else {
            g.parse()
                .ok()
                .or_else(|| find_gid(acc, &groups, g))
                .unwrap_or(65534)
        };
        let uid = match u
            .parse::<u32>()
            .ok()
            .filter(|x| !uid_taken(acc, &users, *x))
        {
            Some(x) => x,
            None if !uid_taken(acc, &users, gid) && gid < 1000 => gid,
            None => (1..=999u32)
                .rev()
                .find(|&i| !uid_taken(acc, &users, i))
                .unwrap_or(999),
        };
        users.push((it.clone(), uid, gid));
    }
    let day = acc.day;
    if !groups.is_empty() {
        let mut g = acc.lines("group").to_vec();
        let mut gs = acc.lines("gshadow").to_vec();
        for (n, id) in &groups {
            g.push(format!("{n}:x:{id}:"));
            gs.push(format!("{n}:!*::"));
        }
        acc.commit("group", g);
        if acc.exists("gshadow") {
            acc.commit("gshadow", gs);
        }
    }
    if !users.is_empty() {
        let mut p = acc.lines("passwd").to_vec();
        let mut s = acc.lines("shadow").to_vec();
        for (it, uid, gid) in &users {
            p.push(format!(
                "{}:x:{uid}:{gid}:{}:{}:{}",
                it.name,
                it.gecos.clone().unwrap_or_default(),
                it.home.clone().unwrap_or_else(|| "/".into()),
                it.shell
                    .clone()
                    .unwrap_or_else(|| "/usr/sbin/nologin".into())
            ));
            // `u!`: the account is also expired (systemd 257).
            let expire = if it.kind == "u!" { "1" } else { "" };
            s.push(format!("{}:!*:{day}:::::{expire}:", it.name));
        }
        acc.commit("passwd", p);
        if acc.exists("shadow") {
            acc.commit("shadow", s);
        }
    }
    for (user, group) in members {
        if acc.user(&user).is_some() && acc.group(&group).is_some() {
            acc.add_member(&group, &user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Accounts {
        let mut a = Accounts::new(20370);
        a.create_if_missing(
            "passwd",
            "root:*:0:0:root:/root:/bin/bash\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        );
        a.create_if_missing("group", "root:*:0:\nusers:*:100:\nnogroup:*:65534:\n");
        a.pwconv("0", "99999", "7");
        a.grpconv();
        a
    }

    #[test]
    fn shadowconfig_then_sysusers_then_adduser() {
        let mut a = base();
        assert_eq!(
            a.text("shadow").unwrap(),
            "root:*:20370:0:99999:7:::\nnobody:*:20370:0:99999:7:::\n"
        );
        assert_eq!(
            a.text("gshadow").unwrap(),
            "root:*::\nusers:*::\nnogroup:*::\n"
        );
        sysusers(
            &mut a,
            &["u! messagebus - \"System Message Bus\" /nonexistent\n".into()],
        );
        assert!(
            a.text("passwd")
                .unwrap()
                .contains("messagebus:x:999:999:System Message Bus:/nonexistent:/usr/sbin/nologin")
        );
        assert!(
            a.text("shadow")
                .unwrap()
                .contains("messagebus:!*:20370:::::1:")
        );
        let add = AddUser::parse(
            &"adduser --system --group --quiet --comment Chrony --home /var/lib/chrony _chrony"
                .split(' ')
                .map(String::from)
                .collect::<Vec<_>>(),
        );
        adduser(&mut a, &add, Ranges::from_conf(None)).unwrap();
        // uid and gid counted separately: gid 100 is `users`.
        assert_eq!(a.user("_chrony").unwrap()[2..4], ["100", "101"]);
        assert!(
            a.text("shadow")
                .unwrap()
                .ends_with("_chrony:!:20370::::::\n")
        );
        // The backups are the state before the last change of each file.
        assert!(
            a.backup_text("passwd")
                .unwrap()
                .contains("_chrony:x:100:101::")
        );
        assert!(!a.backup_text("shadow").unwrap().contains("_chrony"));
        assert!(!a.backup_text("group").unwrap().contains("_chrony"));
    }
}
