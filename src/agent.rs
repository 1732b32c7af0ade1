//! The reference agent (agent-init/), built by build.rs and embedded in osbuilder, plus the
//! systemd units osbuilder installs for an agent in systemd mode.
//!
//! `osbuilder rootfs` installs [`reference_agent`] when the user brings no agent, and
//! `osbuilder boot` waits for [`READY_MARKER`] on the console by default.

// READY_MARKER, POWEROFF_PARAM, POWEROFF_MARKER: one definition, shared with the agent.
include!("../agent-init/src/protocol.rs");

use crate::arch::Arch;

static REFERENCE_AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reference-agent"));

/// The reference agent: a static ELF executable for [`reference_agent_arch`], usable as
/// `/sbin/init` (agent-as-init) or as `/usr/bin/kata-agent` under systemd.
pub fn reference_agent() -> &'static [u8] {
    REFERENCE_AGENT
}

/// The architecture the embedded agent was built for: the one osbuilder itself runs on
/// (build.rs compiles agent-init for the same target as osbuilder).
pub fn reference_agent_arch() -> Option<Arch> {
    Arch::host()
}

/// `kata-agent.service`: Kata's semantics (Type=simple, console output, powers off when it
/// stops or fails, OOM-protected). Install into `/usr/lib/systemd/system/`.
pub const KATA_AGENT_SERVICE: &str = include_str!("../agent-init/kata-agent.service");

/// `kata-containers.target`: basic.target + tmp.mount + the agent, no rescue shell.
/// Install beside the service and link it into `basic.target.wants/`.
pub const KATA_CONTAINERS_TARGET: &str = include_str!("../agent-init/kata-containers.target");

/// Where an agent binary goes in the rootfs (Kata's path, for both init modes; agent-init
/// mode moves or links it to `/sbin/init`).
pub const AGENT_PATH: &str = "usr/bin/kata-agent";

/// The systemd units to install, as (path in the rootfs, contents).
pub fn systemd_units() -> [(&'static str, &'static str); 2] {
    [
        (
            "usr/lib/systemd/system/kata-agent.service",
            KATA_AGENT_SERVICE,
        ),
        (
            "usr/lib/systemd/system/kata-containers.target",
            KATA_CONTAINERS_TARGET,
        ),
    ]
}

/// Fields of a ready line (`READY_MARKER key=value …`), if `line` contains one.
pub fn parse_ready_line(line: &str) -> Option<Vec<(&str, &str)>> {
    let at = line.find(READY_MARKER)?;
    let rest = &line[at + READY_MARKER.len()..];
    Some(
        rest.split_whitespace()
            .filter_map(|f| f.split_once('='))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_interp(bytes: &[u8]) -> bool {
        // PT_INTERP (3) among the program headers; 64-bit little-endian only (our hosts).
        let rd16 = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
        (0..rd16(0x38)).any(|i| {
            let o = phoff + i * rd16(0x36);
            u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) == 3
        })
    }

    #[test]
    fn embedded_agent_is_a_static_executable_for_this_host() {
        let a = reference_agent();
        assert_eq!(&a[..4], b"\x7fELF");
        let machine = u16::from_le_bytes([a[18], a[19]]);
        assert_eq!(
            Some(machine),
            reference_agent_arch().map(|a| a.elf_machine())
        );
        assert!(
            !elf_interp(a),
            "the reference agent must be statically linked"
        );
        // The marker it prints is the one osbuilder waits for.
        assert!(
            a.windows(READY_MARKER.len())
                .any(|w| w == READY_MARKER.as_bytes())
        );
        // (That it honours POWEROFF_PARAM is shown by tests/boot.rs.)
    }

    #[test]
    fn units_have_katas_semantics() {
        let s = KATA_AGENT_SERVICE;
        for line in [
            "Wants=kata-containers.target",
            "Type=simple",
            "StandardOutput=tty",
            "ExecStart=/usr/bin/kata-agent",
            "LimitNOFILE=1073741824",
            "FailureAction=poweroff",
            "OOMScoreAdjust=-997",
        ] {
            assert!(s.lines().any(|l| l == line), "service lacks {line}");
        }
        let stop = s.lines().find(|l| l.starts_with("ExecStop=")).unwrap();
        assert!(stop.contains("sync") && stop.contains("systemctl --force poweroff"));
        let t = KATA_CONTAINERS_TARGET;
        for line in [
            "Requires=basic.target",
            "Requires=tmp.mount",
            "Requires=kata-agent.service",
            "Wants=chronyd.service",
            "Conflicts=rescue.service rescue.target",
            "AllowIsolate=yes",
        ] {
            assert!(t.lines().any(|l| l == line), "target lacks {line}");
        }
        assert_eq!(
            systemd_units()[0].0,
            "usr/lib/systemd/system/kata-agent.service"
        );
    }

    #[test]
    fn ready_line_fields() {
        let f = parse_ready_line(
            "[    1.9] x osbuilder-agent: ready kernel=6.1.0-28-cloud-amd64 arch=x86_64 pid=1",
        )
        .unwrap();
        assert_eq!(
            f,
            vec![
                ("kernel", "6.1.0-28-cloud-amd64"),
                ("arch", "x86_64"),
                ("pid", "1")
            ]
        );
        assert!(parse_ready_line("osbuilder-agent: powering off").is_none());
    }
}
