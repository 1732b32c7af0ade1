//! dpkg's own state besides the package status: diversions (dpkg-divert), stat overrides
//! (dpkg-statoverride), trigger interests and activations, written as dpkg writes them —
//! diversions and overrides in the order of dpkg's file-name hash table (FNV-1a over
//! 262139 bins), each rewrite keeping the previous file as `-old`; trigger interests in
//! unpack order.

use std::collections::BTreeMap;

use anyhow::Result;

use super::accounts::Accounts;
use crate::pkg::extract::{Attrs, Extractor};

const BINS: u32 = 262_139;

/// dpkg's str_fnv_hash (FNV-1a, 32 bits) of a path without its leading slashes.
fn bin(path: &str) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for b in path
        .trim_start_matches('/')
        .trim_start_matches("./")
        .bytes()
    {
        h ^= b as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h % BINS
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diversion {
    pub from: String,
    pub to: String,
    /// None: a local diversion (":").
    pub package: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub user: String,
    pub group: String,
    pub mode: u32,
    pub path: String,
}

/// An interest in a trigger, as registered at unpack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interest {
    pub package: String,
    pub noawait: bool,
}

#[derive(Clone, Debug, Default)]
pub struct DpkgState {
    /// In the order they were first seen (the hash table's order within a bin).
    pub diversions: Vec<Diversion>,
    diversions_old: Option<String>,
    pub overrides: Vec<Override>,
    overrides_old: Option<String>,
    /// File triggers: (path, interest), in registration order.
    pub file_interests: Vec<(String, Interest)>,
    /// Explicit triggers: name → interests.
    pub interests: BTreeMap<String, Vec<Interest>>,
    /// Whether dpkg-divert or dpkg-statoverride ever wrote their files.
    diversions_written: bool,
    overrides_written: bool,
}

fn hash_order<T: Clone>(items: &[T], key: impl Fn(&T) -> &str) -> Vec<T> {
    let mut v: Vec<(u32, usize, T)> = items
        .iter()
        .enumerate()
        .map(|(i, t)| (bin(key(t)), i, t.clone()))
        .collect();
    v.sort_by_key(|(b, i, _)| (*b, *i));
    v.into_iter().map(|(_, _, t)| t).collect()
}

impl DpkgState {
    fn diversions_text(&self) -> String {
        hash_order(&self.diversions, |d| &d.from)
            .iter()
            .map(|d| {
                format!(
                    "{}\n{}\n{}\n",
                    d.from,
                    d.to,
                    d.package.as_deref().unwrap_or(":")
                )
            })
            .collect()
    }

    fn overrides_text(&self) -> String {
        hash_order(&self.overrides, |o| &o.path)
            .iter()
            .map(|o| format!("{} {} {:o} {}\n", o.user, o.group, o.mode, o.path))
            .collect()
    }

    pub fn diversion(&self, path: &str) -> Option<&Diversion> {
        self.diversions.iter().find(|d| d.from == path)
    }

    /// `dpkg-divert …`: returns (status, stdout), or Err for what is not emulated.
    pub fn divert(
        &mut self,
        ex: &mut Extractor,
        args: &[String],
        pkg_env: &str,
    ) -> Result<std::result::Result<(i32, String), String>> {
        let mut package: Option<String> = Some(pkg_env.to_string());
        let mut divert_to = None;
        let mut rename = false;
        let mut action = "add";
        let mut files = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            let (k, inline) = match a.split_once('=') {
                Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
                _ => (a, None),
            };
            let mut val = || {
                inline.clone().or_else(|| {
                    i += 1;
                    args.get(i).cloned()
                })
            };
            match k {
                "--package" => package = val(),
                "--local" => package = None,
                "--divert" => divert_to = val(),
                "--rename" => rename = true,
                "--no-rename" => rename = false,
                "--quiet" | "--test" => {}
                "--admindir" | "--instdir" | "--root" => {
                    let _ = val();
                }
                "--add" => action = "add",
                "--remove" => action = "remove",
                "--list" => action = "list",
                "--listpackage" => action = "listpackage",
                "--truename" => action = "truename",
                s if s.starts_with('-') => return Ok(Err(format!("dpkg-divert {s}"))),
                s => files.push(s.to_string()),
            }
            i += 1;
        }
        let file = files.first().cloned().unwrap_or_default();
        match action {
            "truename" => {
                let t = self.diversion(&file).map(|d| d.to.clone()).unwrap_or(file);
                return Ok(Ok((0, format!("{t}\n"))));
            }
            "listpackage" => {
                let out = match self.diversion(&file) {
                    Some(d) => format!("{}\n", d.package.as_deref().unwrap_or("LOCAL")),
                    None => String::new(),
                };
                return Ok(Ok((0, out)));
            }
            "list" => return Ok(Ok((0, String::new()))),
            _ => {}
        }
        let to = divert_to.unwrap_or_else(|| format!("{file}.distrib"));
        let before = self.diversions_text();
        if action == "add" {
            if let Some(d) = self.diversion(&file) {
                if d.to == to && d.package == package {
                    return Ok(Ok((0, String::new())));
                }
                return Ok(Err(format!(
                    "dpkg-divert: {file} clashes with an existing diversion"
                )));
            }
            self.diversions.push(Diversion {
                from: file.clone(),
                to: to.clone(),
                package,
            });
            if rename {
                // Only when the file exists and is not the diverting package's own.
                if let Some(data) = ex.read_file(file.trim_start_matches('/').as_bytes())? {
                    let st = ex.lstat(file.trim_start_matches('/').as_bytes())?;
                    let a = st.map(|s| Attrs {
                        mode: s.mode,
                        uid: s.uid,
                        gid: s.gid,
                        mtime: 0,
                    });
                    if let Some(a) = a {
                        ex.write_file(
                            to.trim_start_matches('/').as_bytes(),
                            &mut data.as_slice(),
                            a,
                        )?;
                        ex.remove_file(file.trim_start_matches('/').as_bytes())?;
                    }
                }
            }
        } else {
            let Some(pos) = self.diversions.iter().position(|d| d.from == file) else {
                return Ok(Ok((0, String::new())));
            };
            self.diversions.remove(pos);
        }
        self.diversions_old = Some(before);
        self.diversions_written = true;
        Ok(Ok((0, String::new())))
    }

    /// `dpkg-statoverride …`: returns the status, or Err for what is not emulated.
    pub fn statoverride(
        &mut self,
        ex: &mut Extractor,
        acc: &Accounts,
        args: &[String],
    ) -> Result<std::result::Result<(i32, String), String>> {
        let mut update = false;
        let mut rest = Vec::new();
        let mut action = None;
        for a in args {
            match a.as_str() {
                "--update" => update = true,
                "--force" | "--quiet" | "--force-all" | "--force-statoverride-add" => {}
                "--add" | "--remove" | "--list" => action = Some(a.clone()),
                s if s.starts_with("--") => return Ok(Err(format!("dpkg-statoverride {s}"))),
                s => rest.push(s.to_string()),
            }
        }
        match action.as_deref() {
            Some("--list") => {
                let hits: Vec<&Override> = self
                    .overrides
                    .iter()
                    .filter(|o| {
                        rest.is_empty() || rest.iter().any(|r| super::shell::glob_match(r, &o.path))
                    })
                    .collect();
                let out: String = hits
                    .iter()
                    .map(|o| format!("{} {} {:o} {}\n", o.user, o.group, o.mode, o.path))
                    .collect();
                Ok(Ok((if hits.is_empty() { 1 } else { 0 }, out)))
            }
            Some("--add") => {
                let [user, group, mode, path] = rest.as_slice() else {
                    return Ok(Err(format!("dpkg-statoverride {}", args.join(" "))));
                };
                let Ok(mode) = u32::from_str_radix(mode, 8) else {
                    return Ok(Err(format!("dpkg-statoverride mode {mode}")));
                };
                if self.overrides.iter().any(|o| &o.path == path) {
                    return Ok(Ok((2, String::new())));
                }
                let before = self.overrides_text();
                self.overrides.push(Override {
                    user: user.clone(),
                    group: group.clone(),
                    mode,
                    path: path.clone(),
                });
                self.overrides_old = Some(before);
                self.overrides_written = true;
                if update {
                    let uid = user
                        .trim_start_matches('#')
                        .parse()
                        .ok()
                        .or_else(|| acc.uid_of(user));
                    let gid = group
                        .trim_start_matches('#')
                        .parse()
                        .ok()
                        .or_else(|| acc.gid_of(group));
                    let rel = path.trim_start_matches('/');
                    if ex.lstat(rel.as_bytes())?.is_some() {
                        if let (Some(u), Some(g)) = (uid, gid) {
                            ex.set_attrs(rel.as_bytes(), Some(mode), Some((u, g)))?;
                        }
                    }
                }
                Ok(Ok((0, String::new())))
            }
            Some("--remove") => {
                let before = self.overrides_text();
                let n = self.overrides.len();
                self.overrides.retain(|o| !rest.contains(&o.path));
                if self.overrides.len() != n {
                    self.overrides_old = Some(before);
                    self.overrides_written = true;
                }
                Ok(Ok((0, String::new())))
            }
            _ => Ok(Err(format!("dpkg-statoverride {}", args.join(" ")))),
        }
    }

    /// Register a package's trigger interests (its `triggers` control file) at unpack.
    pub fn register(&mut self, package: &str, triggers: &str) {
        for line in triggers.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() < 2 || w[0].starts_with('#') {
                continue;
            }
            let noawait = match w[0] {
                "interest" | "interest-await" => false,
                "interest-noawait" => true,
                _ => continue,
            };
            let i = Interest {
                package: package.to_string(),
                noawait,
            };
            if w[1].starts_with('/') {
                self.file_interests.push((w[1].to_string(), i));
            } else {
                let v = self.interests.entry(w[1].to_string()).or_default();
                if !v.iter().any(|x| x.package == package) {
                    v.push(i);
                }
            }
        }
    }

    /// The packages interested in an explicit trigger.
    pub fn interested(&self, name: &str) -> Vec<String> {
        self.interests
            .get(name)
            .map(|v| v.iter().map(|i| i.package.clone()).collect())
            .unwrap_or_default()
    }

    /// Write /var/lib/dpkg/{diversions,statoverride}(-old) and triggers/.
    pub fn write(&self, ex: &mut Extractor, mtime: i64) -> Result<()> {
        let file = Attrs::root(0o644, mtime);
        let put = |ex: &mut Extractor, p: &str, t: &str| -> Result<()> {
            ex.write_file(p.as_bytes(), &mut t.as_bytes(), file)?;
            Ok(())
        };
        put(ex, "var/lib/dpkg/diversions", &self.diversions_text())?;
        if let (true, Some(old)) = (self.diversions_written, &self.diversions_old) {
            put(ex, "var/lib/dpkg/diversions-old", old)?;
        }
        put(ex, "var/lib/dpkg/statoverride", &self.overrides_text())?;
        if let (true, Some(old)) = (self.overrides_written, &self.overrides_old) {
            put(ex, "var/lib/dpkg/statoverride-old", old)?;
        }
        ex.create_dir(b"var/lib/dpkg/triggers", Attrs::root(0o755, mtime))?;
        let suffix = |i: &Interest| if i.noawait { "/noawait" } else { "" };
        if !self.file_interests.is_empty() {
            let t: String = self
                .file_interests
                .iter()
                .map(|(p, i)| format!("{p} {}{}\n", i.package, suffix(i)))
                .collect();
            put(ex, "var/lib/dpkg/triggers/File", &t)?;
        }
        for (name, is) in &self.interests {
            let t: String = is
                .iter()
                .map(|i| format!("{}{}\n", i.package, suffix(i)))
                .collect();
            put(ex, &format!("var/lib/dpkg/triggers/{name}"), &t)?;
        }
        put(ex, "var/lib/dpkg/triggers/Unincorp", "")?;
        ex.write_file(
            b"var/lib/dpkg/triggers/Lock",
            &mut &b""[..],
            Attrs::root(0o600, mtime),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_order_is_dpkgs() {
        // The order dpkg-divert wrote these in a real trixie install.
        let paths = [
            "/lib/x86_64-linux-gnu/libtirpc.so.3.0.0",
            "/lib32",
            "/lib/x86_64-linux-gnu/libe2p.so.2",
            "/libx32",
            "/lib64/ld-linux-x86-64.so.2",
        ];
        let mut v: Vec<&str> = paths.to_vec();
        v.sort_by_key(|p| bin(p));
        assert_eq!(
            v,
            [
                "/lib/x86_64-linux-gnu/libe2p.so.2",
                "/lib64/ld-linux-x86-64.so.2",
                "/libx32",
                "/lib32",
                "/lib/x86_64-linux-gnu/libtirpc.so.3.0.0"
            ]
        );
    }
}
