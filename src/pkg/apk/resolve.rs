//! Dependency resolution for Alpine packages.
//!
//! A deterministic, greedy solver in apk's spirit: requests are satisfied in order (breadth
//! first), each by the best provider that fits the version constraint and conflicts with
//! nothing chosen so far. "Best" follows apk's preferences: a package of exactly that
//! name, then the highest provider priority (`k:`), then the highest provided version, then
//! the highest package version, then the name (so the result never depends on index
//! order). Once all requests are met, `install_if` packages whose triggers are all
//! installed are added, until nothing changes. A request nothing can satisfy fails with
//! the chain of packages that led to it.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use anyhow::{Result, bail};

use super::index::Package;
use super::version::{self, Dep};

/// Where a request came from: the names along the way, for error messages.
type Chain = Vec<String>;

pub struct Resolver<'a> {
    pkgs: &'a [Package],
    /// Provided name → (package index, provided version).
    providers: BTreeMap<&'a str, Vec<(usize, Option<&'a str>)>>,
}

/// The packages to install, dependencies before their dependants.
#[derive(Debug)]
pub struct Resolution<'a> {
    pub packages: Vec<&'a Package>,
    /// Positions of `packages` in the slice given to [`Resolver::new`].
    pub indices: Vec<usize>,
}

struct State {
    /// Package name → index of the chosen package.
    chosen: BTreeMap<String, usize>,
    /// Conflicts declared by chosen packages or the request: (dep, who declared it).
    conflicts: Vec<(Dep, String)>,
}

impl<'a> Resolver<'a> {
    pub fn new(pkgs: &'a [Package]) -> Resolver<'a> {
        let mut providers: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for (i, p) in pkgs.iter().enumerate() {
            providers
                .entry(p.name.as_str())
                .or_default()
                .push((i, Some(p.version.as_str())));
            for pr in &p.provides {
                providers
                    .entry(pr.name.as_str())
                    .or_default()
                    .push((i, pr.version.as_deref()));
            }
        }
        Resolver { pkgs, providers }
    }

    /// Does a chosen package provide `dep`?
    fn satisfied(&self, st: &State, dep: &Dep) -> bool {
        self.providers.get(dep.name.as_str()).is_some_and(|ps| {
            ps.iter()
                .any(|(i, v)| st.chosen.get(&self.pkgs[*i].name) == Some(i) && dep.version_ok(*v))
        })
    }

    /// Does package `i` provide something `dep` names (within its version range)?
    fn provides(&self, i: usize, dep: &Dep) -> bool {
        let p = &self.pkgs[i];
        (p.name == dep.name && dep.version_ok(Some(&p.version)))
            || p.provides
                .iter()
                .any(|pr| pr.name == dep.name && dep.version_ok(pr.version.as_deref()))
    }

    /// Why package `i` cannot join the chosen set, if it cannot.
    fn blocked(&self, st: &State, i: usize) -> Option<String> {
        let p = &self.pkgs[i];
        if let Some(&other) = st.chosen.get(&p.name) {
            if other != i {
                return Some(format!(
                    "{}-{} is already chosen",
                    p.name, self.pkgs[other].version
                ));
            }
        }
        for (c, who) in &st.conflicts {
            if self.provides(i, c) {
                return Some(format!("{who} conflicts with {c}"));
            }
        }
        for d in p.depends.iter().filter(|d| d.conflict) {
            for &j in st.chosen.values() {
                if self.provides(j, d) {
                    return Some(format!(
                        "it conflicts with {d}, provided by the chosen {}",
                        self.pkgs[j].name
                    ));
                }
            }
        }
        None
    }

    fn preference(
        &self,
        dep: &Dep,
        a: (usize, Option<&str>),
        b: (usize, Option<&str>),
    ) -> Ordering {
        let (pa, pb) = (&self.pkgs[a.0], &self.pkgs[b.0]);
        // Greater = better; callers sort descending.
        (pa.name == dep.name)
            .cmp(&(pb.name == dep.name))
            .then(
                pa.provider_priority
                    .unwrap_or(0)
                    .cmp(&pb.provider_priority.unwrap_or(0)),
            )
            .then_with(|| match (a.1, b.1) {
                (Some(x), Some(y)) if pa.name != dep.name => version::compare(x, y),
                _ => Ordering::Equal,
            })
            .then_with(|| version::compare(&pa.version, &pb.version))
            .then_with(|| pb.name.cmp(&pa.name))
    }

    fn choose(&self, st: &mut State, i: usize, chain: &Chain, queue: &mut VecDeque<(Dep, Chain)>) {
        let p = &self.pkgs[i];
        st.chosen.insert(p.name.clone(), i);
        let mut next = chain.clone();
        next.push(p.name.clone());
        for d in &p.depends {
            if d.conflict {
                st.conflicts.push((d.clone(), p.name.clone()));
            } else {
                queue.push_back((d.clone(), next.clone()));
            }
        }
    }

    /// Resolve the requests (a world: `name`, `name=1.2`, `so:…`, `!name`).
    pub fn resolve(&self, requests: &[Dep]) -> Result<Resolution<'a>> {
        let mut st = State {
            chosen: BTreeMap::new(),
            conflicts: requests
                .iter()
                .filter(|d| d.conflict)
                .map(|d| (d.clone(), "the request".to_string()))
                .collect(),
        };
        let mut queue: VecDeque<(Dep, Chain)> = requests
            .iter()
            .filter(|d| !d.conflict)
            .map(|d| (d.clone(), Vec::new()))
            .collect();
        loop {
            while let Some((dep, chain)) = queue.pop_front() {
                if self.satisfied(&st, &dep) {
                    continue;
                }
                let i = self.pick(&st, &dep, &chain)?;
                self.choose(&mut st, i, &chain, &mut queue);
            }
            // install_if: add packages whose triggers are all installed, then go on.
            let mut added = false;
            let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
            for (i, p) in self.pkgs.iter().enumerate() {
                if p.install_if.is_empty() || st.chosen.contains_key(&p.name) {
                    continue;
                }
                if p.install_if.iter().all(|d| {
                    if d.conflict {
                        !st.chosen.values().any(|&j| self.provides(j, d))
                    } else {
                        self.satisfied(&st, d)
                    }
                }) && self.blocked(&st, i).is_none()
                {
                    let better = by_name.get(p.name.as_str()).is_none_or(|&j| {
                        version::compare(&p.version, &self.pkgs[j].version) == Ordering::Greater
                    });
                    if better {
                        by_name.insert(&p.name, i);
                    }
                }
            }
            for (name, i) in by_name {
                let why = vec![format!("install_if of {name}")];
                self.choose(&mut st, i, &why, &mut queue);
                added = true;
            }
            if !added {
                break;
            }
        }
        let indices = self.order(&st);
        Ok(Resolution {
            packages: indices.iter().map(|&i| &self.pkgs[i]).collect(),
            indices,
        })
    }

    fn pick(&self, st: &State, dep: &Dep, chain: &Chain) -> Result<usize> {
        let path = || {
            let mut c = chain.clone();
            c.push(dep.to_string());
            c.join(" -> ")
        };
        let Some(all) = self.providers.get(dep.name.as_str()) else {
            bail!(
                "cannot resolve {}: no package in the index provides '{}'",
                path(),
                dep.name
            );
        };
        let mut fits: Vec<(usize, Option<&str>)> = all
            .iter()
            .copied()
            .filter(|(_, v)| dep.version_ok(*v))
            .collect();
        if fits.is_empty() {
            let have: BTreeSet<String> = all
                .iter()
                .map(|(i, v)| {
                    let p = &self.pkgs[*i];
                    match v {
                        Some(v) if p.name != dep.name => format!("{} ({}={v})", p.name, dep.name),
                        Some(v) => format!("{}-{v}", p.name),
                        None => format!("{} (unversioned)", p.name),
                    }
                })
                .collect();
            bail!(
                "cannot resolve {}: no version fits; the index has {}",
                path(),
                have.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        fits.sort_by(|a, b| self.preference(dep, *b, *a));
        let mut why_not = Vec::new();
        for (i, _) in &fits {
            match self.blocked(st, *i) {
                None => return Ok(*i),
                Some(w) => why_not.push(format!(
                    "{}-{}: {w}",
                    self.pkgs[*i].name, self.pkgs[*i].version
                )),
            }
        }
        bail!(
            "cannot resolve {}: every candidate is excluded: {}",
            path(),
            why_not.join("; ")
        )
    }

    /// Dependencies first, then alphabetical; cycles are broken in name order.
    fn order(&self, st: &State) -> Vec<usize> {
        let chosen: BTreeMap<&str, usize> =
            st.chosen.iter().map(|(n, i)| (n.as_str(), *i)).collect();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::new();
        for name in chosen.keys() {
            self.visit(name, &chosen, &mut done, &mut BTreeSet::new(), &mut out);
        }
        out
    }

    fn visit<'s>(
        &self,
        name: &'s str,
        chosen: &BTreeMap<&'s str, usize>,
        done: &mut BTreeSet<&'s str>,
        active: &mut BTreeSet<&'s str>,
        out: &mut Vec<usize>,
    ) {
        if done.contains(name) || !active.insert(name) {
            return;
        }
        let i = chosen[name];
        let mut deps: Vec<&'s str> = Vec::new();
        for d in self.pkgs[i].depends.iter().filter(|d| !d.conflict) {
            for (n, &j) in chosen.iter() {
                // Every chosen provider goes first: which one "really" satisfies the
                // dependency does not matter for ordering.
                if self.provides(j, d) && j != i {
                    deps.push(n);
                }
            }
        }
        deps.sort();
        for d in deps {
            self.visit(d, chosen, done, active, out);
        }
        active.remove(name);
        if done.insert(name) {
            out.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::apk::index::parse_text;

    fn names(r: &Resolution) -> Vec<String> {
        r.packages
            .iter()
            .map(|p| format!("{}-{}", p.name, p.version))
            .collect()
    }

    fn req(s: &str) -> Vec<Dep> {
        s.split_whitespace()
            .map(|d| Dep::parse(d).unwrap())
            .collect()
    }

    const REPO: &str = "\
P:musl
V:1.2.3-r0
p:so:libc.musl-x86_64.so.1=1

P:busybox
V:1.35.0-r1
D:so:libc.musl-x86_64.so.1
p:cmd:sh /bin/sh

P:busybox
V:1.36.1-r0
D:so:libc.musl-x86_64.so.1
p:cmd:sh /bin/sh

P:bash
V:5.2-r0
D:so:libc.musl-x86_64.so.1
p:cmd:bash

P:dash-binsh
V:0.5-r0
p:/bin/sh
k:60

P:busybox-binsh
V:1.36.1-r0
D:busybox=1.36.1-r0
p:/bin/sh
k:100

P:app
V:2.0-r0
D:/bin/sh musl>=1.2 !oldlib

P:oldlib
V:1.0-r0

P:needs-old
V:1.0-r0
D:oldlib

P:bash-doc
V:5.2-r0
i:docs bash=5.2-r0

P:docs
V:1-r0

P:broken
V:1-r0
D:musl>=9
";

    #[test]
    fn highest_version_provider_priority_and_order() {
        let pkgs = parse_text(REPO).unwrap();
        let r = Resolver::new(&pkgs).resolve(&req("app")).unwrap();
        assert_eq!(
            names(&r),
            [
                "musl-1.2.3-r0",
                "busybox-1.36.1-r0",
                "busybox-binsh-1.36.1-r0",
                "app-2.0-r0"
            ]
        );
        let r = Resolver::new(&pkgs)
            .resolve(&req("busybox=1.35.0-r1"))
            .unwrap();
        assert_eq!(names(&r), ["musl-1.2.3-r0", "busybox-1.35.0-r1"]);
    }

    #[test]
    fn install_if_triggers_when_all_present() {
        let pkgs = parse_text(REPO).unwrap();
        let r = Resolver::new(&pkgs).resolve(&req("bash")).unwrap();
        assert!(!names(&r).contains(&"bash-doc-5.2-r0".to_string()));
        let r = Resolver::new(&pkgs).resolve(&req("bash docs")).unwrap();
        assert!(
            names(&r).contains(&"bash-doc-5.2-r0".to_string()),
            "{:?}",
            names(&r)
        );
    }

    #[test]
    fn conflicts_and_broken_chains_are_reported() {
        let pkgs = parse_text(REPO).unwrap();
        let e = format!(
            "{:#}",
            Resolver::new(&pkgs)
                .resolve(&req("app needs-old"))
                .unwrap_err()
        );
        assert!(e.contains("needs-old -> oldlib"), "{e}");
        assert!(e.contains("conflicts with !oldlib"), "{e}");
        let e = format!(
            "{:#}",
            Resolver::new(&pkgs).resolve(&req("broken")).unwrap_err()
        );
        assert!(e.contains("broken -> musl>=9"), "{e}");
        assert!(e.contains("musl-1.2.3-r0"), "{e}");
        let e = format!(
            "{:#}",
            Resolver::new(&pkgs).resolve(&req("nosuch")).unwrap_err()
        );
        assert!(
            e.contains("no package in the index provides 'nosuch'"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            Resolver::new(&pkgs)
                .resolve(&req("busybox !musl"))
                .unwrap_err()
        );
        assert!(e.contains("busybox -> so:libc.musl-x86_64.so.1"), "{e}");
        assert!(e.contains("the request conflicts with !musl"), "{e}");
    }
}
