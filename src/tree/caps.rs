//! File capabilities: the text form rpm's `FILECAPS` holds (libcap's `cap_to_text`, e.g.
//! `cap_net_raw=ep`) turned into the value of the `security.capability` extended
//! attribute the kernel reads (`struct vfs_cap_data`, revision 2, linux/capability.h):
//!
//! ```text
//! le32 magic_etc = VFS_CAP_REVISION_2 (0x02000000) | VFS_CAP_FLAGS_EFFECTIVE (1) if e
//! le32 permitted[0], le32 inheritable[0]     capabilities 0..31
//! le32 permitted[1], le32 inheritable[1]     capabilities 32..63
//! ```
//!
//! A file has one effective *flag*, not a set: the effective set must be empty or all of
//! permitted ∪ inheritable (libcap refuses anything else, and so does this).

use anyhow::{Result, bail};

/// The extended attribute's name.
pub const XATTR: &str = "security.capability";

const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_REVISION_MASK: u32 = 0xff00_0000;
const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;

/// linux/capability.h, by number (CAP_CHOWN = 0 … CAP_CHECKPOINT_RESTORE = 40).
pub const NAMES: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

const ALL: u64 = (1u64 << NAMES.len()) - 1;

/// One capability name (`cap_net_raw`, any case, or its number) → its bit.
fn bit(name: &str, text: &str) -> Result<u64> {
    let lower = name.to_ascii_lowercase();
    if let Some(i) = NAMES.iter().position(|n| *n == lower) {
        return Ok(1 << i);
    }
    if let Ok(n) = lower.parse::<u32>() {
        if (n as usize) < NAMES.len() {
            return Ok(1 << n);
        }
    }
    bail!(
        "file capabilities {text:?}: {name:?} is not a Linux capability (known: cap_chown … \
         cap_checkpoint_restore, linux/capability.h)"
    )
}

/// The `security.capability` value (20 bytes, revision 2) for a libcap text form:
/// whitespace-separated clauses `names op flags [op flags…]`, names a comma list (or
/// `all`, or empty with `=`), op one of `=`, `+`, `-`, flags from `e`, `i`, `p`.
pub fn from_text(text: &str) -> Result<Vec<u8>> {
    let (mut e, mut i, mut p) = (0u64, 0u64, 0u64);
    let clauses: Vec<&str> = text.split_ascii_whitespace().collect();
    if clauses.is_empty() {
        bail!("file capabilities {text:?}: empty");
    }
    for clause in clauses {
        let Some(op_at) = clause.find(['=', '+', '-']) else {
            bail!("file capabilities {text:?}: {clause:?} has no =, + or - operator");
        };
        let (names, mut ops) = clause.split_at(op_at);
        let set = if names.is_empty() || names.eq_ignore_ascii_case("all") {
            if names.is_empty() && !ops.starts_with('=') {
                bail!("file capabilities {text:?}: {clause:?} names no capability");
            }
            ALL
        } else {
            let mut s = 0;
            for n in names.split(',') {
                s |= bit(n, text)?;
            }
            s
        };
        while let Some(op) = ops.chars().next() {
            let rest = &ops[1..];
            let end = rest.find(['=', '+', '-']).unwrap_or(rest.len());
            let flags = &rest[..end];
            ops = &rest[end..];
            if op == '=' {
                e &= !set;
                i &= !set;
                p &= !set;
            } else if flags.is_empty() {
                bail!("file capabilities {text:?}: {clause:?} has {op} without flags");
            }
            for f in flags.chars() {
                let target = match f.to_ascii_lowercase() {
                    'e' => &mut e,
                    'i' => &mut i,
                    'p' => &mut p,
                    _ => bail!(
                        "file capabilities {text:?}: {f:?} in {clause:?} is not a flag (e, i, p)"
                    ),
                };
                if op == '-' {
                    *target &= !set;
                } else {
                    *target |= set;
                }
            }
        }
    }
    if e != 0 && e != (p | i) {
        bail!(
            "file capabilities {text:?}: a file has one effective flag, so the effective set \
             must be empty or all of the permitted and inheritable capabilities"
        );
    }
    let magic = VFS_CAP_REVISION_2 | if e != 0 { VFS_CAP_FLAGS_EFFECTIVE } else { 0 };
    let mut v = Vec::with_capacity(20);
    for w in [
        magic,
        p as u32,
        i as u32,
        (p >> 32) as u32,
        (i >> 32) as u32,
    ] {
        v.extend(w.to_le_bytes());
    }
    Ok(v)
}

/// Is `v` a `security.capability` value the kernel takes (revision 2, or 3 with a root
/// uid)? For values read from metadata.
pub fn check(v: &[u8]) -> Result<()> {
    let magic = v
        .get(..4)
        .map(|m| u32::from_le_bytes(m.try_into().expect("4 bytes")));
    match magic.map(|m| (m & VFS_CAP_REVISION_MASK, v.len())) {
        Some((VFS_CAP_REVISION_2, 20)) | Some((VFS_CAP_REVISION_3, 24)) => Ok(()),
        _ => bail!(
            "not a {XATTR} value (vfs_cap_data revision 2 of 20 bytes or 3 of 24): {}",
            hex::encode(v)
        ),
    }
}

/// The text form of a value (`cap_net_raw=ep`), as getcap prints it, for messages.
pub fn to_text(v: &[u8]) -> String {
    if check(v).is_err() {
        return format!("(raw {})", hex::encode(v));
    }
    let w = |k: usize| u32::from_le_bytes(v[k * 4..k * 4 + 4].try_into().expect("4 bytes"));
    let p = w(1) as u64 | (w(3) as u64) << 32;
    let i = w(2) as u64 | (w(4) as u64) << 32;
    let eff = w(0) & VFS_CAP_FLAGS_EFFECTIVE != 0;
    let names = |s: u64| -> String {
        (0..64)
            .filter(|b| s & (1 << b) != 0)
            .map(|b| NAMES.get(b).map(|n| n.to_string()).unwrap_or(b.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = Vec::new();
    let both = p & i;
    for (set, flags) in [(both, "ip"), (p & !i, "p"), (i & !p, "i")] {
        if set != 0 {
            out.push(format!(
                "{}={}{flags}",
                names(set),
                if eff { "e" } else { "" }
            ));
        }
    }
    if out.is_empty() {
        "=".into()
    } else {
        out.join(" ")
    }
}

/// The warning for a packer that cannot carry file capabilities (`what`: the format, and
/// why), naming the files that lose them.
pub fn lost(caps: &[(String, String)], what: &str) -> String {
    format!(
        "{} files lose their file capabilities in {what}: {}; build an ext4 or erofs image \
         to keep them",
        caps.len(),
        caps.iter()
            .map(|(p, c)| format!("{p} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes `setcap cap_net_raw=ep FILE` writes (`getfattr -n security.capability -e
    /// hex` shows 0x0100000200200000000000000000000000000000).
    #[test]
    fn net_raw_ep_is_what_setcap_writes() {
        assert_eq!(
            hex::encode(from_text("cap_net_raw=ep").unwrap()),
            "0100000200200000000000000000000000000000"
        );
        assert_eq!(
            to_text(&from_text("cap_net_raw=ep").unwrap()),
            "cap_net_raw=ep"
        );
    }

    /// The first two values are what libcap 2.66's `setcap` writes for these texts (read
    /// back with getxattr).
    #[test]
    fn lists_high_capabilities_inheritable_and_operators() {
        // cap_bpf is 39: the second permitted word.
        let v = from_text("cap_net_bind_service,cap_bpf+ep").unwrap();
        assert_eq!(hex::encode(&v), "0100000200040000000000008000000000000000");
        // no effective flag, inheritable only
        let v = from_text("cap_sys_admin=i").unwrap();
        assert_eq!(hex::encode(&v), "0000000200000000000020000000000000000000");
        // = resets; - removes
        let v = from_text("cap_chown,cap_kill=p cap_kill-p").unwrap();
        assert_eq!(hex::encode(&v), "0000000201000000000000000000000000000000");
        // all, by number, upper case
        assert_eq!(from_text("=ep").unwrap(), from_text("all=ep").unwrap());
        assert_eq!(
            from_text("13=ep").unwrap(),
            from_text("CAP_NET_RAW=ep").unwrap()
        );
        assert_eq!(
            to_text(&from_text("=ep").unwrap())[..15],
            *"cap_chown,cap_d"
        );
    }

    #[test]
    fn refuses_unknown_names_and_split_effective_sets() {
        for (t, want) in [
            ("cap_net_rawr=ep", "is not a Linux capability"),
            ("41=ep", "is not a Linux capability"),
            ("cap_net_raw", "no =, + or -"),
            ("cap_net_raw=epx", "is not a flag"),
            ("cap_net_raw+p cap_chown+ep", "one effective flag"),
            ("", "empty"),
            ("+ep", "names no capability"),
        ] {
            let e = format!("{:#}", from_text(t).unwrap_err());
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn check_accepts_revisions_2_and_3_only() {
        assert!(check(&from_text("cap_net_raw=ep").unwrap()).is_ok());
        let mut v3 = from_text("cap_net_raw=ep").unwrap();
        v3[3] = 3;
        v3.extend([0; 4]);
        assert!(check(&v3).is_ok());
        assert!(check(b"\x01\x00\x00\x01xxxxxxxx").is_err());
        assert!(check(b"").is_err());
    }
}
