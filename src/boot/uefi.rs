//! `osbuilder boot --firmware uefi --image DISK`: boot a disk the way a machine does — UEFI
//! firmware (OVMF on x86_64, AAVMF on aarch64, from Debian's packages) finds the boot program
//! on the disk's EFI system partition and everything after that comes from the disk itself:
//! no `-kernel`, no command line from us.
//!
//! The disk is attached over NVMe (OVMF and AAVMF have NVMe drivers, Debian's cloud kernels
//! have NVMe built in) with `snapshot=on`: the guest may write (a host mounts its root
//! read-write), the image file never changes. The firmware's variable store is a private
//! copy of the package's template, removed after the boot.
//!
//! With `--virtualization` an aarch64 machine exposes EL2 (`virtualization=on`, GICv3), so a
//! hypervisor on the disk (Xen) can run its guests; `acpi=off` gives Xen, which has no ACPI
//! support on Arm, the device tree through the firmware.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::Plan;
use super::disk::ImageFormat;
use super::qemu::{Machine, find_binary};
use crate::arch::Arch;

/// What `osbuilder boot --firmware uefi` needs.
#[derive(Clone, Debug)]
pub struct UefiOptions {
    pub image: PathBuf,
    /// None: the host's.
    pub arch: Option<Arch>,
    pub memory_mb: u32,
    /// Expose the CPU's virtualization extensions (aarch64: EL2) for a hypervisor.
    pub virtualization: bool,
}

/// The firmware of one arch: its code (read-only) and the template of its variable store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firmware {
    pub code: PathBuf,
    pub vars: PathBuf,
}

/// Where Debian installs the firmware, per arch: (code, vars) candidates and the package.
fn candidates(arch: Arch) -> Result<(&'static [(&'static str, &'static str)], &'static str)> {
    match arch {
        Arch::X86_64 => Ok((
            &[
                (
                    "/usr/share/OVMF/OVMF_CODE_4M.fd",
                    "/usr/share/OVMF/OVMF_VARS_4M.fd",
                ),
                (
                    "/usr/share/OVMF/OVMF_CODE.fd",
                    "/usr/share/OVMF/OVMF_VARS.fd",
                ),
            ],
            "ovmf",
        )),
        Arch::Aarch64 => Ok((
            &[(
                "/usr/share/AAVMF/AAVMF_CODE.fd",
                "/usr/share/AAVMF/AAVMF_VARS.fd",
            )],
            "qemu-efi-aarch64",
        )),
        other => bail!("UEFI boot is supported for x86_64 and aarch64, not {other}"),
    }
}

/// The firmware for `arch`; the error names the Debian package to install.
pub fn firmware(arch: Arch) -> Result<Firmware> {
    let (list, package) = candidates(arch)?;
    for (code, vars) in list {
        if Path::new(code).is_file() && Path::new(vars).is_file() {
            return Ok(Firmware {
                code: code.into(),
                vars: vars.into(),
            });
        }
    }
    bail!(
        "no UEFI firmware for {arch} (looked for {}); install it with `apt-get install \
         --no-install-recommends {package}`",
        list[0].0
    )
}

/// A private copy of the variable store, removed when the last user drops it.
#[derive(Debug)]
pub struct VarStore(PathBuf);

impl VarStore {
    fn copy_of(template: &Path) -> Result<VarStore> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!(".osbuilder-efivars-{}-{n}.fd", std::process::id()));
        crate::output::track(&p);
        std::fs::copy(template, &p).with_context(|| {
            format!(
                "copying the UEFI variable store {} to {}",
                crate::show::path(template),
                crate::show::path(&p)
            )
        })?;
        Ok(VarStore(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for VarStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        crate::output::untrack(&self.0);
    }
}

/// Everything on the QEMU command line of a UEFI boot.
#[derive(Clone, Debug)]
pub struct UefiMachine {
    pub arch: Arch,
    pub memory_mb: u32,
    pub firmware: Firmware,
    pub vars: Arc<VarStore>,
    pub image: PathBuf,
    pub format: ImageFormat,
    pub virtualization: bool,
}

impl UefiMachine {
    /// TCG, no network, no reboot, the first serial port on stdio (as for direct boots);
    /// the firmware in two pflash units, the disk as a snapshot over NVMe.
    pub fn qemu_args(&self) -> Vec<OsString> {
        let q = self.arch.qemu();
        let machine = match (self.arch, self.virtualization) {
            (Arch::Aarch64, true) => "virt,acpi=off,virtualization=on,gic-version=3".to_string(),
            (Arch::Aarch64, false) => "virt,acpi=off".to_string(),
            _ => q.machine.to_string(),
        };
        // A hypervisor and its control domain want a second CPU for the guests.
        let smp = if self.virtualization { "2" } else { "1" };
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(OsString::from));
        push(&["-accel", "tcg", "-machine", &machine]);
        if let Some(cpu) = q.cpu {
            push(&["-cpu", cpu]);
        }
        push(&["-m", &self.memory_mb.to_string(), "-smp", smp]);
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        push(&["-serial", "stdio", "-no-reboot", "-nic", "none"]);
        let pflash = |unit: u32, path: &Path, ro: bool| -> OsString {
            let mut s = OsString::from(format!(
                "if=pflash,format=raw,unit={unit}{},file=",
                if ro { ",readonly=on" } else { "" }
            ));
            s.push(escape_commas(path));
            s
        };
        a.push("-drive".into());
        a.push(pflash(0, &self.firmware.code, true));
        a.push("-drive".into());
        a.push(pflash(1, self.vars.path(), false));
        let mut drive = OsString::from(format!(
            "if=none,id=osbdisk,snapshot=on,format={},file=",
            self.format.qemu_name()
        ));
        drive.push(escape_commas(&self.image));
        a.push("-drive".into());
        a.push(drive);
        a.push("-device".into());
        a.push("nvme,drive=osbdisk,serial=osbuilder".into());
        a
    }
}

fn escape_commas(p: &Path) -> OsString {
    p.as_os_str().to_string_lossy().replace(',', ",,").into()
}

/// Check the disk, the firmware and QEMU; copy the variable store.
pub fn plan(o: &UefiOptions) -> Result<Plan> {
    let md = std::fs::metadata(&o.image)
        .with_context(|| format!("cannot read the disk image {}", crate::show::path(&o.image)))?;
    if !md.is_file() || md.len() == 0 {
        bail!(
            "the disk image {} is not a non-empty file",
            crate::show::path(&o.image)
        );
    }
    let arch = Arch::or_host(o.arch)?;
    if o.virtualization && arch != Arch::Aarch64 {
        return Err(crate::error::refused(format!(
            "--virtualization is for aarch64 guests (EL2); QEMU's TCG does not emulate {arch}'s \
             hardware virtualization"
        )));
    }
    let info = super::disk::inspect(&o.image)?;
    let qemu = find_binary(&arch.qemu())?;
    let firmware = firmware(arch)?;
    let vars = Arc::new(VarStore::copy_of(&firmware.vars)?);
    let uefi = UefiMachine {
        arch,
        memory_mb: o.memory_mb,
        firmware,
        vars,
        image: o.image.clone(),
        format: info.format,
        virtualization: o.virtualization,
    };
    Ok(Plan {
        qemu,
        // Nothing of a direct boot applies: the disk brings its own kernel and command line.
        machine: Machine {
            arch,
            memory_mb: o.memory_mb,
            kernel: PathBuf::new(),
            initrd: None,
            disk: None,
            cmdline: String::new(),
        },
        kernel_recognised: true,
        uefi: Some(uefi),
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(a: &[OsString]) -> String {
        a.iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn machine(arch: Arch, virtualization: bool) -> UefiMachine {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("VARS.fd");
        std::fs::write(&t, b"vars").unwrap();
        UefiMachine {
            arch,
            memory_mb: 2048,
            firmware: Firmware {
                code: "/fw/CODE.fd".into(),
                vars: t.clone(),
            },
            vars: Arc::new(VarStore::copy_of(&t).unwrap()),
            image: "/i/host,1.img".into(),
            format: ImageFormat::Raw,
            virtualization,
        }
    }

    #[test]
    fn x86_64_boots_ovmf_with_the_disk_as_a_snapshot() {
        let m = machine(Arch::X86_64, false);
        let a = joined(&m.qemu_args());
        let vars = m.vars.path().display().to_string();
        assert_eq!(
            a,
            format!(
                "-accel tcg -machine q35 -cpu max,-cx16 -m 2048 -smp 1 -nodefaults \
                 -no-user-config -display none -serial stdio -no-reboot -nic none \
                 -drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd \
                 -drive if=pflash,format=raw,unit=1,file={vars} \
                 -drive if=none,id=osbdisk,snapshot=on,format=raw,file=/i/host,,1.img \
                 -device nvme,drive=osbdisk,serial=osbuilder"
            )
        );
        assert!(!a.contains("-kernel") && !a.contains("-append"));
    }

    #[test]
    fn aarch64_virtualization_exposes_el2_and_the_device_tree() {
        let a = joined(&machine(Arch::Aarch64, true).qemu_args());
        assert!(
            a.contains("-machine virt,acpi=off,virtualization=on,gic-version=3 -cpu cortex-a57"),
            "{a}"
        );
        assert!(a.contains("-smp 2"), "{a}");
    }

    #[test]
    fn the_variable_store_is_removed_with_its_last_user() {
        let m = machine(Arch::X86_64, false);
        let p = m.vars.path().to_path_buf();
        assert_eq!(std::fs::read(&p).unwrap(), b"vars");
        let copy = m.clone();
        drop(m);
        assert!(p.exists());
        drop(copy);
        assert!(!p.exists());
    }
}
