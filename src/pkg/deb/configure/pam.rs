//! pam-auth-update (libpam-runtime) on a new system: the profiles in
//! /usr/share/pam-configs that are on by default are merged into /etc/pam.d/common-*
//! from the templates in /usr/share/pam, and what was written is recorded in
//! /var/lib/pam (one file per type, plus the profiles seen) so that a later
//! pam-auth-update in the guest can tell local changes from its own.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::pkg::extract::{Attrs, Extractor};

const TYPES: [&str; 5] = [
    "auth",
    "account",
    "password",
    "session",
    "session-noninteractive",
];

type Profile = BTreeMap<String, String>;

/// parse_pam_profile.
fn parse_profile(text: &str) -> Profile {
    let mut p = Profile::new();
    let mut field = String::new();
    for line in text.split_inclusive('\n') {
        let l = line.trim_end_matches('\n');
        let head = l.split_once(':').filter(|(k, v)| {
            !k.is_empty()
                && !k.contains(char::is_whitespace)
                && (v.starts_with([' ', '\t']) || v.is_empty())
        });
        if let Some((k, v)) = head {
            field = k.trim_end_matches("-Final").to_string();
            p.insert(field.clone(), v.trim().to_string());
        } else {
            let t = l.trim();
            if !t.is_empty() {
                let e = p.entry(field.clone()).or_default();
                e.push('\n');
                e.push_str(t);
                *e = e.trim_start_matches(['\n', ' ', '\t']).to_string();
            }
        }
    }
    if p.get("Session-Interactive-Only").map(String::as_str) != Some("yes") {
        for (from, to) in [
            ("Session-Type", "Session-noninteractive-Type"),
            ("Session", "Session-noninteractive"),
            ("Session-Initial", "Session-noninteractive-Initial"),
        ] {
            if let Some(v) = p.get(from).cloned() {
                p.insert(to.into(), v);
            }
        }
    }
    p
}

fn ucfirst(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn lines_for<'p>(p: &'p Profile, ty: &str, first: bool) -> Option<&'p String> {
    if first {
        if let Some(v) = p.get(&format!("{ty}-Initial")) {
            return Some(v);
        }
    }
    p.get(ty)
}

/// merge_one_line without a diff: `end` in the control becomes the jump count.
fn merge_line(line: &str, count: usize) -> String {
    // ((\[[^]]+\]|\w+)\s+\S+)\s*(.*)
    let (control, rest) = if line.starts_with('[') {
        match line.find(']') {
            Some(i) => (&line[..=i], &line[i + 1..]),
            None => (line, ""),
        }
    } else {
        let i = line.find(char::is_whitespace).unwrap_or(line.len());
        (&line[..i], &line[i..])
    };
    let ws_end = rest
        .find(|c: char| !c.is_whitespace())
        .unwrap_or(rest.len());
    let after = &rest[ws_end..];
    let m_end = after.find(char::is_whitespace).unwrap_or(after.len());
    let modline = format!("{control}{}{}", &rest[..ws_end], &after[..m_end]);
    let opts: Vec<&str> = after[m_end..].split_whitespace().collect();
    let modline = modline.replace("end", &count.to_string());
    format!("{modline} {}\n", opts.join(" "))
}

/// The state pam-auth-update keeps between runs in this build.
#[derive(Clone, Debug, Default)]
pub struct PamState {
    enabled: Option<Vec<String>>,
}

/// `pam-auth-update --package [--force]` (other options are not emulated: Err).
pub fn pam_auth_update(
    ex: &mut Extractor,
    state: &mut PamState,
    args: &[String],
    mtime: i64,
) -> Result<std::result::Result<(), String>> {
    for a in args {
        if matches!(a.as_str(), "--remove" | "--enable" | "--disable") {
            return Ok(Err(format!("pam-auth-update {}", args.join(" "))));
        }
    }
    let mut profiles: BTreeMap<String, Profile> = BTreeMap::new();
    for n in ex.read_dir(b"usr/share/pam-configs")?.unwrap_or_default() {
        let name = String::from_utf8_lossy(&n).into_owned();
        if name.ends_with('~') || (name.starts_with('#') && name.ends_with('#')) {
            continue;
        }
        let text = ex
            .read_file(format!("usr/share/pam-configs/{name}").as_bytes())?
            .unwrap_or_default();
        let p = parse_profile(&String::from_utf8_lossy(&text));
        if p.values().any(|v| v.contains("pam_tally")) {
            continue;
        }
        profiles.insert(name, p);
    }
    let prio = |n: &String| -> i64 {
        profiles[n]
            .get("Priority")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut sorted: Vec<String> = profiles.keys().cloned().collect();
    sorted.sort_by(|a, b| prio(b).cmp(&prio(a)).then(b.cmp(a)));
    // First run: nothing recorded, so the profiles that are on by default; later runs in
    // the same build: what was enabled, plus new default profiles.
    let before = state.enabled.clone().unwrap_or_default();
    let mut enabled: Vec<String> = before
        .iter()
        .filter(|e| profiles.contains_key(*e))
        .cloned()
        .collect();
    for n in &sorted {
        if profiles[n].get("Default").map(String::as_str) == Some("yes") && !enabled.contains(n) {
            enabled.push(n.clone());
        }
    }
    enabled.sort_by(|a, b| prio(b).cmp(&prio(a)).then(b.cmp(a)));
    enabled.dedup();
    state.enabled = Some(enabled.clone());

    ex.create_dir(b"var/lib/pam", Attrs::root(0o755, mtime))?;
    let file = Attrs::root(0o644, mtime);
    let seen: String = sorted.iter().map(|s| format!("{s}\n")).collect();
    ex.write_file(b"var/lib/pam/seen", &mut seen.as_bytes(), file)?;
    for ty in TYPES {
        let uc = ucfirst(ty);
        let short = ty.trim_end_matches("-noninteractive");
        let template = ex.read_file(format!("usr/share/pam/common-{ty}").as_bytes())?;
        let Some(template) = template else {
            return Ok(Err(format!("pam-auth-update: no template for common-{ty}")));
        };
        let mut out = String::new();
        let mut st = 0;
        for line in String::from_utf8_lossy(&template).split_inclusive('\n') {
            if st == 1 {
                if line.starts_with("# here's the fallback if no module succeeds") {
                    out.push_str(line);
                    st += 1;
                }
                continue;
            }
            if st == 3 {
                if line.starts_with("# end of pam-auth-update config") {
                    out.push_str(line);
                    st += 1;
                }
                continue;
            }
            out.push_str(line);
            let val = match st {
                0 if line
                    .starts_with("# here are the per-package modules (the \"Primary\" block)") =>
                {
                    "Primary"
                }
                2 if line.starts_with(
                    "# and here are more per-package modules (the \"Additional\" block)",
                ) =>
                {
                    "Additional"
                }
                _ => continue,
            };
            let mods: Vec<&String> = enabled
                .iter()
                .filter(|m| {
                    profiles[*m].get(&format!("{uc}-Type")).map(String::as_str) == Some(val)
                })
                .collect();
            let mut count: i64 = 0;
            for (i, m) in mods.iter().enumerate() {
                if let Some(o) = lines_for(&profiles[*m], &uc, i == 0) {
                    count += o.split('\n').filter(|l| !l.is_empty()).count() as i64;
                }
            }
            if val == "Additional" {
                count -= 1;
            }
            if val == "Primary" && count == 0 {
                out.push_str(&format!("{short}\t[default=1]\t\t\tpam_permit.so\n"));
            }
            for (i, m) in mods.iter().enumerate() {
                if let Some(o) = lines_for(&profiles[*m], &uc, i == 0) {
                    for l in o.split('\n') {
                        out.push_str(&format!(
                            "{short}\t{}",
                            merge_line(l, count.max(0) as usize)
                        ));
                        count -= 1;
                    }
                }
            }
            st += 1;
        }
        if st < 4 {
            return Ok(Err(format!(
                "pam-auth-update: template common-{ty} not understood"
            )));
        }
        ex.write_file(
            format!("etc/pam.d/common-{ty}").as_bytes(),
            &mut out.as_bytes(),
            file,
        )?;
        let mut saved = String::new();
        for block in ["Primary", "Additional"] {
            let mut i = 0;
            for m in &enabled {
                let t = profiles[m].get(&format!("{uc}-Type")).map(String::as_str);
                if t != Some(block) {
                    continue;
                }
                if let Some(o) = lines_for(&profiles[m], &uc, i == 0) {
                    saved.push_str(&format!("Module: {m}\n{o}\n"));
                }
                i += 1;
            }
            if block == "Primary" && i == 0 {
                saved.push_str("Module: null\n[default=1]\t\t\tpam_permit.so\n");
            }
        }
        ex.write_file(
            format!("var/lib/pam/{ty}").as_bytes(),
            &mut saved.as_bytes(),
            file,
        )?;
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_and_lines() {
        let p = parse_profile(
            "Name: Unix authentication\nDefault: yes\nPriority: 256\nAuth-Type: Primary\nAuth:\n\t[success=end default=ignore]\tpam_unix.so nullok try_first_pass\nAuth-Initial:\n\t[success=end default=ignore]\tpam_unix.so nullok\n",
        );
        assert_eq!(
            p["Auth-Initial"],
            "[success=end default=ignore]\tpam_unix.so nullok"
        );
        assert_eq!(
            merge_line("[success=end default=ignore]\tpam_unix.so nullok", 1),
            "[success=1 default=ignore]\tpam_unix.so nullok\n"
        );
        assert_eq!(
            merge_line("required\tpam_unix.so", 0),
            "required\tpam_unix.so \n"
        );
    }
}
