//! Enabling services the way a Debian install does: `systemctl enable|preset` (the unit's
//! [Install] section: WantedBy, RequiredBy, Alias, Also, DefaultInstance; presets from
//! system-preset files, default enable), deb-systemd-helper (dh_installsystemd's
//! snippets, with its state under /var/lib/systemd/deb-systemd-helper-enabled, and its
//! own links when systemctl is not installed), and update-rc.d's SysV links (S01/K01
//! from the script's LSB header, as without insserv).

use anyhow::Result;

use super::shell::glob_match;
use crate::pkg::extract::{Attrs, Extractor};
use crate::tree::mtree::MType;

const UNIT_DIRS: [&str; 3] = [
    "etc/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
];
const USER_UNIT_DIRS: [&str; 3] = [
    "etc/systemd/user",
    "usr/local/lib/systemd/user",
    "usr/lib/systemd/user",
];
const DSH_STATE: &str = "var/lib/systemd/deb-systemd-helper-enabled";
const DSH_USER_STATE: &str = "var/lib/systemd/deb-systemd-user-helper-enabled";

/// The [Install] section of a unit file.
#[derive(Default, Debug)]
struct Install {
    wanted_by: Vec<String>,
    required_by: Vec<String>,
    alias: Vec<String>,
    also: Vec<String>,
    default_instance: Option<String>,
}

fn parse_install(text: &str) -> Install {
    let mut i = Install::default();
    let mut inside = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            inside = l == "[Install]";
            continue;
        }
        if !inside {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let vals = v
            .split_whitespace()
            .map(|s| s.trim_matches(['"', '\'']).to_string());
        match k.trim() {
            "WantedBy" => i.wanted_by.extend(vals),
            "RequiredBy" => i.required_by.extend(vals),
            "Alias" => i.alias.extend(vals),
            "Also" => i.also.extend(vals),
            "DefaultInstance" => i.default_instance = Some(v.trim().to_string()),
            _ => {}
        }
    }
    i
}

/// `getty@tty1.service` → `getty@.service`.
fn template_of(unit: &str) -> Option<String> {
    let (base, rest) = unit.split_once('@')?;
    let (inst, suffix) = rest.rsplit_once('.')?;
    (!inst.is_empty()).then(|| format!("{base}@.{suffix}"))
}

/// The unit file systemd would load: its path in the rootfs ("/usr/lib/…").
fn find_unit(ex: &mut Extractor, unit: &str, user: bool) -> Result<Option<(String, String)>> {
    let dirs = if user { USER_UNIT_DIRS } else { UNIT_DIRS };
    for name in [Some(unit.to_string()), template_of(unit)]
        .into_iter()
        .flatten()
    {
        for d in dirs {
            let p = format!("{d}/{name}");
            if let Some(text) = ex.read_file(p.as_bytes())? {
                return Ok(Some((
                    format!("/{p}"),
                    String::from_utf8_lossy(&text).into_owned(),
                )));
            }
        }
    }
    Ok(None)
}

fn link(ex: &mut Extractor, at: &str, target: &str, mtime: i64) -> Result<()> {
    let at = at.trim_start_matches('/');
    if ex.lstat(at.as_bytes())?.is_some() {
        return Ok(());
    }
    ex.symlink(at.as_bytes(), target.as_bytes(), Attrs::root(0o777, mtime))?;
    Ok(())
}

/// `systemctl enable UNIT…` offline: the symlinks of the [Install] section.
pub fn enable(ex: &mut Extractor, unit: &str, user: bool, mtime: i64) -> Result<bool> {
    enable_inner(ex, unit, user, mtime, &mut Vec::new())
}

fn enable_inner(
    ex: &mut Extractor,
    unit: &str,
    user: bool,
    mtime: i64,
    seen: &mut Vec<String>,
) -> Result<bool> {
    if seen.iter().any(|s| s == unit) {
        return Ok(true);
    }
    seen.push(unit.to_string());
    let Some((path, text)) = find_unit(ex, unit, user)? else {
        return Ok(false);
    };
    let inst = parse_install(&text);
    let base = if user {
        "etc/systemd/user"
    } else {
        "etc/systemd/system"
    };
    // A template enabled by its own name uses DefaultInstance.
    let name = match (&inst.default_instance, unit.contains("@.")) {
        (Some(i), true) => unit.replacen("@.", &format!("@{i}."), 1),
        _ => unit.to_string(),
    };
    for t in &inst.wanted_by {
        link(ex, &format!("{base}/{t}.wants/{name}"), &path, mtime)?;
    }
    for t in &inst.required_by {
        link(ex, &format!("{base}/{t}.requires/{name}"), &path, mtime)?;
    }
    for a in &inst.alias {
        link(ex, &format!("{base}/{a}"), &path, mtime)?;
    }
    for a in &inst.also {
        enable_inner(ex, a, user, mtime, seen)?;
    }
    Ok(true)
}

/// What the presets say for a unit: true = enable (also when no rule matches).
pub fn preset_enabled(ex: &mut Extractor, unit: &str, user: bool) -> Result<bool> {
    let kind = if user { "user-preset" } else { "system-preset" };
    let dirs = [
        format!("etc/systemd/{kind}"),
        format!("run/systemd/{kind}"),
        format!("usr/local/lib/systemd/{kind}"),
        format!("usr/lib/systemd/{kind}"),
    ];
    // Files by name across the directories; the first directory wins for a name.
    let mut files: std::collections::BTreeMap<Vec<u8>, String> = Default::default();
    for d in &dirs {
        for n in ex.read_dir(d.as_bytes())?.unwrap_or_default() {
            if n.ends_with(b".preset") {
                files
                    .entry(n.clone())
                    .or_insert_with(|| format!("{d}/{}", String::from_utf8_lossy(&n)));
            }
        }
    }
    for path in files.values() {
        let text = ex.read_file(path.as_bytes())?.unwrap_or_default();
        for line in String::from_utf8_lossy(&text).lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() < 2 || w[0].starts_with('#') || w[0].starts_with(';') {
                continue;
            }
            if glob_match(w[1], unit) || template_of(unit).is_some_and(|t| glob_match(w[1], &t)) {
                return Ok(w[0] == "enable");
            }
        }
    }
    Ok(true)
}

/// `systemctl [--root=…] [--user|--global] [--preset-mode=…] ACTION UNIT…`. Returns the
/// exit status; None for an action that is not emulated.
pub fn systemctl(ex: &mut Extractor, args: &[String], mtime: i64) -> Result<Option<i32>> {
    let mut user = false;
    let mut rest = Vec::new();
    for a in args {
        match a.as_str() {
            "--user" | "--global" => user = true,
            s if s.starts_with("--") || s == "-q" => {}
            s => rest.push(s.to_string()),
        }
    }
    let Some(action) = rest.first().cloned() else {
        return Ok(Some(0));
    };
    let units = &rest[1..];
    Ok(match action.as_str() {
        "enable" | "reenable" => {
            let mut ok = true;
            for u in units {
                ok &= enable(ex, &unit_name(u), user, mtime)?;
            }
            Some(if ok { 0 } else { 1 })
        }
        "preset" => {
            for u in units {
                let u = unit_name(u);
                if preset_enabled(ex, &u, user)? {
                    enable(ex, &u, user, mtime)?;
                }
            }
            Some(0)
        }
        // Nothing runs in a rootfs being built: these change nothing on disk.
        "daemon-reload"
        | "daemon-reexec"
        | "start"
        | "stop"
        | "restart"
        | "try-restart"
        | "reload"
        | "reload-or-restart"
        | "try-reload-or-restart"
        | "kill"
        | "show"
        | "is-active"
        | "is-failed"
        | "status" => Some(if action.starts_with("is-") { 1 } else { 0 }),
        "is-enabled" => Some(1),
        "is-system-running" => Some(1),
        _ => None,
    })
}

fn unit_name(u: &str) -> String {
    if u.contains('.') {
        u.to_string()
    } else {
        format!("{u}.service")
    }
}

/// deb-systemd-helper's link closure: (link, target) as it computes them.
fn dsh_links(
    ex: &mut Extractor,
    unit: &str,
    service_path: &str,
    user: bool,
    visited: &mut Vec<String>,
) -> Result<Vec<(String, String)>> {
    let inst_dir = if user { "user" } else { "system" };
    let Some(text) = ex.read_file(service_path.trim_start_matches('/').as_bytes())? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    let unit_name = service_path.rsplit('/').next().unwrap_or(unit).to_string();
    let mut wanted_target = unit_name.clone();
    let mut links = Vec::new();
    let mut wants_dirs = Vec::new();
    for line in text.lines() {
        let l = line.trim_start();
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let v = v.trim_end();
        match k.to_ascii_lowercase().as_str() {
            "wantedby" | "requiredby" => {
                for value in v.split_whitespace() {
                    let value = value.trim_matches(['"', '\'']);
                    let suffix = if k.eq_ignore_ascii_case("wantedby") {
                        ".wants"
                    } else {
                        ".requires"
                    };
                    wants_dirs.push(format!("/etc/systemd/{inst_dir}/{value}{suffix}/"));
                }
            }
            "also" => {
                for value in v.split_whitespace() {
                    let value = value.trim_matches(['"', '\'']).to_string();
                    if value != unit_name && !visited.contains(&value) {
                        visited.push(value.clone());
                        let p = dsh_find_unit(ex, &value, user)?;
                        links.extend(dsh_links(ex, &value, &p, user, visited)?);
                    }
                }
            }
            "alias" => {
                for value in v.split_whitespace() {
                    if value.trim_matches(['"', '\'']) != unit_name {
                        // deb-systemd-helper names the link after the whole value.
                        links.push((
                            format!("/etc/systemd/{inst_dir}/{v}"),
                            service_path.to_string(),
                        ));
                    }
                }
            }
            "defaultinstance" => {
                let inst = v.trim().trim_matches(['"', '\'']);
                if let Some((pre, post)) = unit_name.split_once("@.") {
                    wanted_target = format!("{pre}@{inst}.{post}");
                }
            }
            _ => {}
        }
    }
    for d in wants_dirs {
        links.push((format!("{d}{wanted_target}"), service_path.to_string()));
    }
    Ok(links)
}

/// deb-systemd-helper's find_unit: /etc, then /lib (merged-/usr makes it /usr/lib), then
/// /usr/lib; the bare name when none has it.
fn dsh_find_unit(ex: &mut Extractor, unit: &str, user: bool) -> Result<String> {
    let inst = if user { "user" } else { "system" };
    for d in [
        format!("etc/systemd/{inst}"),
        format!("lib/systemd/{inst}"),
        format!("usr/lib/systemd/{inst}"),
    ] {
        let p = format!("{d}/{unit}");
        if let Some(st) = ex.stat(p.as_bytes())? {
            if st.kind == MType::File {
                return Ok(format!("/{p}"));
            }
        }
    }
    Ok(unit.to_string())
}

fn read_state(ex: &mut Extractor, path: &str) -> Result<Option<Vec<String>>> {
    Ok(ex.read_file(path.as_bytes())?.map(|d| {
        String::from_utf8_lossy(&d)
            .lines()
            .map(String::from)
            .collect()
    }))
}

fn write_state(ex: &mut Extractor, path: &str, lines: &[String], mtime: i64) -> Result<()> {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    ex.write_file(
        path.as_bytes(),
        &mut text.as_bytes(),
        Attrs::root(0o644, mtime),
    )?;
    Ok(())
}

/// `deb-systemd-helper [--quiet] [--user] ACTION UNIT…`. Returns the exit status; None for
/// an action that is not emulated.
pub fn deb_systemd_helper(ex: &mut Extractor, args: &[String], mtime: i64) -> Result<Option<i32>> {
    let mut user = false;
    let mut rest = Vec::new();
    for a in args {
        match a.as_str() {
            "--user" => user = true,
            "--system" | "--quiet" => {}
            s => rest.push(s.to_string()),
        }
    }
    let Some(action) = rest.first().cloned() else {
        return Ok(Some(0));
    };
    let state_dir = if user { DSH_USER_STATE } else { DSH_STATE };
    let inst = if user { "user" } else { "system" };
    let has_systemctl = ["usr/bin/systemctl", "bin/systemctl"]
        .iter()
        .any(|p| ex.read_file(p.as_bytes()).ok().flatten().is_some());
    let mut status = 0;
    for unit in &rest[1..] {
        let base = unit.rsplit('/').next().unwrap_or(unit).to_string();
        let dsh = format!("{state_dir}/{base}.dsh-also");
        match action.as_str() {
            "unmask" | "mask" | "disable" | "purge" => {
                // Nothing to undo or mask on a fresh install.
            }
            "debian-installed" => {
                if read_state(ex, &dsh)?.is_none() {
                    status = 1;
                }
            }
            "was-enabled" => {
                for l in read_state(ex, &dsh)?.unwrap_or_default() {
                    if ex
                        .read_link(l.trim_start_matches('/').as_bytes())?
                        .is_none()
                    {
                        status = 1;
                    }
                }
            }
            "is-enabled" => {
                let service_path = dsh_find_unit(ex, &base, user)?;
                let links = dsh_links(ex, &base, &service_path, user, &mut Vec::new())?;
                for (l, _) in &links {
                    if ex
                        .read_link(l.trim_start_matches('/').as_bytes())?
                        .is_none()
                    {
                        status = 1;
                    }
                }
            }
            "update-state" => {
                let service_path = dsh_find_unit(ex, &base, user)?;
                let links = dsh_links(ex, &base, &service_path, user, &mut Vec::new())?;
                let lines: Vec<String> = links.into_iter().map(|(l, _)| l).collect();
                ex.create_dir(state_dir.as_bytes(), Attrs::root(0o755, mtime))?;
                write_state(ex, &dsh, &lines, mtime)?;
            }
            "enable" | "reenable" => {
                let service_path = dsh_find_unit(ex, &base, user)?;
                let installed = read_state(ex, &dsh)?.is_some();
                let mut create_links = true;
                if has_systemctl {
                    if installed {
                        let links = dsh_links(ex, &base, &service_path, user, &mut Vec::new())?;
                        let mut none = true;
                        for (l, _) in &links {
                            if ex
                                .read_link(l.trim_start_matches('/').as_bytes())?
                                .is_some()
                            {
                                none = false;
                            }
                        }
                        create_links = !none;
                    } else {
                        if preset_enabled(ex, &base, user)? {
                            enable(ex, &base, user, mtime)?;
                        }
                        create_links = false;
                    }
                }
                let links = dsh_links(ex, &base, &service_path, user, &mut Vec::new())?;
                let mut lines = read_state(ex, &dsh)?.unwrap_or_default();
                for (l, target) in &links {
                    if !lines.contains(l) {
                        lines.push(l.clone());
                    }
                    ex.create_dir(state_dir.as_bytes(), Attrs::root(0o755, mtime))?;
                    write_state(ex, &dsh, &lines, mtime)?;
                    let marker = l.replacen(
                        &format!("/etc/systemd/{inst}/"),
                        &format!("{state_dir}/"),
                        1,
                    );
                    if ex.lstat(marker.as_bytes())?.is_some() {
                        continue;
                    }
                    if create_links && ex.lstat(l.trim_start_matches('/').as_bytes())?.is_none() {
                        ex.symlink(
                            l.trim_start_matches('/').as_bytes(),
                            target.as_bytes(),
                            Attrs::root(0o777, mtime),
                        )?;
                    }
                    ex.write_file(marker.as_bytes(), &mut &b""[..], Attrs::root(0o644, mtime))?;
                }
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(status))
}

/// `update-rc.d NAME defaults|defaults-disabled|remove|enable|disable`. Returns the exit
/// status; None for what is not emulated.
pub fn update_rc_d(ex: &mut Extractor, args: &[String], mtime: i64) -> Result<Option<i32>> {
    let rest: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let (Some(name), Some(action)) = (rest.first(), rest.get(1)) else {
        return Ok(Some(1));
    };
    match action.as_str() {
        "defaults" | "defaults-disabled" => {}
        "remove" => return Ok(Some(0)),
        _ => return Ok(None),
    }
    let script = format!("etc/init.d/{name}");
    let Some(text) = ex.read_file(script.as_bytes())? else {
        return Ok(Some(1));
    };
    // SysV links, unless some exist already.
    let mut exists = false;
    for lvl in ["0", "1", "2", "3", "4", "5", "6", "S"] {
        for n in ex
            .read_dir(format!("etc/rc{lvl}.d").as_bytes())?
            .unwrap_or_default()
        {
            let n = String::from_utf8_lossy(&n);
            if n.get(3..) == Some(name.as_str()) && matches!(n.get(..1), Some("S" | "K")) {
                exists = true;
            }
        }
    }
    if !exists {
        let (start, stop) = lsb_levels(&String::from_utf8_lossy(&text));
        let s = if action.as_str() == "defaults-disabled" {
            "K"
        } else {
            "S"
        };
        for (levels, kind) in [(start, s), (stop, "K")] {
            for lvl in levels {
                let dir = format!("etc/rc{lvl}.d");
                ex.create_dir(dir.as_bytes(), Attrs::root(0o755, mtime))?;
                ex.symlink(
                    format!("{dir}/{kind}01{name}").as_bytes(),
                    format!("../init.d/{name}").as_bytes(),
                    Attrs::root(0o777, mtime),
                )?;
            }
        }
    }
    // The native unit of the same name.
    let has_systemctl = ex.read_file(b"usr/bin/systemctl")?.is_some();
    let unit = format!("{name}.service");
    if has_systemctl {
        if action.as_str() == "defaults" {
            enable(ex, &unit, false, mtime)?;
        }
    } else {
        for d in [
            "etc/systemd/system",
            "lib/systemd/system",
            "usr/lib/systemd/system",
        ] {
            let p = format!("{d}/{unit}");
            if let Some(text) = ex.read_file(p.as_bytes())? {
                if action.as_str() == "defaults" {
                    for t in parse_install(&String::from_utf8_lossy(&text)).wanted_by {
                        link(
                            ex,
                            &format!("etc/systemd/system/{t}.wants/{unit}"),
                            &format!("/{p}"),
                            mtime,
                        )?;
                    }
                }
                break;
            }
        }
    }
    Ok(Some(0))
}

/// Default-Start and Default-Stop of an init script's LSB header.
fn lsb_levels(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut start, mut stop) = (Vec::new(), Vec::new());
    let mut inside = false;
    for l in text.lines() {
        if l.trim_end() == "### BEGIN INIT INFO" {
            inside = true;
        } else if l.trim_end() == "### END INIT INFO" {
            break;
        } else if inside {
            if let Some(v) = l.strip_prefix("# Default-Start:") {
                start = v.split_whitespace().map(String::from).collect();
            }
            if let Some(v) = l.strip_prefix("# Default-Stop:") {
                stop = v.split_whitespace().map(String::from).collect();
            }
        }
    }
    (start, stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_section_and_templates() {
        let i = parse_install(
            "[Unit]\nX=1\n[Install]\nWantedBy=multi-user.target\nAlias=chronyd.service\nDefaultInstance=tty1\n",
        );
        assert_eq!(i.wanted_by, ["multi-user.target"]);
        assert_eq!(i.alias, ["chronyd.service"]);
        assert_eq!(
            template_of("getty@tty1.service").as_deref(),
            Some("getty@.service")
        );
        assert_eq!(template_of("getty@.service"), None);
        let (s, k) = lsb_levels(
            "### BEGIN INIT INFO\n# Default-Start:     2 3 4 5\n# Default-Stop:      0 1 6\n### END INIT INFO\n",
        );
        assert_eq!((s.len(), k.len()), (4, 3));
    }
}
