//! What a UEFI-bootable disk carries on its EFI system partition, taken from the rootfs's own
//! packages (no host files): the kernel (the newest `/boot/vmlinuz-*`), its initrd when the
//! rootfs has one, and a boot path at the removable-media name the firmware starts by itself
//! (`EFI/BOOT/BOOTX64.EFI`, `BOOTAA64.EFI`), so no EFI variables need to be set:
//!
//! - `systemd-boot`: Debian's systemd-boot-efi binary, `loader/loader.conf` and one Boot
//!   Loader Specification entry (`loader/entries/osbuilder.conf`) for the kernel;
//! - `xen`: Debian's Xen EFI binary as the boot program, with its configuration file beside
//!   it (`BOOTAA64.cfg`: Xen's EFI loader reads `<its own name>.cfg`), dom0's kernel and
//!   initrd in the same folder.
//!
//! The root file system is named by its GPT partition UUID, which the image derives from its
//! seed: the command line does not depend on how the firmware or the kernel numbers disks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::esp::EspFile;
use crate::arch::Arch;
use crate::tree::{Kind, Tree};

/// The program the firmware starts from the ESP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loader {
    /// systemd-boot, from the rootfs's systemd-boot-efi package.
    SystemdBoot,
    /// The Xen hypervisor's EFI binary, from the rootfs's xen-hypervisor package; it starts
    /// the rootfs's kernel as dom0.
    Xen,
}

impl Loader {
    pub fn name(self) -> &'static str {
        match self {
            Loader::SystemdBoot => "systemd-boot",
            Loader::Xen => "xen",
        }
    }
}

/// How the disk boots under UEFI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UefiBoot {
    pub loader: Loader,
    /// Size of the EFI system partition (MiB).
    pub esp_mb: u64,
    /// Kernel command line after `root=PARTUUID=… rw`.
    pub cmdline: String,
    /// Xen's own command line (the `options=` line of its configuration file).
    pub xen_options: String,
}

/// The kernel the ESP gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootKernel {
    /// `uname -r`, from the file name.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub initrd: Option<PathBuf>,
}

/// The removable-media name of the boot program (UEFI 2.x §3.5.1.1) for `arch`.
fn removable_name(arch: Arch) -> Result<&'static str> {
    match arch {
        Arch::X86_64 => Ok("BOOTX64"),
        Arch::Aarch64 => Ok("BOOTAA64"),
        other => bail!("UEFI boot is supported for x86_64 and aarch64, not {other}"),
    }
}

/// systemd-boot's file name suffix for `arch` (systemd-boot<suffix>.efi).
fn efi_suffix(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "aa64",
        _ => "x64",
    }
}

/// A regular file of the tree (symlinks followed inside it), as a host path.
fn file_in(tree: &Tree, path: &str) -> Option<PathBuf> {
    let resolved = tree.resolve(path.as_bytes())?;
    match &tree.get(&resolved)?.kind {
        Kind::File { source, .. } => Some(source.clone()),
        _ => None,
    }
}

/// Files directly in /boot whose names start with `prefix`, as (rest of the name, host path).
fn boot_files(tree: &Tree, prefix: &str) -> Vec<(String, PathBuf)> {
    let Some(dir) = tree.resolve(b"boot") else {
        return Vec::new();
    };
    let mut want = dir.clone();
    want.push(b'/');
    want.extend_from_slice(prefix.as_bytes());
    tree.entries
        .iter()
        .filter(|e| e.path.starts_with(&want) && !e.path[dir.len() + 1..].contains(&b'/'))
        .filter_map(|e| match &e.kind {
            Kind::File { source, .. } => Some((
                String::from_utf8_lossy(&e.path[want.len()..]).into_owned(),
                source.clone(),
            )),
            _ => None,
        })
        .collect()
}

/// The newest kernel in /boot (Debian version order on the release), with its initrd.
pub fn boot_kernel(tree: &Tree) -> Result<BootKernel> {
    let mut kernels = boot_files(tree, "vmlinuz-");
    kernels.sort_by(|a, b| crate::pkg::deb::version::compare(&a.0, &b.0));
    let Some((release, vmlinuz)) = kernels.pop() else {
        bail!(
            "{} has no kernel (/boot/vmlinuz-*) to put on the EFI system partition: install the \
             distro's kernel package (the host profiles do)",
            crate::show::path(&tree.root)
        );
    };
    let initrd = file_in(tree, &format!("boot/initrd.img-{release}"));
    Ok(BootKernel {
        release,
        vmlinuz,
        initrd,
    })
}

/// The Xen EFI binary in the rootfs: Debian installs `/boot/xen-<version>-<arch>.efi`.
fn xen_efi(tree: &Tree) -> Result<PathBuf> {
    let mut found = boot_files(tree, "xen-");
    found.retain(|(n, _)| n.ends_with(".efi"));
    found.sort_by(|a, b| crate::pkg::deb::version::compare(&a.0, &b.0));
    match found.pop() {
        Some((_, p)) => Ok(p),
        None => bail!(
            "{} has no Xen EFI binary (/boot/xen-*.efi): install the hypervisor package \
             (Debian: xen-system-<arch>; the virtualization profile does)",
            crate::show::path(&tree.root)
        ),
    }
}

/// The ESP's files for `boot`, with the small text files written into `work`. `root` is the
/// kernel's `root=` value.
pub fn esp_files(
    tree: &Tree,
    arch: Arch,
    boot: &UefiBoot,
    root: &str,
    work: &Path,
) -> Result<Vec<EspFile>> {
    let name = removable_name(arch)?;
    let kernel = boot_kernel(tree)?;
    let cmdline = format!("root={root} rw {}", boot.cmdline)
        .trim()
        .to_string();
    let text = |file: &str, body: String| -> Result<PathBuf> {
        let p = work.join(file);
        std::fs::write(&p, body).with_context(|| format!("writing {}", crate::show::path(&p)))?;
        Ok(p)
    };
    let vmlinuz = format!("vmlinuz-{}", kernel.release);
    let initrd = format!("initrd.img-{}", kernel.release);
    let mut files = Vec::new();
    match boot.loader {
        Loader::SystemdBoot => {
            let suffix = efi_suffix(arch);
            let sdboot = format!("usr/lib/systemd/boot/efi/systemd-boot{suffix}.efi");
            let Some(bin) = file_in(tree, &sdboot) else {
                bail!(
                    "{} has no /{sdboot}: install systemd-boot-efi in the rootfs (the \
                     baremetal profile does)",
                    crate::show::path(&tree.root)
                );
            };
            files.push(EspFile {
                path: format!("EFI/BOOT/{name}.EFI"),
                source: bin,
            });
            files.push(EspFile {
                path: "loader/loader.conf".into(),
                source: text(
                    "loader.conf",
                    "default osbuilder.conf\ntimeout 0\neditor no\n".into(),
                )?,
            });
            let mut entry = format!(
                "title osbuilder {}\nversion {}\nlinux /{vmlinuz}\n",
                kernel.release, kernel.release
            );
            if kernel.initrd.is_some() {
                entry.push_str(&format!("initrd /{initrd}\n"));
            }
            entry.push_str(&format!("options {cmdline}\n"));
            files.push(EspFile {
                path: "loader/entries/osbuilder.conf".into(),
                source: text("osbuilder.conf", entry)?,
            });
            files.push(EspFile {
                path: vmlinuz.clone(),
                source: kernel.vmlinuz.clone(),
            });
            if let Some(i) = &kernel.initrd {
                files.push(EspFile {
                    path: initrd.clone(),
                    source: i.clone(),
                });
            }
        }
        Loader::Xen => {
            files.push(EspFile {
                path: format!("EFI/BOOT/{name}.EFI"),
                source: xen_efi(tree)?,
            });
            // Xen's EFI loader: paths are relative to its own folder.
            let mut cfg = format!(
                "[global]\ndefault=osbuilder\n\n[osbuilder]\noptions={}\nkernel={vmlinuz} {cmdline}\n",
                boot.xen_options.trim()
            );
            if kernel.initrd.is_some() {
                cfg.push_str(&format!("ramdisk={initrd}\n"));
            }
            files.push(EspFile {
                path: format!("EFI/BOOT/{name}.cfg"),
                source: text("xen.cfg", cfg)?,
            });
            files.push(EspFile {
                path: format!("EFI/BOOT/{vmlinuz}"),
                source: kernel.vmlinuz.clone(),
            });
            if let Some(i) = &kernel.initrd {
                files.push(EspFile {
                    path: format!("EFI/BOOT/{initrd}"),
                    source: i.clone(),
                });
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::ScanOptions;

    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Tree) {
        let d = tempfile::tempdir().unwrap();
        for (p, body) in files {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        let t = Tree::scan(d.path(), &ScanOptions::default()).unwrap();
        (d, t)
    }

    fn boot(loader: Loader) -> UefiBoot {
        UefiBoot {
            loader,
            esp_mb: 64,
            cmdline: "console=ttyS0".into(),
            xen_options: "dom0_mem=1024M".into(),
        }
    }

    fn read(files: &[EspFile], path: &str) -> String {
        let f = files.iter().find(|f| f.path == path).unwrap();
        std::fs::read_to_string(&f.source).unwrap()
    }

    #[test]
    fn systemd_boot_entry_for_the_newest_kernel() {
        let (_d, t) = tree(&[
            ("boot/vmlinuz-6.1.0-9-amd64", "old"),
            ("boot/vmlinuz-6.12.1-cloud-amd64", "new"),
            ("boot/initrd.img-6.12.1-cloud-amd64", "rd"),
            ("usr/lib/systemd/boot/efi/systemd-bootx64.efi", "sdb"),
        ]);
        let w = tempfile::tempdir().unwrap();
        let f = esp_files(
            &t,
            Arch::X86_64,
            &boot(Loader::SystemdBoot),
            "PARTUUID=x",
            w.path(),
        )
        .unwrap();
        let paths: Vec<&str> = f.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "EFI/BOOT/BOOTX64.EFI",
                "loader/loader.conf",
                "loader/entries/osbuilder.conf",
                "vmlinuz-6.12.1-cloud-amd64",
                "initrd.img-6.12.1-cloud-amd64"
            ]
        );
        assert_eq!(
            read(&f, "loader/entries/osbuilder.conf"),
            "title osbuilder 6.12.1-cloud-amd64\nversion 6.12.1-cloud-amd64\n\
             linux /vmlinuz-6.12.1-cloud-amd64\ninitrd /initrd.img-6.12.1-cloud-amd64\n\
             options root=PARTUUID=x rw console=ttyS0\n"
        );
    }

    #[test]
    fn xen_config_beside_the_hypervisor() {
        let (_d, t) = tree(&[
            ("boot/vmlinuz-6.12.1-cloud-arm64", "k"),
            ("boot/xen-4.20-arm64.efi", "xen"),
            ("boot/xen-4.20-arm64", "xen"),
        ]);
        let w = tempfile::tempdir().unwrap();
        let f = esp_files(
            &t,
            Arch::Aarch64,
            &boot(Loader::Xen),
            "PARTUUID=y",
            w.path(),
        )
        .unwrap();
        assert_eq!(
            read(&f, "EFI/BOOT/BOOTAA64.cfg"),
            "[global]\ndefault=osbuilder\n\n[osbuilder]\noptions=dom0_mem=1024M\n\
             kernel=vmlinuz-6.12.1-cloud-arm64 root=PARTUUID=y rw console=ttyS0\n"
        );
        assert!(
            f.iter()
                .any(|f| f.path == "EFI/BOOT/vmlinuz-6.12.1-cloud-arm64")
        );
    }

    #[test]
    fn missing_parts_are_named() {
        let (_d, t) = tree(&[("etc/hostname", "x")]);
        let w = tempfile::tempdir().unwrap();
        let e = esp_files(&t, Arch::X86_64, &boot(Loader::SystemdBoot), "r", w.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/boot/vmlinuz-*"), "{e}");
        let (_d, t) = tree(&[("boot/vmlinuz-6.1", "k")]);
        let e = esp_files(&t, Arch::Aarch64, &boot(Loader::Xen), "r", w.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("xen-system"), "{e}");
    }
}
