//! Target architectures and the name each ecosystem gives them.
//!
//! One enum, four arches: every other module asks this one for "the Debian name",
//! "the qemu binary", "the DPS root GUID"… so no stringly-typed arch names leak around.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    Aarch64,
    Ppc64le,
    S390x,
}

/// How to start a guest of this arch under QEMU (TCG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QemuTarget {
    /// The qemu-system binary.
    pub binary: &'static str,
    /// `-M` value.
    pub machine: &'static str,
    /// `-cpu` value that TCG emulates (None: the machine's default).
    pub cpu: Option<&'static str>,
    /// The serial console device the kernel should log to (`console=`).
    pub console: &'static str,
    /// Debian package that provides `binary`.
    pub debian_package: &'static str,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::X86_64, Arch::Aarch64, Arch::Ppc64le, Arch::S390x];

    /// The canonical name (the kernel's `uname -m`), used in our own CLI and data files.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
        }
    }

    /// Debian/Ubuntu architecture (dpkg --print-architecture).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
            Arch::Ppc64le => "ppc64el",
            Arch::S390x => "s390x",
        }
    }

    /// The GNU multiarch triplet (Debian's library directory: /usr/lib/TRIPLET).
    pub fn multiarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
            Arch::Ppc64le => "powerpc64le-linux-gnu",
            Arch::S390x => "s390x-linux-gnu",
        }
    }

    /// Alpine's architecture (the directory in the mirror, `apk --print-arch`).
    pub fn alpine(self) -> &'static str {
        self.name()
    }

    /// RPM's architecture (Clear Linux, Fedora, …).
    pub fn rpm(self) -> &'static str {
        self.name()
    }

    /// GOARCH, as used by OCI image indexes (`platform.architecture`).
    pub fn oci(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
        }
    }

    pub fn qemu(self) -> QemuTarget {
        match self {
            Arch::X86_64 => QemuTarget {
                binary: "qemu-system-x86_64",
                machine: "q35",
                // CX16 hidden: under TCG (bookworm's QEMU 7.2), Linux 6.12's SLUB fast path
                // (cmpxchg16b on %gs) crashed about one boot in twelve with a corrupt
                // EFLAGS; without CX16 the kernel takes its locked path, 36 of 36 clean.
                cpu: Some("max,-cx16"),
                console: "ttyS0",
                debian_package: "qemu-system-x86",
            },
            Arch::Aarch64 => QemuTarget {
                binary: "qemu-system-aarch64",
                machine: "virt",
                cpu: Some("cortex-a57"),
                console: "ttyAMA0",
                debian_package: "qemu-system-arm",
            },
            Arch::Ppc64le => QemuTarget {
                binary: "qemu-system-ppc64",
                machine: "pseries",
                cpu: None,
                console: "hvc0",
                debian_package: "qemu-system-ppc",
            },
            Arch::S390x => QemuTarget {
                binary: "qemu-system-s390x",
                machine: "s390-ccw-virtio",
                cpu: None,
                console: "ttysclp0",
                debian_package: "qemu-system-s390x",
            },
        }
    }

    /// Root partition type GUID from the Discoverable Partitions Specification.
    pub fn dps_root_guid(self) -> &'static str {
        match self {
            Arch::X86_64 => "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
            Arch::Aarch64 => "b921b045-1df0-41c3-af44-4c6f280d3fae",
            Arch::Ppc64le => "c31c45e6-3f39-412e-80fb-4809c4980599",
            Arch::S390x => "5eead9a9-fe09-4a1e-a1d7-520d00531306",
        }
    }

    /// Root verity partition type GUID from the Discoverable Partitions Specification.
    pub fn dps_root_verity_guid(self) -> &'static str {
        match self {
            Arch::X86_64 => "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
            Arch::Aarch64 => "df3300ce-d69f-4c92-978c-9bfb0f38d820",
            Arch::Ppc64le => "906bd944-4589-4aae-a4e4-dd983917446a",
            Arch::S390x => "b325bfbe-c7be-4ab8-8357-139e652d2f6b",
        }
    }

    /// `e_machine` in the ELF header of binaries built for this arch.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,   // EM_X86_64
            Arch::Aarch64 => 183, // EM_AARCH64
            Arch::Ppc64le => 21,  // EM_PPC64
            Arch::S390x => 22,    // EM_S390
        }
    }

    /// Whether the arch is big-endian (affects ELF parsing and on-disk formats).
    pub fn big_endian(self) -> bool {
        matches!(self, Arch::S390x)
    }

    /// The arch this binary runs on, if it is one we support.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            "powerpc64" if cfg!(target_endian = "little") => Some(Arch::Ppc64le),
            "s390x" => Some(Arch::S390x),
            _ => None,
        }
    }

    /// The arch asked for, else the host's; a host osbuilder has no target for is a refusal
    /// that asks for `--arch`.
    pub fn or_host(asked: Option<Arch>) -> anyhow::Result<Arch> {
        match asked.or_else(Arch::host) {
            Some(a) => Ok(a),
            None => Err(crate::error::refused(format!(
                "this host's architecture ({}) is not a target osbuilder knows; pass --arch",
                std::env::consts::ARCH
            ))),
        }
    }

    /// Map an ELF `e_machine` (and endianness) back to an arch.
    pub fn from_elf(machine: u16, big_endian: bool) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.elf_machine() == machine && a.big_endian() == big_endian)
    }

    /// Every spelling we accept on the command line and in data files.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["x86_64", "amd64", "x86-64", "x64"],
            Arch::Aarch64 => &["aarch64", "arm64"],
            Arch::Ppc64le => &["ppc64le", "ppc64el"],
            Arch::S390x => &["s390x"],
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownArch(pub String);

impl fmt::Display for UnknownArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown architecture '{}'; supported: x86_64 (amd64), aarch64 (arm64), ppc64le (ppc64el), s390x",
            self.0
        )
    }
}

impl std::error::Error for UnknownArch {}

impl FromStr for Arch {
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Arch::ALL
            .into_iter()
            .find(|a| a.aliases().contains(&wanted.as_str()))
            .ok_or_else(|| UnknownArch(s.to_string()))
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_to_one_arch() {
        assert_eq!("amd64".parse::<Arch>().unwrap(), Arch::X86_64);
        assert_eq!("x86_64".parse::<Arch>().unwrap(), Arch::X86_64);
        assert_eq!("ARM64".parse::<Arch>().unwrap(), Arch::Aarch64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Aarch64);
        assert_eq!("ppc64el".parse::<Arch>().unwrap(), Arch::Ppc64le);
        assert_eq!("ppc64le".parse::<Arch>().unwrap(), Arch::Ppc64le);
        assert_eq!("s390x".parse::<Arch>().unwrap(), Arch::S390x);
    }

    #[test]
    fn unknown_arch_is_rejected_with_the_supported_list() {
        let err = "riscv64".parse::<Arch>().unwrap_err().to_string();
        assert!(err.contains("riscv64") && err.contains("s390x") && err.contains("arm64"));
        assert!("".parse::<Arch>().is_err());
        assert!(
            "ppc64".parse::<Arch>().is_err(),
            "big-endian ppc64 is not ppc64le"
        );
    }

    #[test]
    fn ecosystem_names() {
        let table: Vec<_> = Arch::ALL
            .iter()
            .map(|a| (a.name(), a.debian(), a.alpine(), a.rpm(), a.oci()))
            .collect();
        assert_eq!(
            table,
            vec![
                ("x86_64", "amd64", "x86_64", "x86_64", "amd64"),
                ("aarch64", "arm64", "aarch64", "aarch64", "arm64"),
                ("ppc64le", "ppc64el", "ppc64le", "ppc64le", "ppc64le"),
                ("s390x", "s390x", "s390x", "s390x", "s390x"),
            ]
        );
    }

    #[test]
    fn every_name_round_trips() {
        for a in Arch::ALL {
            for alias in a.aliases() {
                assert_eq!(alias.parse::<Arch>().unwrap(), a);
            }
            assert_eq!(a.debian().parse::<Arch>().unwrap(), a);
            assert_eq!(a.oci().parse::<Arch>().unwrap(), a);
            assert_eq!(Arch::from_elf(a.elf_machine(), a.big_endian()), Some(a));
        }
    }

    #[test]
    fn qemu_targets() {
        assert_eq!(Arch::X86_64.qemu().console, "ttyS0");
        assert_eq!(Arch::X86_64.qemu().cpu, Some("max,-cx16"));
        assert_eq!(Arch::Aarch64.qemu().binary, "qemu-system-aarch64");
        assert_eq!(Arch::Aarch64.qemu().console, "ttyAMA0");
        assert_eq!(Arch::Ppc64le.qemu().binary, "qemu-system-ppc64");
        assert_eq!(Arch::S390x.qemu().machine, "s390-ccw-virtio");
    }

    #[test]
    fn dps_guids_are_distinct_and_well_formed() {
        let mut all: Vec<&str> = Arch::ALL.iter().map(|a| a.dps_root_guid()).collect();
        all.extend(Arch::ALL.iter().map(|a| a.dps_root_verity_guid()));
        for g in &all {
            assert_eq!(g.len(), 36);
            assert!(g.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        }
        let mut dedup = all.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), all.len());
        assert_eq!(
            Arch::X86_64.dps_root_guid(),
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
        );
    }

    #[test]
    fn host_arch_is_known_here() {
        // These tests run on x86_64 and aarch64 hosts; both are supported.
        assert!(Arch::host().is_some());
    }
}
