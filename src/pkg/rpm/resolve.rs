//! The rpm resolver: Requires/Provides with versioned EVR matching, file requires
//! (`/bin/sh`, answered by primary's file lists or, when needed, filelists), rich
//! dependencies, Conflicts and Obsoletes checked over the result, weak dependencies
//! (Recommends…) ignored. One version per package name; among candidates the one named
//! as required wins, then the newest, then the target arch over noarch, then the name.
//!
//! Install order: dependencies first (a depth-first walk of what each package required),
//! with the distro's `install_first` packages (the directory layout) ahead of all.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Result, bail};

use super::repomd::RepoPackage;
use super::version::{Dep, Rich};

/// Every installable package of the repositories, indexed for lookups.
pub struct Universe {
    pub packages: Vec<RepoPackage>,
    by_provide: HashMap<String, Vec<usize>>,
    by_file: HashMap<String, Vec<usize>>,
}

impl Universe {
    /// Index `packages` (already filtered to the target's arches).
    pub fn new(packages: Vec<RepoPackage>) -> Universe {
        let mut u = Universe {
            packages,
            by_provide: HashMap::new(),
            by_file: HashMap::new(),
        };
        for (i, p) in u.packages.iter().enumerate() {
            u.by_provide.entry(p.name.clone()).or_default().push(i);
            for d in &p.provides {
                u.by_provide.entry(d.name.clone()).or_default().push(i);
            }
            for f in &p.files {
                u.by_file.entry(f.clone()).or_default().push(i);
            }
        }
        for v in u.by_provide.values_mut().chain(u.by_file.values_mut()) {
            v.dedup();
        }
        u
    }

    /// Add file lists (from filelists.xml) for file requires primary does not answer.
    pub fn add_file(&mut self, idx: usize, path: &str) {
        let v = self.by_file.entry(path.to_string()).or_default();
        if !v.contains(&idx) {
            v.push(idx);
        }
    }

    /// File requires no package's primary entry answers (filelists may).
    pub fn unanswered_file_requires(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for p in &self.packages {
            for r in &p.requires {
                for d in r.atoms() {
                    if d.name.starts_with('/') && !self.by_file.contains_key(&d.name) {
                        out.insert(d.name.clone());
                    }
                }
            }
        }
        out
    }

    /// Whether package `i` satisfies `d` (a provide, its own name and EVR, or a file).
    pub fn provides(&self, i: usize, d: &Dep) -> bool {
        let p = &self.packages[i];
        if d.name.starts_with('/') && self.by_file.get(&d.name).is_some_and(|v| v.contains(&i)) {
            return true;
        }
        let own = Dep {
            name: p.name.clone(),
            flags: super::tags::sense::EQUAL,
            evr: p.evr.clone(),
        };
        own.satisfies(d) || p.provides.iter().any(|pr| pr.satisfies(d))
    }

    fn candidates(&self, d: &Dep) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .by_provide
            .get(&d.name)
            .into_iter()
            .chain(self.by_file.get(&d.name))
            .flatten()
            .copied()
            .filter(|&i| self.provides(i, d))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The chosen packages (indices into [`Universe::packages`]), in install order.
#[derive(Debug)]
pub struct Resolution {
    pub order: Vec<usize>,
}

struct State<'u> {
    u: &'u Universe,
    target_arch: &'u str,
    /// name → chosen package.
    chosen: HashMap<String, usize>,
    /// What each chosen package's requirements were met by (for the install order).
    edges: HashMap<usize, Vec<usize>>,
    /// Conditional requirements, re-checked as the set grows: (requirement, who).
    deferred: Vec<(Rich, Option<usize>, bool)>,
}

impl State<'_> {
    fn satisfied(&self, d: &Dep) -> Option<usize> {
        let mut v: Vec<usize> = self.chosen.values().copied().collect();
        v.sort_unstable();
        v.into_iter().find(|&i| self.u.provides(i, d))
    }

    fn holds(&self, r: &Rich) -> bool {
        match r {
            Rich::Dep(d) => self.satisfied(d).is_some(),
            Rich::And(v) => v.iter().all(|x| self.holds(x)),
            Rich::Or(v) => v.iter().any(|x| self.holds(x)),
            Rich::With(v) => self
                .chosen
                .values()
                .any(|&i| v.iter().all(|x| self.one_holds(i, x))),
            Rich::Without(a, b) => self
                .chosen
                .values()
                .any(|&i| self.one_holds(i, a) && !self.one_holds(i, b)),
            Rich::If(a, c, e) => {
                if self.holds(c) {
                    self.holds(a)
                } else {
                    e.as_ref().is_none_or(|e| self.holds(e))
                }
            }
            Rich::Unless(a, c, e) => {
                if self.holds(c) {
                    e.as_ref().is_none_or(|e| self.holds(e))
                } else {
                    self.holds(a)
                }
            }
        }
    }

    /// Whether package `i` alone satisfies `r` (for `with`/`without`).
    fn one_holds(&self, i: usize, r: &Rich) -> bool {
        match r {
            Rich::Dep(d) => self.u.provides(i, d),
            Rich::And(v) | Rich::With(v) => v.iter().all(|x| self.one_holds(i, x)),
            Rich::Or(v) => v.iter().any(|x| self.one_holds(i, x)),
            Rich::Without(a, b) => self.one_holds(i, a) && !self.one_holds(i, b),
            _ => false,
        }
    }

    /// The best package for `d` that does not clash with the chosen set.
    fn pick(&self, cands: Vec<usize>, want_name: &str) -> Option<usize> {
        let u = self.u;
        cands
            .into_iter()
            .filter(|&i| match self.chosen.get(&u.packages[i].name) {
                Some(&c) => c == i,
                None => true,
            })
            .max_by(|&a, &b| {
                let (pa, pb) = (&u.packages[a], &u.packages[b]);
                (pa.name == want_name)
                    .cmp(&(pb.name == want_name))
                    .then_with(|| pa.evr.cmp_full(&pb.evr))
                    .then_with(|| (pa.arch == self.target_arch).cmp(&(pb.arch == self.target_arch)))
                    // Shorter, then alphabetically first names win: reversed for max_by.
                    .then_with(|| pb.name.len().cmp(&pa.name.len()))
                    .then_with(|| pb.name.cmp(&pa.name))
                    .then_with(|| b.cmp(&a))
            })
    }

    fn choose(&mut self, i: usize, queue: &mut Vec<(Rich, Option<usize>, bool)>) {
        let p = &self.u.packages[i];
        if self.chosen.insert(p.name.clone(), i).is_none() {
            for r in p.requires.iter().rev() {
                queue.push((r.clone(), Some(i), false));
            }
        }
    }

    fn who(&self, who: Option<usize>) -> String {
        match who {
            Some(i) => format!("needed by {}", self.u.packages[i].nevra()),
            None => "requested".into(),
        }
    }

    /// Meet requirement `r` of `who`; conditional parts are deferred.
    fn require(
        &mut self,
        r: &Rich,
        who: Option<usize>,
        root: bool,
        queue: &mut Vec<(Rich, Option<usize>, bool)>,
    ) -> Result<()> {
        match r {
            Rich::Dep(d) => {
                let met = match self.satisfied(d) {
                    Some(i) => i,
                    None => {
                        let cands = self.u.candidates(d);
                        let Some(i) = self.pick(cands.clone(), &d.name) else {
                            if let Some(&c) = cands.first() {
                                let have = self.chosen[&self.u.packages[c].name];
                                bail!(
                                    "{d} ({}) needs {} but {} is already chosen",
                                    self.who(who),
                                    self.u.packages[c].nevra(),
                                    self.u.packages[have].nevra()
                                );
                            }
                            let hint = if root {
                                " (check the name, --os-version and the repository)"
                            } else {
                                " (the repository is incomplete: is a component missing?)"
                            };
                            bail!("nothing provides {d} ({}){hint}", self.who(who));
                        };
                        self.choose(i, queue);
                        i
                    }
                };
                if let Some(w) = who {
                    self.edges.entry(w).or_default().push(met);
                }
            }
            Rich::And(v) => {
                for x in v {
                    self.require(x, who, root, queue)?;
                }
            }
            Rich::Or(v) => {
                if !v.iter().any(|x| self.holds(x)) {
                    // The first alternative that can be met, in the order written.
                    let mut last = None;
                    for x in v {
                        let snapshot = (self.chosen.clone(), queue.len());
                        match self.require(x, who, root, queue) {
                            Ok(()) => {
                                last = None;
                                break;
                            }
                            Err(e) => {
                                self.chosen = snapshot.0;
                                queue.truncate(snapshot.1);
                                last = Some(e);
                            }
                        }
                    }
                    if let Some(e) = last {
                        return Err(e.context(format!("no alternative of {r:?} can be met")));
                    }
                }
            }
            Rich::With(v) => {
                if !self.holds(r) {
                    let first = v.iter().find_map(|x| match x {
                        Rich::Dep(d) => Some(d.clone()),
                        _ => None,
                    });
                    let Some(d) = first else {
                        bail!("unsupported rich dependency {r:?} ({})", self.who(who));
                    };
                    let cands: Vec<usize> = self
                        .u
                        .candidates(&d)
                        .into_iter()
                        .filter(|&i| v.iter().all(|x| self.one_holds(i, x)))
                        .collect();
                    let i = self.pick(cands, &d.name).ok_or_else(|| {
                        anyhow::anyhow!("nothing provides {r:?} ({})", self.who(who))
                    })?;
                    self.choose(i, queue);
                }
            }
            Rich::Without(a, b) => {
                if !self.holds(r) {
                    let Rich::Dep(d) = a.as_ref() else {
                        bail!("unsupported rich dependency {r:?} ({})", self.who(who));
                    };
                    let cands: Vec<usize> = self
                        .u
                        .candidates(d)
                        .into_iter()
                        .filter(|&i| !self.one_holds(i, b))
                        .collect();
                    let i = self.pick(cands, &d.name).ok_or_else(|| {
                        anyhow::anyhow!("nothing provides {r:?} ({})", self.who(who))
                    })?;
                    self.choose(i, queue);
                }
            }
            Rich::If(..) | Rich::Unless(..) => self.deferred.push((r.clone(), who, root)),
        }
        Ok(())
    }
}

/// Resolve `roots` (names, `name op version` constraints, provides or file paths).
/// `first`: packages to install before all others when they are in the plan.
pub fn resolve(
    u: &Universe,
    roots: &[String],
    target_arch: &str,
    first: &[String],
) -> Result<Resolution> {
    if roots.is_empty() {
        bail!("no packages requested");
    }
    let mut st = State {
        u,
        target_arch,
        chosen: HashMap::new(),
        edges: HashMap::new(),
        deferred: Vec::new(),
    };
    let mut root_reqs = Vec::new();
    for r in roots {
        let rich = if r.trim_start().starts_with('(') {
            Rich::parse(r)?
        } else {
            Rich::Dep(Dep::parse(r)?)
        };
        root_reqs.push(rich);
    }
    let mut queue: Vec<(Rich, Option<usize>, bool)> = root_reqs
        .iter()
        .rev()
        .map(|r| (r.clone(), None, true))
        .collect();
    // The conditional requirements settle once nothing else changes: a condition met by
    // the set brings its requirement in (which may meet other conditions); at the end,
    // an unmet condition brings in its `else` branch.
    let mut handled: BTreeSet<usize> = BTreeSet::new();
    loop {
        while let Some((r, who, root)) = queue.pop() {
            st.require(&r, who, root, &mut queue)?;
        }
        let mut progressed = false;
        for k in 0..st.deferred.len() {
            if handled.contains(&k) {
                continue;
            }
            let (r, who, root) = st.deferred[k].clone();
            let (need, cond) = match &r {
                Rich::If(a, c, _) => (a, c),
                Rich::Unless(a, c, _) => (a, c),
                _ => unreachable!("only conditionals are deferred"),
            };
            let met = st.holds(cond);
            let now = match (&r, met) {
                (Rich::If(..), true) => Some(need.as_ref().clone()),
                _ => None,
            };
            if let Some(n) = now {
                handled.insert(k);
                queue.push((n, who, root));
                progressed = true;
            }
        }
        if progressed {
            continue;
        }
        // Nothing more follows from the set: apply `unless` and `else` branches.
        for k in 0..st.deferred.len() {
            if handled.contains(&k) {
                continue;
            }
            let (r, who, root) = st.deferred[k].clone();
            let branch = match &r {
                Rich::If(_, c, e) if !st.holds(c) => e.as_ref().map(|e| e.as_ref().clone()),
                Rich::Unless(a, c, e) => {
                    if st.holds(c) {
                        e.as_ref().map(|e| e.as_ref().clone())
                    } else {
                        Some(a.as_ref().clone())
                    }
                }
                _ => None,
            };
            handled.insert(k);
            if let Some(b) = branch {
                queue.push((b, who, root));
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    check_conflicts(&st)?;
    Ok(Resolution {
        order: install_order(&st, &root_reqs, first),
    })
}

fn check_conflicts(st: &State<'_>) -> Result<()> {
    let u = st.u;
    let mut chosen: Vec<usize> = st.chosen.values().copied().collect();
    chosen.sort_unstable();
    for &i in &chosen {
        let p = &u.packages[i];
        for c in &p.conflicts {
            if let Some(&j) = chosen.iter().find(|&&j| j != i && u.provides(j, c)) {
                bail!(
                    "{} conflicts with {} ({c}); they cannot be installed together",
                    p.nevra(),
                    u.packages[j].nevra()
                );
            }
        }
        for o in &p.obsoletes {
            if let Some(&j) = chosen.iter().find(|&&j| {
                j != i && u.packages[j].name == o.name && {
                    let own = Dep {
                        name: u.packages[j].name.clone(),
                        flags: super::tags::sense::EQUAL,
                        evr: u.packages[j].evr.clone(),
                    };
                    own.satisfies(o)
                }
            }) {
                bail!(
                    "{} obsoletes {} ({o}); drop one of them from the request",
                    p.nevra(),
                    u.packages[j].nevra()
                );
            }
        }
    }
    Ok(())
}

/// Dependencies first: depth-first from `first`, then from what each root brought in.
fn install_order(st: &State<'_>, roots: &[Rich], first: &[String]) -> Vec<usize> {
    let mut order = Vec::with_capacity(st.chosen.len());
    let mut seen = BTreeSet::new();
    fn visit(st: &State<'_>, i: usize, seen: &mut BTreeSet<usize>, order: &mut Vec<usize>) {
        if !seen.insert(i) {
            return;
        }
        for &d in st.edges.get(&i).into_iter().flatten() {
            visit(st, d, seen, order);
        }
        order.push(i);
    }
    for f in first {
        if let Some(&i) = st.chosen.get(f) {
            visit(st, i, &mut seen, &mut order);
        }
    }
    for r in roots {
        for d in r.atoms() {
            if let Some(i) = st.satisfied(d) {
                visit(st, i, &mut seen, &mut order);
            }
        }
    }
    // Whatever only a conditional brought in, by name.
    let mut rest: Vec<(&String, &usize)> = st.chosen.iter().collect();
    rest.sort();
    for (_, &i) in rest {
        visit(st, i, &mut seen, &mut order);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::rpm::version::Evr;

    fn pkg(name: &str, ver: &str, provides: &[&str], requires: &[&str]) -> RepoPackage {
        RepoPackage {
            name: name.into(),
            arch: "x86_64".into(),
            evr: Evr::parse(ver),
            location: format!("{name}.rpm"),
            provides: provides.iter().map(|p| Dep::parse(p).unwrap()).collect(),
            requires: requires
                .iter()
                .map(|r| {
                    if r.starts_with('(') {
                        Rich::parse(r).unwrap()
                    } else {
                        Rich::Dep(Dep::parse(r).unwrap())
                    }
                })
                .collect(),
            ..Default::default()
        }
    }

    fn names(u: &Universe, r: &Resolution) -> Vec<String> {
        r.order.iter().map(|&i| u.packages[i].nevra()).collect()
    }

    #[test]
    fn resolves_versions_files_rich_deps_and_orders_dependencies_first() {
        let mut sh = pkg("bash", "5.2-1", &[], &["filesystem"]);
        sh.files = vec!["/bin/sh".into()];
        let u = Universe::new(vec![
            pkg("filesystem", "3.18-1", &[], &[]),
            sh,
            pkg("libfoo", "1.0-1", &["libfoo.so.1()(64bit)"], &[]),
            pkg("libfoo", "2.0-1", &["libfoo.so.2()(64bit)"], &[]),
            pkg(
                "app",
                "1-1",
                &[],
                &[
                    "/bin/sh",
                    "libfoo.so.1()(64bit)",
                    "(pam if systemd)",
                    "(gz or xz)",
                ],
            ),
            pkg("pam", "1-1", &[], &[]),
            pkg("systemd", "255-1", &[], &[]),
            pkg("xz", "5-1", &[], &[]),
            pkg("gz", "1-1", &[], &[]),
            pkg("tool", "1-1", &[], &["libfoo >= 2"]),
        ]);
        let r = resolve(&u, &["app".into()], "x86_64", &["filesystem".into()]).unwrap();
        assert_eq!(
            names(&u, &r),
            vec![
                "filesystem-3.18-1.x86_64",
                "bash-5.2-1.x86_64",
                "libfoo-1.0-1.x86_64",
                "gz-1-1.x86_64",
                "app-1-1.x86_64"
            ]
        );
        // The condition met: pam comes in.
        let r = resolve(&u, &["app".into(), "systemd".into()], "x86_64", &[]).unwrap();
        assert!(names(&u, &r).contains(&"pam-1-1.x86_64".to_string()));
        // The newest version that satisfies.
        let r = resolve(&u, &["tool".into()], "x86_64", &[]).unwrap();
        assert!(names(&u, &r).contains(&"libfoo-2.0-1.x86_64".to_string()));
        // Two versions of one name cannot both be installed.
        let err = resolve(&u, &["app".into(), "tool".into()], "x86_64", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("already chosen"), "{err:#}");
        let err = resolve(&u, &["nope".into()], "x86_64", &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("nothing provides nope"),
            "{err:#}"
        );
    }

    #[test]
    fn conflicts_and_obsoletes_are_refused() {
        let mut a = pkg("a", "1-1", &[], &[]);
        a.conflicts = vec![Dep::parse("b < 2").unwrap()];
        let mut c = pkg("c", "1-1", &[], &[]);
        c.obsoletes = vec![Dep::parse("old").unwrap()];
        let u = Universe::new(vec![
            a,
            pkg("b", "1-1", &[], &[]),
            c,
            pkg("old", "1-1", &[], &[]),
        ]);
        let err = resolve(&u, &["a".into(), "b".into()], "x86_64", &[]).unwrap_err();
        assert!(format!("{err}").contains("conflicts"), "{err}");
        let err = resolve(&u, &["c".into(), "old".into()], "x86_64", &[]).unwrap_err();
        assert!(format!("{err}").contains("obsoletes"), "{err}");
        assert!(resolve(&u, &["a".into(), "c".into()], "x86_64", &[]).is_ok());
    }
}
