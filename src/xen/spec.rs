//! The bundle spec: a TOML file of `[[guest]]` tables, meta-virtualization's per-guest
//! variables (`XEN_GUEST_MEMORY`, `_VCPUS`, `_VIF`, `_EXTRA`, `_DISK_DEVICE`, `_KERNEL`,
//! `_SOURCE_TYPE`, `_SOURCE_FILE`, `_IMAGE_SIZE`, autostart) as data:
//!
//! ```toml
//! arch = "aarch64"                 # the guests' (and dom0's) arch; default: the host's
//! [[guest]]
//! name = "guest1"
//! memory = 256                     # MiB (default 512)
//! vcpus = 1
//! type = "pvh"                     # pvh (default), pv (x86_64), hvm (x86_64, kernel = "none")
//! kernel = "kernel/vmlinuz"        # a file; "host": dom0's own kernel; "none": HVM firmware boot
//! ramdisk = "guest-initrd.img"     # optional
//! extra = "quiet"                  # added to the guest's command line
//! vif = ["bridge=xenbr0"]          # default; [] for none
//! autostart = true                 # link into /etc/xen/auto (xendomains starts it)
//! [guest.disk]
//! type = "rootfs_dir"              # rootfs_dir | qcow2 | ext4 | raw
//! source = "guest-rootfs"
//! size_mb = 256                    # rootfs_dir: image size (default: what the tree needs)
//! ```
//!
//! Relative paths are relative to the spec file. Everything is checked before any work
//! ([`BundleSpec::validate`]): a refusal names the guest and what to change.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::arch::Arch;
use crate::error::refused;

/// The whole spec file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    #[serde(default)]
    pub arch: Option<Arch>,
    #[serde(default, rename = "guest")]
    pub guests: Vec<GuestSpec>,
}

/// The Xen guest type (`type =` in xl.cfg).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    /// No emulated devices, direct kernel boot; the only type on Arm, recommended on x86.
    #[default]
    Pvh,
    /// Paravirtualised (x86_64 only).
    Pv,
    /// Fully virtualised with firmware (x86_64 only; for `kernel = "none"`).
    Hvm,
}

impl GuestType {
    pub fn name(self) -> &'static str {
        match self {
            GuestType::Pvh => "pvh",
            GuestType::Pv => "pv",
            GuestType::Hvm => "hvm",
        }
    }
}

/// What happens on a guest event (`on_poweroff` …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Destroy,
    Restart,
    Preserve,
    RenameRestart,
    CoredumpDestroy,
    CoredumpRestart,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Destroy => "destroy",
            Action::Restart => "restart",
            Action::Preserve => "preserve",
            Action::RenameRestart => "rename-restart",
            Action::CoredumpDestroy => "coredump-destroy",
            Action::CoredumpRestart => "coredump-restart",
        }
    }
}

/// How a guest's disk is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskType {
    /// A rootfs folder (with its `.mtree`), packed as a bare ext4 filesystem.
    RootfsDir,
    /// A qcow2 image, converted to raw (or kept with `keep_qcow2`).
    Qcow2,
    /// A bare ext4 filesystem image, copied.
    Ext4,
    /// A raw disk image (bare filesystem or partitioned), copied.
    Raw,
}

impl DiskType {
    pub const ALL: [DiskType; 4] = [
        DiskType::RootfsDir,
        DiskType::Qcow2,
        DiskType::Ext4,
        DiskType::Raw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DiskType::RootfsDir => "rootfs_dir",
            DiskType::Qcow2 => "qcow2",
            DiskType::Ext4 => "ext4",
            DiskType::Raw => "raw",
        }
    }

    fn parse(s: &str) -> Option<DiskType> {
        DiskType::ALL.into_iter().find(|t| t.name() == s)
    }
}

fn default_access() -> String {
    "rw".into()
}

fn default_device() -> String {
    "xvda".into()
}

/// `[guest.disk]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// One of [`DiskType::ALL`] by name.
    #[serde(rename = "type")]
    pub kind: String,
    pub source: PathBuf,
    /// rootfs_dir: the image size in MiB (an error if the tree does not fit).
    #[serde(default)]
    pub size_mb: Option<u64>,
    /// qcow2: keep the image as qcow2 (dom0 then needs the qdisk backend, QEMU) instead of
    /// converting it to raw.
    #[serde(default)]
    pub keep_qcow2: bool,
    /// The guest's name for the disk (`vdev`).
    #[serde(default = "default_device")]
    pub device: String,
    /// rw (default) or ro.
    #[serde(default = "default_access")]
    pub access: String,
}

impl DiskSpec {
    /// The disk type, checked.
    pub fn disk_type(&self, guest: &str) -> Result<DiskType> {
        DiskType::parse(&self.kind).ok_or_else(|| {
            refused(format!(
                "guest {guest}: unknown disk type '{}'; known: {}",
                self.kind,
                DiskType::ALL.map(DiskType::name).join(", ")
            ))
        })
    }
}

fn default_memory() -> u32 {
    512
}
fn default_vcpus() -> u32 {
    1
}
fn default_kernel() -> String {
    "host".into()
}
fn default_vif() -> Vec<String> {
    vec!["bridge=xenbr0".into()]
}
fn default_poweroff() -> Action {
    Action::Destroy
}
fn default_reboot() -> Action {
    Action::Restart
}
fn default_crash() -> Action {
    Action::Destroy
}

/// One `[[guest]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    pub name: String,
    #[serde(default = "default_memory")]
    pub memory: u32,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    #[serde(default, rename = "type")]
    pub guest_type: GuestType,
    /// A kernel file, "host" (dom0's kernel, taken at install time) or "none" (HVM).
    #[serde(default = "default_kernel")]
    pub kernel: String,
    #[serde(default)]
    pub ramdisk: Option<PathBuf>,
    #[serde(default)]
    pub disk: Option<DiskSpec>,
    #[serde(default)]
    pub extra: String,
    #[serde(default = "default_vif")]
    pub vif: Vec<String>,
    #[serde(default)]
    pub autostart: bool,
    #[serde(default = "default_poweroff")]
    pub on_poweroff: Action,
    #[serde(default = "default_reboot")]
    pub on_reboot: Action,
    #[serde(default = "default_crash")]
    pub on_crash: Action,
}

/// Where a guest's kernel comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSource {
    /// A kernel file, copied into the bundle.
    File(PathBuf),
    /// dom0's own kernel, copied from the host rootfs by `osbuilder xen install`.
    Host,
    /// No kernel: an HVM guest boots its disk through firmware.
    None,
}

impl GuestSpec {
    /// The kernel mode, with a file path made relative to `base`.
    pub fn kernel_source(&self, base: &Path) -> KernelSource {
        match self.kernel.as_str() {
            "host" => KernelSource::Host,
            "none" => KernelSource::None,
            p => KernelSource::File(base.join(p)),
        }
    }
}

impl BundleSpec {
    /// Read a spec file.
    pub fn load(path: &Path) -> Result<BundleSpec> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            refused(format!(
                "cannot read the bundle spec {}: {e}",
                crate::show::path(path)
            ))
        })?;
        toml::from_str(&text).map_err(|e| {
            refused(format!(
                "{} is not a valid bundle spec: {e}",
                crate::show::path(path)
            ))
        })
    }

    /// Check every guest before any work: names, values that go into xl configs, guest types
    /// for the arch, and that every file given exists. Paths are relative to `base`.
    pub fn validate(&self, arch: Arch, base: &Path) -> Result<()> {
        if self.guests.is_empty() {
            return Err(refused("the bundle spec has no [[guest]]: add one"));
        }
        let mut names = Vec::new();
        for g in &self.guests {
            check_name(&g.name)?;
            if names.contains(&&g.name) {
                return Err(refused(format!(
                    "two guests are called {}: names must be unique",
                    g.name
                )));
            }
            names.push(&g.name);
            validate_guest(g, arch, base)?;
        }
        Ok(())
    }
}

/// Guest names become file names and xl's `name=`: letters, digits, `-`, `_`, `.`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(refused(format!(
            "guest name '{name}' is not usable: use up to 64 letters, digits, '-', '_' or '.', \
             not starting with '-' or '.'"
        )))
    }
}

/// A value written inside an xl string: no quotes, backslashes or line breaks.
fn check_value(guest: &str, what: &str, v: &str) -> Result<()> {
    if v.contains(['"', '\'', '\\', '\n', '\r']) {
        return Err(refused(format!(
            "guest {guest}: {what} '{v}' contains a quote, backslash or line break, which an xl \
             configuration cannot hold"
        )));
    }
    Ok(())
}

fn validate_guest(g: &GuestSpec, arch: Arch, base: &Path) -> Result<()> {
    let n = &g.name;
    if g.memory < 16 {
        return Err(refused(format!(
            "guest {n}: memory = {} MiB is too little (at least 16)",
            g.memory
        )));
    }
    if g.vcpus == 0 {
        return Err(refused(format!("guest {n}: vcpus must be at least 1")));
    }
    check_value(n, "extra", &g.extra)?;
    for v in &g.vif {
        check_value(n, "vif", v)?;
    }
    let kernel = g.kernel_source(base);
    match (arch, g.guest_type, &kernel) {
        (Arch::X86_64, GuestType::Hvm, KernelSource::None) => {}
        (Arch::X86_64, GuestType::Hvm, _) => {
            return Err(refused(format!(
                "guest {n}: type = \"hvm\" boots its disk through firmware: set kernel = \"none\""
            )));
        }
        (_, _, KernelSource::None) if arch != Arch::X86_64 => {
            return Err(refused(format!(
                "guest {n}: kernel = \"none\" (an HVM guest) exists on x86_64 only; {arch} guests \
                 boot a kernel directly (give a kernel file, or \"host\")"
            )));
        }
        (_, _, KernelSource::None) => {
            return Err(refused(format!(
                "guest {n}: kernel = \"none\" needs type = \"hvm\" (firmware boot)"
            )));
        }
        (a, GuestType::Pv | GuestType::Hvm, _) if a != Arch::X86_64 => {
            return Err(refused(format!(
                "guest {n}: type = \"{}\" exists on x86_64 only; {arch} guests are \"pvh\"",
                g.guest_type.name()
            )));
        }
        _ => {}
    }
    if let KernelSource::File(p) = &kernel {
        check_file(n, "kernel", p)?;
        if let Some(k) = crate::boot::qemu::kernel_arch(p)? {
            if k != arch {
                return Err(refused(format!(
                    "guest {n}: {} is a kernel for {k}, but the bundle is for {arch}",
                    crate::show::path(p)
                )));
            }
        }
    }
    if let Some(r) = &g.ramdisk {
        if kernel == KernelSource::None {
            return Err(refused(format!(
                "guest {n}: a ramdisk needs a kernel (kernel = \"none\")"
            )));
        }
        check_file(n, "ramdisk", &base.join(r))?;
    }
    match &g.disk {
        None => {
            if g.ramdisk.is_none() {
                return Err(refused(format!(
                    "guest {n} has neither a disk nor a ramdisk to boot from: add [guest.disk] or \
                     ramdisk ="
                )));
            }
        }
        Some(d) => {
            let t = d.disk_type(n)?;
            let src = base.join(&d.source);
            let exists = match t {
                DiskType::RootfsDir => src.is_dir(),
                _ => src.is_file(),
            };
            if !exists {
                return Err(refused(format!(
                    "guest {n}: disk source {} does not exist or is not a {}",
                    crate::show::path(&src),
                    if t == DiskType::RootfsDir {
                        "folder"
                    } else {
                        "file"
                    }
                )));
            }
            if d.size_mb.is_some() && t != DiskType::RootfsDir {
                return Err(refused(format!(
                    "guest {n}: size_mb applies to rootfs_dir disks (the other types are copied as they are)"
                )));
            }
            if d.size_mb == Some(0) {
                return Err(refused(format!("guest {n}: size_mb must be at least 1")));
            }
            if d.keep_qcow2 && t != DiskType::Qcow2 {
                return Err(refused(format!(
                    "guest {n}: keep_qcow2 applies to qcow2 disks"
                )));
            }
            if !matches!(d.access.as_str(), "rw" | "ro") {
                return Err(refused(format!(
                    "guest {n}: disk access '{}' must be rw or ro",
                    d.access
                )));
            }
            let dev_ok = d.device.len() >= 3
                && ["xvd", "hd", "sd"].iter().any(|p| d.device.starts_with(p))
                && d.device.chars().all(|c| c.is_ascii_lowercase());
            if !dev_ok {
                return Err(refused(format!(
                    "guest {n}: disk device '{}' is not a Xen virtual disk name (xvda, xvdb, …)",
                    d.device
                )));
            }
        }
    }
    Ok(())
}

fn check_file(guest: &str, what: &str, p: &Path) -> Result<()> {
    let md = std::fs::metadata(p).map_err(|_| {
        refused(format!(
            "guest {guest}: {what} {} does not exist",
            crate::show::path(p)
        ))
    })?;
    if !md.is_file() {
        return Err(refused(format!(
            "guest {guest}: {what} {} is not a file",
            crate::show::path(p)
        )));
    }
    Ok(())
}

/// The folder relative paths in `spec_path` are relative to.
pub fn base_of(spec_path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(spec_path)
        .with_context(|| format!("resolving {}", crate::show::path(spec_path)))?;
    Ok(abs.parent().unwrap_or(Path::new("/")).to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> BundleSpec {
        toml::from_str(text).unwrap()
    }

    fn refusal(s: &BundleSpec, arch: Arch, base: &Path) -> String {
        let e = s.validate(arch, base).unwrap_err();
        assert!(crate::error::is_refused(&e), "{e:#}");
        e.to_string()
    }

    #[test]
    fn defaults_follow_meta_virtualization() {
        let s = spec("[[guest]]\nname = \"g\"\nramdisk = \"r\"\n");
        let g = &s.guests[0];
        assert_eq!((g.memory, g.vcpus, g.guest_type), (512, 1, GuestType::Pvh));
        assert_eq!(g.vif, ["bridge=xenbr0"]);
        assert_eq!(g.kernel_source(Path::new("/b")), KernelSource::Host);
        assert_eq!(
            (g.on_poweroff, g.on_reboot, g.on_crash),
            (Action::Destroy, Action::Restart, Action::Destroy)
        );
        assert!(!g.autostart);
    }

    #[test]
    fn bad_guests_are_refused_with_what_to_change() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("r"), "x").unwrap();
        let b = d.path();
        let cases = [
            ("name = \"-x\"\nramdisk = \"r\"", "not usable"),
            ("name = \"g\"", "neither a disk nor a ramdisk"),
            ("name = \"g\"\nramdisk = \"missing\"", "does not exist"),
            ("name = \"g\"\nextra = \"a\\\"b\"\nramdisk = \"r\"", "quote"),
            (
                "name = \"g\"\ntype = \"pv\"\nramdisk = \"r\"",
                "x86_64 only",
            ),
            (
                "name = \"g\"\nkernel = \"none\"\n[guest.disk]\ntype = \"raw\"\nsource = \"r\"",
                "x86_64 only",
            ),
            (
                "name = \"g\"\n[guest.disk]\ntype = \"vmdk\"\nsource = \"r\"",
                "unknown disk type 'vmdk'; known: rootfs_dir, qcow2, ext4, raw",
            ),
            (
                "name = \"g\"\n[guest.disk]\ntype = \"rootfs_dir\"\nsource = \"nope\"",
                "does not exist",
            ),
            (
                "name = \"g\"\n[guest.disk]\ntype = \"raw\"\nsource = \"r\"\nsize_mb = 9",
                "size_mb applies",
            ),
            (
                "name = \"g\"\n[guest.disk]\ntype = \"raw\"\nsource = \"r\"\ndevice = \"vda\"",
                "Xen virtual disk",
            ),
        ];
        for (guest, want) in cases {
            let s = spec(&format!("[[guest]]\n{guest}\n"));
            let e = refusal(&s, Arch::Aarch64, b);
            assert!(e.contains(want), "{guest}: {e}");
        }
        let two = spec(
            "[[guest]]\nname = \"g\"\nramdisk = \"r\"\n[[guest]]\nname = \"g\"\nramdisk = \"r\"\n",
        );
        assert!(refusal(&two, Arch::X86_64, b).contains("unique"));
        assert!(refusal(&spec(""), Arch::X86_64, b).contains("no [[guest]]"));
        // x86_64 knows pv and hvm.
        let pv = spec("[[guest]]\nname = \"g\"\ntype = \"pv\"\nramdisk = \"r\"\n");
        pv.validate(Arch::X86_64, b).unwrap();
        let hvm = spec(
            "[[guest]]\nname = \"g\"\ntype = \"hvm\"\nkernel = \"none\"\n[guest.disk]\ntype = \"raw\"\nsource = \"r\"\n",
        );
        hvm.validate(Arch::X86_64, b).unwrap();
    }
}
