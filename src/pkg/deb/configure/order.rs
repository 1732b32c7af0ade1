//! The order a Debian bootstrap installs packages in, so that whatever depends on order
//! (dynamically allocated user ids, the `-` backups of /etc/passwd, file-trigger
//! interests, ucf's registry) comes out as Debian's own tools make it.
//!
//! mmdebstrap and debootstrap hand the whole set to one `dpkg --install`, in the order
//! apt lists the archives; dpkg unpacks them in that order, then configures them from a
//! queue. [`unpack_order`] reproduces apt's list for a fresh install (packages sorted by
//! apt's score — Essential, Pre-Depends, priority — then name, each preceded by the
//! dependencies it needs; a dependency cycle of an immediately-configured package puts
//! the package first, as apt's SmartUnPack does). [`configure_order`] runs dpkg's
//! configuration queue itself (`process_queue`, `dependencies_ok`, `findbreakcycle`): a
//! package is configured once everything it depends on is, a deferred one goes to the
//! back of the queue, and when a whole round makes no progress dpkg breaks a dependency
//! cycle (preferring a package without a postinst) and, at the last try, forces.
//! Both were checked against dpkg's own log of mmdebstrap runs (trixie, 133 and 137
//! packages): the same sequence, package for package.

use std::collections::{HashMap, HashSet};

/// What ordering needs to know about one package.
#[derive(Clone, Debug, Default)]
pub struct OrderPkg {
    pub name: String,
    pub essential: bool,
    /// Debian's priority field ("required", "important"…).
    pub priority: String,
    /// Pre-Depends, then Depends: each a list of alternatives (names only).
    pub pre_depends: Vec<Vec<String>>,
    pub depends: Vec<Vec<String>>,
    /// Both, in the order the control file lists the fields (dpkg keeps that order).
    pub control_depends: Vec<Vec<String>>,
    pub provides: Vec<String>,
    pub has_postinst: bool,
}

struct Graph<'a> {
    pkgs: &'a [OrderPkg],
    by_name: HashMap<&'a str, usize>,
    providers: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Graph<'a> {
    fn new(pkgs: &'a [OrderPkg]) -> Graph<'a> {
        let by_name = pkgs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let mut providers: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut sorted: Vec<usize> = (0..pkgs.len()).collect();
        sorted.sort_by(|a, b| pkgs[*a].name.cmp(&pkgs[*b].name));
        for i in sorted {
            for v in &pkgs[i].provides {
                providers.entry(v.as_str()).or_default().push(i);
            }
        }
        Graph {
            pkgs,
            by_name,
            providers,
        }
    }

    /// The package of the set that satisfies an alternative list: the first real one,
    /// else the first provider by name.
    fn resolve(&self, alts: &[String]) -> Option<usize> {
        for a in alts {
            if let Some(&i) = self.by_name.get(a.as_str()) {
                return Some(i);
            }
            if let Some(p) = self.providers.get(a.as_str()) {
                return p.first().copied();
            }
        }
        None
    }
}

/// apt's OrderList score for a package (pkgOrderList::Score, fresh install).
fn score(p: &OrderPkg, immediate: bool) -> i32 {
    let mut s = 0;
    if p.essential {
        s += 200;
    }
    if immediate {
        s += 10;
    }
    if !p.pre_depends.is_empty() {
        s += 50;
    }
    s += match p.priority.as_str() {
        "required" => 5,
        "important" => 4,
        "standard" => 3,
        "optional" => 1,
        _ => 0,
    };
    s
}

/// The order apt hands a fresh install's archives to dpkg (indices into `pkgs`).
pub fn unpack_order(pkgs: &[OrderPkg]) -> Vec<usize> {
    let g = Graph::new(pkgs);
    // apt configures Essential packages and everything they depend on immediately.
    let mut immediate = HashSet::new();
    let mut stack: Vec<usize> = (0..pkgs.len()).filter(|&i| pkgs[i].essential).collect();
    while let Some(i) = stack.pop() {
        if immediate.insert(i) {
            for alts in pkgs[i].pre_depends.iter().chain(&pkgs[i].depends) {
                if let Some(d) = g.resolve(alts) {
                    stack.push(d);
                }
            }
        }
    }
    let mut base: Vec<usize> = (0..pkgs.len()).collect();
    base.sort_by(|&a, &b| {
        score(&pkgs[b], immediate.contains(&b))
            .cmp(&score(&pkgs[a], immediate.contains(&a)))
            .then(pkgs[a].name.cmp(&pkgs[b].name))
    });
    let mut u = Unpacker {
        g: &g,
        immediate: &immediate,
        done: vec![false; pkgs.len()],
        on_stack: Vec::new(),
        waiting: HashMap::new(),
        out: Vec::new(),
    };
    for i in base {
        u.visit(i);
    }
    u.out
}

struct Unpacker<'g, 'a> {
    g: &'g Graph<'a>,
    immediate: &'g HashSet<usize>,
    done: Vec<bool>,
    on_stack: Vec<usize>,
    /// Packages that wait for a package of a cycle being visited to be placed first.
    waiting: HashMap<usize, Vec<usize>>,
    out: Vec<usize>,
}

impl Unpacker<'_, '_> {
    fn place(&mut self, i: usize) {
        self.done[i] = true;
        self.out.push(i);
        for w in self.waiting.remove(&i).unwrap_or_default() {
            if !self.done[w] {
                self.place(w);
            }
        }
    }

    /// Place `i` after what it depends on. Returns the package of an unfinished cycle `i`
    /// now waits for, if any.
    fn visit(&mut self, i: usize) -> Option<usize> {
        if self.done[i] {
            return None;
        }
        if self.on_stack.contains(&i) {
            return self.immediate.contains(&i).then_some(i);
        }
        self.on_stack.push(i);
        let mut blocker = None;
        let p = &self.g.pkgs[i];
        for alts in p.pre_depends.iter().chain(&p.depends) {
            let Some(d) = self.g.resolve(alts) else {
                continue;
            };
            if let Some(b) = self.visit(d) {
                if b != i && blocker.is_none() {
                    blocker = Some(b);
                }
            }
        }
        self.on_stack.pop();
        if let Some(b) = blocker {
            if self.on_stack.contains(&b) {
                self.waiting.entry(b).or_default().push(i);
                return Some(b);
            }
        }
        self.place(i);
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Found {
    None,
    Defer,
    Forced,
    Ok,
}

const TRY_CYCLES: u32 = 2;
const TRY_FORCE_DEPENDS: u32 = 6;

/// dpkg's configuration order for packages unpacked in `unpacked` order (indices into
/// `pkgs`), as `dpkg --install --force-depends` runs it.
pub fn configure_order(pkgs: &[OrderPkg], unpacked: &[usize]) -> Vec<usize> {
    let g = Graph::new(pkgs);
    let mut q = Queue {
        g: &g,
        configured: vec![false; pkgs.len()],
        broken: HashSet::new(),
        color: vec![Color::White; pkgs.len()],
        dependtry: 1,
    };
    let mut queue: std::collections::VecDeque<usize> = unpacked.iter().copied().collect();
    let mut sincenothing: usize = 0;
    let mut out = Vec::with_capacity(pkgs.len());
    while let Some(i) = queue.pop_front() {
        let len = queue.len();
        sincenothing += 1;
        if sincenothing > len * 2 + 2 {
            q.dependtry += 1;
            sincenothing = 0;
            if q.dependtry > TRY_FORCE_DEPENDS {
                // dpkg would stop with an internal error; keep the rest in queue order.
                out.push(i);
                out.extend(queue.drain(..));
                break;
            }
        }
        if q.dependtry >= TRY_CYCLES && q.find_break_cycle(i) {
            sincenothing = 0;
        }
        if q.dependencies_ok(i) == Found::Defer {
            queue.push_back(i);
            continue;
        }
        sincenothing = 0;
        q.configured[i] = true;
        out.push(i);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Color {
    White,
    Gray,
    Black,
}

struct Queue<'g, 'a> {
    g: &'g Graph<'a>,
    configured: Vec<bool>,
    /// Dependency links dpkg broke to resolve a cycle: (package, index in control_depends).
    broken: HashSet<(usize, usize)>,
    color: Vec<Color>,
    dependtry: u32,
}

impl Queue<'_, '_> {
    fn found(&self, dependee: usize) -> Found {
        if self.configured[dependee] {
            Found::Ok
        } else {
            Found::Defer
        }
    }

    /// Every Depends/Pre-Depends of `i` met (Ok), some met only later (Defer).
    fn dependencies_ok(&self, i: usize) -> Found {
        let p = &self.g.pkgs[i];
        let mut ok = Found::Ok;
        for (n, alts) in p.control_depends.iter().enumerate() {
            if self.broken.contains(&(i, n)) {
                continue;
            }
            let mut found = Found::None;
            'alts: for a in alts {
                if let Some(&d) = self.g.by_name.get(a.as_str()) {
                    found = found.max(self.found(d));
                    if found == Found::Ok {
                        break;
                    }
                }
                for &prov in self.g.providers.get(a.as_str()).into_iter().flatten() {
                    let f = if prov == i {
                        Found::Ok
                    } else {
                        self.found(prov)
                    };
                    found = found.max(f);
                    if found == Found::Ok {
                        break 'alts;
                    }
                }
            }
            if self.dependtry >= TRY_FORCE_DEPENDS {
                found = found.max(Found::Forced);
            }
            if found == Found::Defer {
                ok = Found::Defer;
            }
        }
        ok
    }

    fn find_break_cycle(&mut self, i: usize) -> bool {
        self.color.iter_mut().for_each(|c| *c = Color::White);
        self.recurse(i, &mut Vec::new())
    }

    /// findbreakcyclerecursive: `sofar` is the chain of (package, dependency index) links
    /// being followed.
    fn recurse(&mut self, i: usize, sofar: &mut Vec<(usize, usize)>) -> bool {
        if self.color[i] == Color::Black {
            return false;
        }
        self.color[i] = Color::Gray;
        let deps = self.g.pkgs[i].control_depends.clone();
        for (n, alts) in deps.iter().enumerate() {
            if self.broken.contains(&(i, n)) {
                continue;
            }
            for a in alts {
                let mut targets: Vec<usize> = Vec::new();
                if let Some(&d) = self.g.by_name.get(a.as_str()) {
                    targets.push(d);
                }
                targets.extend(
                    self.g
                        .providers
                        .get(a.as_str())
                        .into_iter()
                        .flatten()
                        .copied(),
                );
                for d in targets {
                    if self.found_cycle(i, n, sofar, d) {
                        return true;
                    }
                }
            }
        }
        self.color[i] = Color::Black;
        false
    }

    fn found_cycle(
        &mut self,
        i: usize,
        n: usize,
        sofar: &mut Vec<(usize, usize)>,
        dependee: usize,
    ) -> bool {
        if !sofar.iter().any(|(p, _)| *p == dependee) {
            sofar.push((i, n));
            let r = self.recurse(dependee, sofar);
            sofar.pop();
            return r;
        }
        // A cycle: break the link of the first package (walking back from this one) that
        // has no postinst, else the dependee's own link.
        let mut chain: Vec<(usize, usize)> = sofar.clone();
        chain.push((i, n));
        let mut pick = None;
        for (k, &(p, dep)) in chain.iter().enumerate().rev() {
            if k != chain.len() - 1 && p == dependee {
                pick = Some((p, dep));
                break;
            }
            if !self.g.pkgs[p].has_postinst {
                pick = Some((p, dep));
                break;
            }
        }
        let pick = pick.unwrap_or((i, n));
        self.broken.insert(pick);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, ess: bool, deps: &[&str], postinst: bool) -> OrderPkg {
        let d: Vec<Vec<String>> = deps
            .iter()
            .map(|a| a.split('|').map(String::from).collect())
            .collect();
        OrderPkg {
            name: name.into(),
            essential: ess,
            priority: if ess { "required" } else { "optional" }.into(),
            pre_depends: vec![],
            depends: d.clone(),
            control_depends: d,
            provides: vec![],
            has_postinst: postinst,
        }
    }

    fn names(p: &[OrderPkg], o: &[usize]) -> Vec<String> {
        o.iter().map(|&i| p[i].name.clone()).collect()
    }

    #[test]
    fn cycle_breaks_at_the_package_without_postinst() {
        // libc6 and libgcc-s1 depend on each other; libgcc-s1 has no postinst.
        let p = vec![
            pkg("libc6", false, &["libgcc-s1"], true),
            pkg("libgcc-s1", false, &["gcc-base", "libc6"], false),
            pkg("gcc-base", false, &[], false),
            pkg("mawk", true, &["libc6"], true),
        ];
        let u = unpack_order(&p);
        assert_eq!(names(&p, &u), ["gcc-base", "libc6", "libgcc-s1", "mawk"]);
        let c = configure_order(&p, &u);
        assert_eq!(names(&p, &c), ["gcc-base", "libgcc-s1", "libc6", "mawk"]);
    }

    #[test]
    fn providers_satisfy_virtual_dependencies() {
        let mut base = pkg("base-files", true, &[], true);
        base.pre_depends = vec![vec!["awk".into()]];
        base.control_depends = base.pre_depends.clone();
        let mut mawk = pkg("mawk", false, &[], true);
        mawk.provides = vec!["awk".into()];
        let p = vec![base, mawk];
        let u = unpack_order(&p);
        assert_eq!(names(&p, &u), ["mawk", "base-files"]);
        assert_eq!(names(&p, &configure_order(&p, &u)), ["mawk", "base-files"]);
    }
}
