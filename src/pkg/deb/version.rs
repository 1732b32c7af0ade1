//! Debian version ordering ([epoch:]upstream[-revision]), exactly as dpkg compares them
//! (lib/dpkg/version.c): `~` sorts before everything, even the end of the string; letters
//! sort before non-letters; digit runs compare numerically.

use std::cmp::Ordering;

/// A parsed version; compare with [`compare`] (or `Ord`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version<'a> {
    pub epoch: u64,
    pub upstream: &'a str,
    pub revision: &'a str,
}

impl<'a> Version<'a> {
    pub fn parse(s: &'a str) -> Version<'a> {
        let s = s.trim();
        let (epoch, rest) = match s.split_once(':') {
            Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
                (e.parse().unwrap_or(0), r)
            }
            _ => (0, s),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        Version {
            epoch,
            upstream,
            revision,
        }
    }
}

fn order(c: u8) -> i32 {
    if c.is_ascii_digit() {
        0
    } else if c.is_ascii_alphabetic() {
        c as i32
    } else if c == b'~' {
        -1
    } else {
        c as i32 + 256
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = if i < a.len() { order(a[i]) } else { 0 };
            let bc = if j < b.len() { order(b[j]) } else { 0 };
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == 0 {
                first_diff = a[i] as i32 - b[j] as i32;
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

impl Ord for Version<'_> {
    fn cmp(&self, o: &Self) -> Ordering {
        self.epoch
            .cmp(&o.epoch)
            .then_with(|| verrevcmp(self.upstream.as_bytes(), o.upstream.as_bytes()))
            .then_with(|| verrevcmp(self.revision.as_bytes(), o.revision.as_bytes()))
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Compare two version strings the way `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    Version::parse(a).cmp(&Version::parse(b))
}

/// A relation in a dependency: `<<`, `<=`, `=`, `>=`, `>>` (and the obsolete `<`, `>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Relation {
    pub fn parse(s: &str) -> Option<Relation> {
        Some(match s {
            "<<" => Relation::Lt,
            "<=" | "<" => Relation::Le,
            "=" => Relation::Eq,
            ">=" | ">" => Relation::Ge,
            ">>" => Relation::Gt,
            _ => return None,
        })
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Relation::Lt => "<<",
            Relation::Le => "<=",
            Relation::Eq => "=",
            Relation::Ge => ">=",
            Relation::Gt => ">>",
        }
    }

    /// Does `version` satisfy `version REL wanted`?
    pub fn holds(self, version: &str, wanted: &str) -> bool {
        let c = compare(version, wanted);
        match self {
            Relation::Lt => c == Ordering::Less,
            Relation::Le => c != Ordering::Greater,
            Relation::Eq => c == Ordering::Equal,
            Relation::Ge => c != Ordering::Less,
            Relation::Gt => c == Ordering::Greater,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_orderings() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("1:0.1", "2.0", Greater),
            ("1.0-1", "1.0-1~bpo1", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("1.2a", "1.2+", Less),
            ("0001", "1", Equal),
            ("1.0-0", "1.0", Equal),
            ("a", "", Greater),
            ("~", "", Less),
            ("~~", "~", Less),
        ] {
            assert_eq!(compare(a, b), o, "{a} vs {b}");
        }
    }

    /// Generate many pairs and check each against `dpkg --compare-versions`.
    #[test]
    fn agrees_with_dpkg_on_generated_pairs() {
        if std::process::Command::new("dpkg")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIP: dpkg is not installed (apt-get install dpkg)");
            return;
        }
        let atoms = [
            "0",
            "1",
            "1.0",
            "1.0~rc1",
            "1.0+b1",
            "1:1.0",
            "2:0",
            "1.0-1",
            "1.0-1.1",
            "1.0-1~bpo",
            "1.00",
            "1.a",
            "1.A",
            "1.+",
            "1~~",
            "1~",
            "10",
            "9.9",
            "1.0-0",
            "0:1.0",
            "1.0.0",
            "3.0-2+deb12u1",
            "3.0-2+deb12u10",
            "2.1-rc-3",
            "1a",
            "1-a",
            "1.0-1ubuntu0.1",
        ];
        let mut pairs = Vec::new();
        for a in atoms {
            for b in atoms {
                pairs.push((a, b));
            }
        }
        // One dpkg run per relation over all pairs would need one process per pair; keep
        // the count bounded but wide (784 pairs, ~1–2 s).
        let script: String = pairs
            .iter()
            .map(|(a, b)| {
                format!(
                    "if dpkg --compare-versions '{a}' lt '{b}'; then echo lt; elif dpkg --compare-versions '{a}' eq '{b}'; then echo eq; else echo gt; fi\n"
                )
            })
            .collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(lines.len(), pairs.len());
        for ((a, b), l) in pairs.iter().zip(lines) {
            let ours = match compare(a, b) {
                Ordering::Less => "lt",
                Ordering::Equal => "eq",
                Ordering::Greater => "gt",
            };
            assert_eq!(ours, l, "{a} vs {b}: dpkg says {l}");
        }
    }
}
