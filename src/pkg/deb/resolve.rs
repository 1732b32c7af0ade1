//! Dependency resolution over one [`Universe`]: the requested packages (plus, for a full
//! system, every Essential/Priority:required package), closed over Pre-Depends and
//! Depends. Alternatives are tried in order (as apt does); virtual packages go to a
//! provider already chosen, else the most important provider; versioned relations use
//! Debian ordering, and a versioned dependency is only met by a versioned Provides.
//! The first alternative that can be installed wins; when none can, the error names the
//! chain of packages that led there.

use std::collections::{HashMap, VecDeque};

use anyhow::{Result, bail};

use super::index::{DebPackage, Universe, strip_arch};
use super::version::{Relation, compare};

/// One alternative of a dependency: `name (rel version)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub rel: Option<(Relation, String)>,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rel {
            Some((r, v)) => write!(f, "{} ({} {v})", self.name, r.symbol()),
            None => f.write_str(&self.name),
        }
    }
}

/// "a (>= 1) | b:any, c [amd64]" → [[a>=1, b], [c]].
pub fn parse_depends(s: &str) -> Result<Vec<Vec<Dep>>> {
    let mut out = Vec::new();
    for group in s.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            // Drop arch restrictions and build profiles (source-only syntax).
            let after_rel = alt.find(')').map(|i| i + 1).unwrap_or(0);
            let cut = alt[after_rel..]
                .find(['[', '<'])
                .map(|i| i + after_rel)
                .filter(|_| after_rel > 0 || !alt.contains('('))
                .unwrap_or(alt.len());
            let alt = alt[..cut].trim();
            let alt_owned;
            let alt = if let Some(p) = alt.find('(') {
                alt_owned = alt.to_string();
                let (n, r) = alt_owned.split_at(p);
                let inner = r.trim_start_matches('(').trim_end_matches(')').trim();
                let op_len = inner
                    .find(|c: char| !matches!(c, '<' | '>' | '='))
                    .unwrap_or(inner.len());
                let rel = Relation::parse(&inner[..op_len]).ok_or_else(|| {
                    anyhow::anyhow!("bad relation in dependency {alt_owned:?} (in {s:?})")
                })?;
                alts.push(Dep {
                    name: strip_arch(n.trim()).to_string(),
                    rel: Some((rel, inner[op_len..].trim().to_string())),
                });
                continue;
            } else {
                alt
            };
            if !alt.is_empty() {
                alts.push(Dep {
                    name: strip_arch(alt).to_string(),
                    rel: None,
                });
            }
        }
        if !alts.is_empty() {
            out.push(alts);
        }
    }
    Ok(out)
}

fn priority_rank(p: &str) -> u8 {
    match p {
        "required" => 0,
        "important" => 1,
        "standard" => 2,
        "optional" => 3,
        _ => 4,
    }
}

pub struct Resolver<'u> {
    u: &'u Universe,
    arch: String,
    /// Best candidate per real package name for this arch.
    candidates: HashMap<&'u str, usize>,
}

/// The outcome: package indices into the universe, sorted by name.
pub struct Resolution {
    pub packages: Vec<usize>,
}

impl<'u> Resolver<'u> {
    pub fn new(u: &'u Universe, arch: &str) -> Resolver<'u> {
        let mut candidates: HashMap<&str, usize> = HashMap::new();
        for (i, p) in u.packages.iter().enumerate() {
            if p.arch != arch && p.arch != "all" {
                continue;
            }
            match candidates.get(p.name.as_str()) {
                Some(&j) if compare(&u.packages[j].version, &p.version).is_ge() => {}
                _ => {
                    candidates.insert(&p.name, i);
                }
            }
        }
        Resolver {
            u,
            arch: arch.to_string(),
            candidates,
        }
    }

    fn pkg(&self, i: usize) -> &'u DebPackage {
        &self.u.packages[i]
    }

    /// Every Essential: yes and Priority: required package (Debian's "required" set).
    pub fn essential_set(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .candidates
            .values()
            .map(|&i| self.pkg(i))
            .filter(|p| p.essential || p.priority == "required")
            .map(|p| p.name.clone())
            .collect();
        v.sort();
        v
    }

    fn version_ok(dep: &Dep, version: Option<&str>) -> bool {
        match (&dep.rel, version) {
            (None, _) => true,
            (Some((r, want)), Some(v)) => r.holds(v, want),
            (Some(_), None) => false,
        }
    }

    /// Already met by the selection?
    fn satisfied(
        &self,
        dep: &Dep,
        selected: &HashMap<String, usize>,
        provided: &HashMap<String, Vec<Option<String>>>,
    ) -> bool {
        if let Some(&i) = selected.get(&dep.name) {
            if Self::version_ok(dep, Some(&self.pkg(i).version)) {
                return true;
            }
        }
        provided
            .get(&dep.name)
            .is_some_and(|vs| vs.iter().any(|v| Self::version_ok(dep, v.as_deref())))
    }

    /// The package to install for `dep`, if any can satisfy it.
    fn choose(&self, dep: &Dep, selected: &HashMap<String, usize>) -> Option<usize> {
        if let Some(&i) = self.candidates.get(dep.name.as_str()) {
            if Self::version_ok(dep, Some(&self.pkg(i).version)) {
                return Some(i);
            }
        }
        let provs = self.u.providers.get(&dep.name)?;
        let mut ok: Vec<usize> = provs
            .iter()
            .filter(|(i, v)| {
                let p = self.pkg(*i);
                (p.arch == self.arch || p.arch == "all")
                    && self.candidates.get(p.name.as_str()) == Some(i)
                    && Self::version_ok(dep, v.as_deref())
            })
            .map(|(i, _)| *i)
            .collect();
        if let Some(&i) = ok
            .iter()
            .find(|i| selected.contains_key(&self.pkg(**i).name))
        {
            return Some(i);
        }
        ok.sort_by(|a, b| {
            let (pa, pb) = (self.pkg(*a), self.pkg(*b));
            priority_rank(&pa.priority)
                .cmp(&priority_rank(&pb.priority))
                .then(pa.name.cmp(&pb.name))
        });
        ok.first().copied()
    }

    fn describe_unsatisfiable(&self, dep: &Dep) -> String {
        let mut why = Vec::new();
        match self.candidates.get(dep.name.as_str()) {
            Some(&i) => why.push(format!(
                "{} has version {} only",
                dep.name,
                self.pkg(i).version
            )),
            None if self.u.providers.contains_key(&dep.name) => {
                why.push(format!("no provider of virtual package {} fits", dep.name))
            }
            None => why.push(format!(
                "{} is not in the repository for {}",
                dep.name, self.arch
            )),
        }
        why.join("; ")
    }

    /// Resolve `roots` (real or virtual names). `essential` adds the required set.
    pub fn resolve(&self, roots: &[String], essential: bool) -> Result<Resolution> {
        let mut wanted: Vec<String> = Vec::new();
        if essential {
            wanted.extend(self.essential_set());
        }
        wanted.extend(roots.iter().cloned());
        let mut selected: HashMap<String, usize> = HashMap::new();
        let mut provided: HashMap<String, Vec<Option<String>>> = HashMap::new();
        // Who pulled each package in, for error chains: name → (parent name, dep text).
        let mut parent: HashMap<String, (String, String)> = HashMap::new();
        let mut queue: VecDeque<usize> = VecDeque::new();

        let select = |i: usize,
                      selected: &mut HashMap<String, usize>,
                      provided: &mut HashMap<String, Vec<Option<String>>>,
                      queue: &mut VecDeque<usize>| {
            let p = self.pkg(i);
            if selected.insert(p.name.clone(), i).is_none() {
                for (v, ver) in &p.provides {
                    provided.entry(v.clone()).or_default().push(ver.clone());
                }
                queue.push_back(i);
            }
        };

        for name in &wanted {
            let dep = Dep {
                name: name.clone(),
                rel: None,
            };
            if self.satisfied(&dep, &selected, &provided) {
                continue;
            }
            match self.choose(&dep, &selected) {
                Some(i) => select(i, &mut selected, &mut provided, &mut queue),
                None => bail!(
                    "package '{name}' is not available for {} in {} ({}); check the name \
                     (--packages, --extra-pkgs) and --os-version",
                    self.arch,
                    self.u.suite,
                    self.describe_unsatisfiable(&dep)
                ),
            }
        }

        while let Some(i) = queue.pop_front() {
            let p = self.pkg(i);
            let mut groups = parse_depends(&p.pre_depends)?;
            groups.extend(parse_depends(&p.depends)?);
            for group in groups {
                if group
                    .iter()
                    .any(|d| self.satisfied(d, &selected, &provided))
                {
                    continue;
                }
                let choice = group.iter().find_map(|d| self.choose(d, &selected));
                let text = group
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" | ");
                match choice {
                    Some(c) => {
                        let cname = self.pkg(c).name.clone();
                        parent
                            .entry(cname)
                            .or_insert_with(|| (p.name.clone(), text.clone()));
                        select(c, &mut selected, &mut provided, &mut queue);
                    }
                    None => {
                        let mut chain = vec![format!("{} {} depends on {text}", p.name, p.version)];
                        let mut cur = p.name.clone();
                        let mut guard = 0;
                        while let Some((par, t)) = parent.get(&cur) {
                            chain.push(format!("{par} depends on {t}"));
                            cur = par.clone();
                            guard += 1;
                            if guard > 100 {
                                break;
                            }
                        }
                        chain.push(format!("{cur} was requested"));
                        let reasons: Vec<String> = group
                            .iter()
                            .map(|d| self.describe_unsatisfiable(d))
                            .collect();
                        bail!(
                            "cannot satisfy the dependencies for {} in {}: {}\n  because: {}",
                            self.arch,
                            self.u.suite,
                            chain.join("\n  ← "),
                            reasons.join("; ")
                        );
                    }
                }
            }
        }
        let mut packages: Vec<usize> = selected.into_values().collect();
        packages.sort_by(|a, b| self.pkg(*a).name.cmp(&self.pkg(*b).name));
        Ok(Resolution { packages })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::deb::index::parse_packages;
    use crate::pkg::deb::release::Release;

    fn universe(text: &str) -> Universe {
        let r = Release {
            suite: "test".into(),
            ..Default::default()
        };
        Universe::new(parse_packages(text, "file:///x").unwrap(), r)
    }

    const H: &str = "SHA256: 0000000000000000000000000000000000000000000000000000000000000000\n";

    fn stanza(name: &str, ver: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nVersion: {ver}\nArchitecture: amd64\nFilename: pool/{name}.deb\nSize: 1\n{H}{extra}\n"
        )
    }

    #[test]
    fn alternatives_versions_and_virtuals() {
        let text = [
            stanza("app", "1", "Depends: libold (>= 2) | libnew, awk, mail-transport-agent (>= 1)\nPre-Depends: base\n"),
            stanza("libold", "1.5", ""),
            stanza("libnew", "3", ""),
            stanza("base", "1", ""),
            stanza("gawk", "5", "Provides: awk\nPriority: optional\n"),
            stanza("mawk", "1.3", "Provides: awk\nPriority: required\n"),
            stanza("exim", "4", "Provides: mail-transport-agent (= 4)\n"),
            stanza("postfix", "3", "Provides: mail-transport-agent\n"),
            stanza("ess", "1", "Essential: yes\n"),
        ]
        .join("\n");
        let u = universe(&text);
        let r = Resolver::new(&u, "amd64");
        let res = r.resolve(&["app".into()], false).unwrap();
        let names: Vec<&str> = res
            .packages
            .iter()
            .map(|i| u.packages[*i].name.as_str())
            .collect();
        assert_eq!(names, ["app", "base", "exim", "libnew", "mawk"]);
        let res = r.resolve(&["app".into()], true).unwrap();
        assert_eq!(res.packages.len(), 6);
    }

    #[test]
    fn unsatisfiable_names_the_chain() {
        let text = [
            stanza("top", "1", "Depends: mid\n"),
            stanza("mid", "1", "Depends: leaf (>= 9)\n"),
            stanza("leaf", "2", ""),
        ]
        .join("\n");
        let u = universe(&text);
        let err = format!(
            "{:#}",
            Resolver::new(&u, "amd64")
                .resolve(&["top".into()], false)
                .err()
                .unwrap()
        );
        assert!(err.contains("mid 1 depends on leaf (>= 9)"), "{err}");
        assert!(err.contains("top depends on mid"), "{err}");
        assert!(err.contains("leaf has version 2 only"), "{err}");
        assert!(
            Resolver::new(&u, "amd64")
                .resolve(&["nope".into()], false)
                .is_err()
        );
    }

    /// Debian's Release for trixie says "Suite: stable": messages name what was asked.
    #[test]
    fn an_unknown_package_names_the_suite_asked_for() {
        let r = Release {
            suite: "stable".into(),
            codename: "trixie".into(),
            ..Default::default()
        };
        let u = Universe::new(
            parse_packages(&stanza("a", "1", ""), "file:///x").unwrap(),
            r,
        );
        let err = format!(
            "{:#}",
            Resolver::new(&u, "amd64")
                .resolve(&["nosuch".into()], false)
                .err()
                .unwrap()
        );
        assert!(
            err.contains("package 'nosuch' is not available for amd64 in trixie")
                && !err.contains("stable")
                && err.contains("--os-version"),
            "{err}"
        );
    }

    #[test]
    fn dependency_syntax() {
        let d = parse_depends(
            "libc6 (<< 2.42), a:any (>= 1) [amd64] <!nocheck>, b [i386] | c (= 1:2-3)",
        )
        .unwrap();
        assert_eq!(d[0][0].rel, Some((Relation::Lt, "2.42".into())));
        assert_eq!(d[1][0].name, "a");
        assert_eq!(d[1][0].rel, Some((Relation::Ge, "1".into())));
        assert_eq!(d[2][0].name, "b");
        assert_eq!(d[2][1].rel, Some((Relation::Eq, "1:2-3".into())));
    }

    #[test]
    fn highest_version_wins() {
        let text = [
            stanza("a", "1.0", ""),
            stanza("a", "1.0+b1", ""),
            stanza("a", "1.0~rc", ""),
        ]
        .join("\n");
        let u = universe(&text);
        let res = Resolver::new(&u, "amd64")
            .resolve(&["a".into()], false)
            .unwrap();
        assert_eq!(u.packages[res.packages[0]].version, "1.0+b1");
    }
}
