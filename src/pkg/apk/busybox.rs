//! Busybox applet links, made declaratively.
//!
//! Alpine's busybox post-install runs `/bin/busybox --install -s`, which links every
//! applet at its configured place. osbuilder never runs target code on the host, so the
//! list is derived from data instead:
//! 1. `etc/busybox-paths.d/busybox`, the `busybox --list-full` output Alpine's package
//!    ships (one relative path per line) — exact, and what Alpine itself uses;
//! 2. otherwise, the applet names read from the binary's own name table (a sorted run of
//!    NUL-terminated names starting with `[`), placed by `distros/alpine/busybox-paths`
//!    (the usual location of each applet; names it lacks go to `bin/`).

use std::collections::BTreeMap;

/// Paths from a `busybox --list-full` style list, cleaned and validated.
pub fn parse_paths_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim().trim_start_matches('/'))
        .filter(|l| !l.is_empty() && !l.starts_with('#') && safe_rel_path(l))
        .map(str::to_string)
        .collect()
}

fn safe_rel_path(p: &str) -> bool {
    !p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
}

fn applet_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.' | b'[')
}

/// Applet names from a busybox binary: its `applet_names` table is the longest run of
/// NUL-terminated, strictly ascending names beginning `[\0[[\0` (or, in builds without
/// `test`, the longest ascending run of at least 10 names).
pub fn applet_names_from_binary(bin: &[u8]) -> Option<Vec<String>> {
    let mut best: Vec<&[u8]> = Vec::new();
    let mut starts: Vec<usize> = Vec::new();
    let mut i = 0;
    while let Some(off) = find(&bin[i..], b"[\0[[\0") {
        starts.push(i + off);
        i += off + 1;
    }
    for s in starts {
        let run = ascending_run(&bin[s..]);
        if run.len() > best.len() {
            best = run;
        }
    }
    (best.len() >= 10).then(|| {
        best.iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn ascending_run(mut b: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    while let Some(end) = b.iter().position(|c| *c == 0) {
        let name = &b[..end];
        if name.is_empty() || name.len() > 32 || !name.iter().all(|c| applet_char(*c)) {
            break;
        }
        if out.last().is_some_and(|prev| *prev >= name) {
            break;
        }
        out.push(name);
        b = &b[end + 1..];
    }
    out
}

/// Place applet names using a `busybox --list-full` style table of usual locations.
pub fn place_applets(names: &[String], locations: &str) -> Vec<String> {
    let table = parse_paths_list(locations);
    let by_name: BTreeMap<&str, &str> = table
        .iter()
        .map(|p| (p.rsplit('/').next().unwrap(), p.as_str()))
        .collect();
    names
        .iter()
        .filter(|n| n.as_str() != "busybox" && safe_rel_path(n))
        .map(|n| match by_name.get(n.as_str()) {
            Some(p) => p.to_string(),
            None => format!("bin/{n}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_list_is_cleaned() {
        let l = parse_paths_list("bin/ls\n/usr/bin/awk\n\n../../etc/x\nsbin//y\n# c\n");
        assert_eq!(l, ["bin/ls", "usr/bin/awk"]);
    }

    #[test]
    fn names_table_is_found_in_a_synthetic_binary() {
        let mut bin = b"\x7fELF junk [\0[[\0zz\0 more".to_vec();
        bin.extend(b"[\0[[\0acpid\0addgroup\0ash\0cat\0chmod\0cp\0echo\0ls\0mount\0sh\0\0\x01\x02");
        let names = applet_names_from_binary(&bin).unwrap();
        assert_eq!(names.len(), 12);
        assert_eq!(names[2], "acpid");
        let placed = place_applets(&names, "usr/bin/[\nsbin/acpid\nbin/ls\n");
        assert!(placed.contains(&"sbin/acpid".to_string()));
        assert!(placed.contains(&"bin/mount".to_string()));
    }

    /// Against a real busybox, when the host has one: the table must equal `--list`.
    #[test]
    fn names_table_matches_a_real_busybox() {
        let Ok(bin) = std::fs::read("/bin/busybox") else {
            eprintln!("skipped: /bin/busybox not present (Debian package busybox-static)");
            return;
        };
        let Ok(out) = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
        else {
            return;
        };
        let set = |v: Vec<String>| -> std::collections::BTreeSet<String> {
            v.into_iter().filter(|n| n != "busybox").collect()
        };
        let want = set(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect());
        let got = set(applet_names_from_binary(&bin).expect("no applet table found"));
        assert!(want.len() > 100);
        assert_eq!(got, want);
    }
}
