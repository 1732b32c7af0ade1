//! update-alternatives: each `--install` call registers a choice; in auto mode the highest
//! priority wins. At the end the links (`/usr/bin/awk → /etc/alternatives/awk → mawk`)
//! and dpkg's administrative files (`/var/lib/dpkg/alternatives/NAME`, choices and
//! slaves sorted as update-alternatives saves them) are written, so the guest can manage
//! them later.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::pkg::extract::{Attrs, Extractor};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub path: String,
    pub priority: i64,
    /// slave name → path
    pub slaves: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
pub struct Group {
    pub link: String,
    /// slave name → link
    pub slave_links: BTreeMap<String, String>,
    pub choices: Vec<Choice>,
}

/// Every alternative registered during the install.
#[derive(Clone, Debug, Default)]
pub struct Alternatives {
    pub groups: BTreeMap<String, Group>,
}

impl Alternatives {
    /// `update-alternatives` arguments (after the program name). Returns an error text
    /// for what is not emulated.
    pub fn command(&mut self, args: &[String]) -> std::result::Result<(), String> {
        let mut i = 0;
        while i < args.len() && args[i].starts_with("--") && args[i] != "--install" {
            match args[i].as_str() {
                "--quiet" | "--verbose" | "--debug" | "--force" => i += 1,
                "--altdir" | "--admindir" | "--log" | "--root" => i += 2,
                "--remove" | "--remove-all" | "--set" | "--auto" | "--config" | "--display"
                | "--query" | "--list" | "--get-selections" | "--set-selections" => {
                    // Nothing to undo on a fresh install; queries change nothing.
                    return Ok(());
                }
                other => return Err(format!("update-alternatives {other}")),
            }
        }
        if args.get(i).map(String::as_str) != Some("--install") {
            return Err(format!("update-alternatives {}", args.join(" ")));
        }
        let a = &args[i + 1..];
        if a.len() < 4 {
            return Err("update-alternatives --install with too few arguments".into());
        }
        let priority: i64 = a[3]
            .parse()
            .map_err(|_| format!("update-alternatives priority {:?}", a[3]))?;
        let mut choice = Choice {
            path: a[2].clone(),
            priority,
            slaves: BTreeMap::new(),
        };
        let g = self.groups.entry(a[1].clone()).or_default();
        g.link = a[0].clone();
        let mut j = 4;
        while j < a.len() {
            if a[j] == "--slave" && j + 3 < a.len() {
                g.slave_links.insert(a[j + 2].clone(), a[j + 1].clone());
                choice.slaves.insert(a[j + 2].clone(), a[j + 3].clone());
                j += 4;
            } else {
                j += 1;
            }
        }
        g.choices.retain(|c| c.path != choice.path);
        g.choices.push(choice);
        Ok(())
    }

    /// Write the links and the administrative files. Choices whose file is missing are
    /// dropped, as update-alternatives does.
    pub fn write(&self, ex: &mut Extractor, mtime: i64) -> Result<()> {
        let file = Attrs::root(0o644, mtime);
        let link_attrs = Attrs::root(0o777, mtime);
        let mut any = false;
        for (name, g) in &self.groups {
            let mut choices: Vec<&Choice> = Vec::new();
            for c in &g.choices {
                if ex.lstat(c.path.as_bytes())?.is_some() {
                    choices.push(c);
                }
            }
            if choices.is_empty() {
                continue;
            }
            if !any {
                ex.create_dir(b"etc/alternatives", Attrs::root(0o755, mtime))?;
                ex.create_dir(b"var/lib/dpkg/alternatives", Attrs::root(0o755, mtime))?;
                any = true;
            }
            choices.sort_by(|a, b| a.path.cmp(&b.path));
            // Auto mode: the highest priority; on a tie, the first one registered.
            let best = g
                .choices
                .iter()
                .filter(|c| choices.contains(c))
                .fold(None::<&Choice>, |best, c| match best {
                    Some(b) if b.priority >= c.priority => Some(b),
                    _ => Some(c),
                })
                .expect("a choice");
            let etc = format!("etc/alternatives/{name}");
            ex.symlink(etc.as_bytes(), best.path.as_bytes(), link_attrs)?;
            place_link(ex, &g.link, &format!("/{etc}"), link_attrs)?;
            for (sname, slink) in &g.slave_links {
                let setc = format!("etc/alternatives/{sname}");
                match best.slaves.get(sname) {
                    Some(p) if ex.lstat(p.as_bytes())?.is_some() => {
                        ex.symlink(setc.as_bytes(), p.as_bytes(), link_attrs)?;
                        place_link(ex, slink, &format!("/{setc}"), link_attrs)?;
                    }
                    _ => {}
                }
            }
            let mut admin = format!("auto\n{}\n", g.link);
            for (sname, slink) in &g.slave_links {
                admin.push_str(&format!("{sname}\n{slink}\n"));
            }
            admin.push('\n');
            for c in &choices {
                admin.push_str(&format!("{}\n{}\n", c.path, c.priority));
                for sname in g.slave_links.keys() {
                    admin.push_str(c.slaves.get(sname).map(String::as_str).unwrap_or(""));
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
        Ok(())
    }
}

/// The public link of an alternative: made unless a real file (not a symlink) is there.
fn place_link(ex: &mut Extractor, link: &str, target: &str, a: Attrs) -> Result<()> {
    match ex.lstat(link.as_bytes())? {
        Some(st) if st.kind != crate::tree::mtree::MType::Link => Ok(()),
        _ => {
            ex.symlink(
                link.trim_start_matches('/').as_bytes(),
                target.as_bytes(),
                a,
            )?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_calls_register_choices() {
        let mut a = Alternatives::default();
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        a.command(&args("--install /usr/sbin/iptables iptables /usr/sbin/iptables-legacy 10 --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-legacy-save")).unwrap();
        a.command(&args("--install /usr/sbin/iptables iptables /usr/sbin/iptables-nft 20 --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-nft-save")).unwrap();
        let g = &a.groups["iptables"];
        assert_eq!(g.choices.len(), 2);
        assert_eq!(g.slave_links["iptables-save"], "/usr/sbin/iptables-save");
        assert!(a.command(&args("--frobnicate x")).is_err());
    }
}
