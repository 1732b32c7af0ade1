//! Leftovers of killed runs. A run killed with SIGKILL (or a power cut) cannot clean up: it
//! leaves `.NAME.partial-PID` trees or files, `.NAME.work-PID` scratch folders and
//! `.NAME.old-PID` move-asides beside an output. The next run writing the same output removes
//! those whose process is gone — only names osbuilder makes, for that output, never anything
//! else in the folder.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The tags osbuilder puts in temporary names (see [`super::temp_name`]).
const TAGS: [&str; 3] = ["partial", "work", "old"];

/// The pid in `.NAME.TAG-PID` if `entry` is such a name for `name`.
pub fn leftover_pid(entry: &OsStr, name: &OsStr) -> Option<u32> {
    let e = entry.as_bytes();
    let rest = e
        .strip_prefix(b".")?
        .strip_prefix(name.as_bytes())?
        .strip_prefix(b".")?;
    TAGS.iter().find_map(|tag| {
        let digits = rest.strip_prefix(tag.as_bytes())?.strip_prefix(b"-")?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    })
}

/// Whether process `pid` still exists (in our pid namespace).
pub fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// Remove, in `dir`, the leftovers of dead processes for the output called `name`. Failures
/// are ignored: a leftover that cannot be removed only costs space, and the run goes on.
pub fn leftovers(dir: &Path, name: &OsStr) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = leftover_pid(&entry.file_name(), name) else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let p = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => super::dir::remove_tree(&p).is_ok(),
            _ => std::fs::remove_file(&p).is_ok(),
        };
        if removed {
            eprintln!(
                "osbuilder: removed {} left by an interrupted run (process {pid})",
                p.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_for_this_output_match() {
        let n = OsStr::new("rootfs");
        assert_eq!(leftover_pid(OsStr::new(".rootfs.partial-12"), n), Some(12));
        assert_eq!(leftover_pid(OsStr::new(".rootfs.work-7"), n), Some(7));
        assert_eq!(leftover_pid(OsStr::new(".rootfs.old-7"), n), Some(7));
        for other in [
            "rootfs",
            ".rootfs",
            ".rootfs.partial-",
            ".rootfs.partial-1x",
            ".rootfs.mtree",
            ".rootfs2.partial-1",
            ".rootfs.packages.json.partial-1",
            ".other.partial-1",
        ] {
            assert_eq!(leftover_pid(OsStr::new(other), n), None, "{other}");
        }
    }

    #[test]
    fn dead_processes_leftovers_go_live_ones_and_others_stay() {
        let d = tempfile::tempdir().unwrap();
        let dead = d.path().join(".img.partial-999999999");
        let dead_dir = d.path().join(".img.work-999999998");
        let live = d
            .path()
            .join(format!(".img.partial-{}", std::process::id()));
        let unrelated = d.path().join(".img.notes");
        std::fs::write(&dead, "x").unwrap();
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("f"), "x").unwrap();
        std::fs::write(&live, "x").unwrap();
        std::fs::write(&unrelated, "x").unwrap();
        leftovers(d.path(), OsStr::new("img"));
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(live.exists() && unrelated.exists());
    }
}
