//! The QEMU command line and the kernel command line for a smoke-test boot. Pure functions
//! (apart from looking up the binary and peeking at the kernel's header), so every flag we
//! pass is unit-tested.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::disk::ImageFormat;
use crate::arch::{Arch, QemuTarget};

/// How the disk image is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiskBus {
    /// NVMe: built into Debian's cloud kernels, so no initramfs is needed.
    Nvme,
    /// virtio-blk: what Kata's runtime uses by default (root=/dev/vda1).
    #[value(name = "virtio-blk", alias = "virtio")]
    Virtio,
    /// NVDIMM: Kata's runtime maps the image as guest memory (QEMU memory-backend-file +
    /// nvdimm); the DAX header makes it /dev/pmem0, mounted with rootflags=dax.
    Nvdimm,
}

impl DiskBus {
    /// The kernel's name for the disk, or for partition `n` of it.
    pub fn device(self, partition: Option<u32>) -> String {
        match (self, partition) {
            (DiskBus::Nvme, None) => "/dev/nvme0n1".into(),
            (DiskBus::Nvme, Some(n)) => format!("/dev/nvme0n1p{n}"),
            (DiskBus::Virtio, None) => "/dev/vda".into(),
            (DiskBus::Virtio, Some(n)) => format!("/dev/vda{n}"),
            (DiskBus::Nvdimm, None) => "/dev/pmem0".into(),
            (DiskBus::Nvdimm, Some(n)) => format!("/dev/pmem0p{n}"),
        }
    }

    /// The name `--disk` takes.
    pub fn name(self) -> &'static str {
        match self {
            DiskBus::Nvme => "nvme",
            DiskBus::Virtio => "virtio-blk",
            DiskBus::Nvdimm => "nvdimm",
        }
    }
}

/// A disk image attached read-only.
#[derive(Clone, Debug)]
pub struct Disk {
    pub path: PathBuf,
    pub format: ImageFormat,
    pub bus: DiskBus,
    /// Bytes; an NVDIMM is exactly the file's size.
    pub size: u64,
}

/// Room for hot-pluggable memory beside the guest's RAM, in MiB: an NVDIMM lives there,
/// and QEMU aligns each slot, so leave a GiB beyond the image.
fn nvdimm_maxmem_mb(memory_mb: u32, size: u64) -> u64 {
    memory_mb as u64 + (size.div_ceil(1 << 20)).div_ceil(1024) * 1024 + 1024
}

/// Everything that goes on the QEMU command line.
#[derive(Clone, Debug)]
pub struct Machine {
    pub arch: Arch,
    pub memory_mb: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub disk: Option<Disk>,
    pub cmdline: String,
}

/// The kernel command line: serial console and panic=-1 first, then the words that mount
/// a disk's root (`root=`…, see attach.rs; left out when the user's `append` names its own
/// root), the power-off switch, then `append` verbatim, so the user's words come last and
/// win where the kernel lets the last one win (console=).
pub fn kernel_cmdline(
    arch: Arch,
    root: Option<&[String]>,
    poweroff: bool,
    append: Option<&str>,
) -> String {
    let mut words = vec![
        format!("console={}", arch.qemu().console),
        "panic=-1".into(),
    ];
    let user_root = append.is_some_and(|a| a.split_whitespace().any(|w| w.starts_with("root=")));
    if let (Some(root), false) = (root, user_root) {
        words.extend(root.iter().cloned());
    }
    if poweroff {
        words.push(format!("{}=1", crate::agent::POWEROFF_PARAM));
    }
    if let Some(a) = append {
        words.extend(a.split_whitespace().map(str::to_string));
    }
    words.join(" ")
}

/// QEMU's option syntax doubles commas inside values.
fn escape_commas(p: &Path) -> OsString {
    let s = p.as_os_str().to_string_lossy().replace(',', ",,");
    s.into()
}

/// Arguments for `qemu-system-<arch>`: TCG only (no KVM here), no network, no reboot (a
/// panic or reboot ends QEMU), no display, the first serial port on stdio.
pub fn qemu_args(m: &Machine) -> Vec<OsString> {
    let q = m.arch.qemu();
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(OsString::from));
    let nvdimm = m.disk.as_ref().filter(|d| d.bus == DiskBus::Nvdimm);
    let machine = match nvdimm {
        Some(_) => format!("{},nvdimm=on", q.machine),
        None => q.machine.to_string(),
    };
    push(&["-accel", "tcg", "-machine", &machine]);
    if let Some(cpu) = q.cpu {
        push(&["-cpu", cpu]);
    }
    let memory = match nvdimm {
        Some(d) => format!(
            "{},slots=2,maxmem={}M",
            m.memory_mb,
            nvdimm_maxmem_mb(m.memory_mb, d.size)
        ),
        None => m.memory_mb.to_string(),
    };
    push(&["-m", &memory, "-smp", "1"]);
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    push(&["-serial", "stdio", "-no-reboot", "-nic", "none"]);
    a.push("-kernel".into());
    a.push(m.kernel.clone().into());
    if let Some(i) = &m.initrd {
        a.push("-initrd".into());
        a.push(i.clone().into());
    }
    if let Some(d) = nvdimm {
        // As Kata's runtime: the file mapped read-only as guest memory, an unarmed NVDIMM.
        let mut backend =
            OsString::from("memory-backend-file,id=osbmem,share=off,readonly=on,size=");
        backend.push(d.size.to_string());
        backend.push(",mem-path=");
        backend.push(escape_commas(&d.path));
        a.push("-object".into());
        a.push(backend);
        a.push("-device".into());
        a.push("nvdimm,id=osbnvdimm,memdev=osbmem,unarmed=on".into());
    } else if let Some(d) = &m.disk {
        let mut drive = OsString::from("if=none,id=osbdisk,readonly=on,format=");
        drive.push(d.format.qemu_name());
        drive.push(",file=");
        drive.push(escape_commas(&d.path));
        a.push("-drive".into());
        a.push(drive);
        a.push("-device".into());
        a.push(match d.bus {
            DiskBus::Nvme => "nvme,drive=osbdisk,serial=osbuilder".into(),
            DiskBus::Virtio | DiskBus::Nvdimm => "virtio-blk-pci,drive=osbdisk".into(),
        });
    }
    a.push("-append".into());
    a.push(m.cmdline.clone().into());
    a
}

/// The QEMU binary for `q`, from PATH; the error names the Debian package to install.
pub fn find_binary(q: &QemuTarget) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(q.binary);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{} was not found in PATH; install it with `apt-get install --no-install-recommends {}` \
         (Debian/Ubuntu)",
        q.binary,
        q.debian_package
    )
}

/// The architecture a kernel image was built for, from its header: x86 bzImage ("HdrS"),
/// arm64 Image ("ARM\x64" at 0x38, also inside a gzip-compressed Image), EFI zboot or PE
/// (machine type in the PE header). None when the format is not one of these.
pub fn kernel_arch(path: &Path) -> Result<Option<Arch>> {
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("cannot open kernel {}", path.display()))?;
    let mut head = vec![0u8; 4096];
    let n = read_full(&mut f, &mut head)?;
    head.truncate(n);
    Ok(arch_from_header(&head))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

fn arch_from_header(h: &[u8]) -> Option<Arch> {
    let at = |off: usize, magic: &[u8]| h.get(off..off + magic.len()) == Some(magic);
    if at(0x202, b"HdrS") {
        return Some(Arch::X86_64);
    }
    if at(0x38, b"ARM\x64") {
        return Some(Arch::Aarch64);
    }
    if at(0, b"\x7fELF") && h.len() >= 20 {
        // vmlinux (ppc64le boots one): e_machine in the header's byte order.
        let big = h[5] == 2;
        let m = [h[18], h[19]];
        let machine = if big {
            u16::from_be_bytes(m)
        } else {
            u16::from_le_bytes(m)
        };
        return Arch::from_elf(machine, big);
    }
    if at(0, &[0x1f, 0x8b]) {
        let mut inner = vec![0u8; 64];
        let n = read_full(&mut flate2::read::GzDecoder::new(h), &mut inner).unwrap_or(0);
        return arch_from_header(&inner[..n]);
    }
    if at(0, b"MZ") {
        // PE: e_lfanew at 0x3c → "PE\0\0" then the COFF machine type.
        let pe = u32::from_le_bytes(h.get(0x3c..0x40)?.try_into().ok()?) as usize;
        if at(pe, b"PE\0\0") {
            let machine = u16::from_le_bytes(h.get(pe + 4..pe + 6)?.try_into().ok()?);
            return match machine {
                0x8664 => Some(Arch::X86_64),
                0xaa64 => Some(Arch::Aarch64),
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(arch: Arch) -> Machine {
        Machine {
            arch,
            memory_mb: 512,
            kernel: "/k/vmlinuz".into(),
            initrd: Some("/k/initrd.img".into()),
            disk: None,
            cmdline: "console=ttyS0".into(),
        }
    }

    fn joined(a: &[OsString]) -> String {
        a.iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn x86_64_initrd_boot_is_tcg_without_network_or_reboot() {
        let a = joined(&qemu_args(&machine(Arch::X86_64)));
        assert_eq!(
            a,
            "-accel tcg -machine q35 -cpu max,-cx16 -m 512 -smp 1 -nodefaults -no-user-config \
             -display none -serial stdio -no-reboot -nic none -kernel /k/vmlinuz \
             -initrd /k/initrd.img -append console=ttyS0"
        );
    }

    #[test]
    fn aarch64_uses_virt_and_a_disk_is_read_only() {
        let mut m = machine(Arch::Aarch64);
        m.initrd = None;
        m.disk = Some(Disk {
            path: "/i/a,b.img".into(),
            format: ImageFormat::Raw,
            bus: DiskBus::Nvme,
            size: 128 << 20,
        });
        let a = joined(&qemu_args(&m));
        assert!(a.contains("-machine virt -cpu cortex-a57"), "{a}");
        assert!(a.contains(
            "-drive if=none,id=osbdisk,readonly=on,format=raw,file=/i/a,,b.img \
             -device nvme,drive=osbdisk,serial=osbuilder"
        ));
        assert!(!a.contains("-initrd"));
    }

    #[test]
    fn an_nvdimm_is_a_read_only_file_backed_memory_device() {
        let mut m = machine(Arch::X86_64);
        m.disk = Some(Disk {
            path: "/i/kata.img".into(),
            format: ImageFormat::Raw,
            bus: DiskBus::Nvdimm,
            size: 128 << 20,
        });
        let a = joined(&qemu_args(&m));
        assert!(a.contains("-machine q35,nvdimm=on"), "{a}");
        assert!(a.contains("-m 512,slots=2,maxmem=2560M"), "{a}");
        assert!(a.contains(
            "-object memory-backend-file,id=osbmem,share=off,readonly=on,size=134217728,\
             mem-path=/i/kata.img -device nvdimm,id=osbnvdimm,memdev=osbmem,unarmed=on"
        ));
        assert!(!a.contains("-drive"), "{a}");
        assert_eq!(DiskBus::Nvdimm.device(Some(1)), "/dev/pmem0p1");
    }

    #[test]
    fn cmdline_defaults_and_overrides() {
        assert_eq!(
            kernel_cmdline(Arch::X86_64, None, false, None),
            "console=ttyS0 panic=-1"
        );
        let root: Vec<String> = ["root=/dev/nvme0n1p1", "rootfstype=ext4", "ro"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            kernel_cmdline(
                Arch::Aarch64,
                Some(&root),
                true,
                Some("quiet  init=/usr/bin/kata-agent")
            ),
            "console=ttyAMA0 panic=-1 root=/dev/nvme0n1p1 rootfstype=ext4 ro \
             osbuilder.poweroff=1 quiet init=/usr/bin/kata-agent"
        );
        // The user's root= replaces ours entirely.
        assert_eq!(
            kernel_cmdline(Arch::X86_64, Some(&root), false, Some("root=/dev/vda2 rw")),
            "console=ttyS0 panic=-1 root=/dev/vda2 rw"
        );
        assert_eq!(DiskBus::Virtio.device(None), "/dev/vda");
    }

    #[test]
    fn kernel_headers() {
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(arch_from_header(&bz), Some(Arch::X86_64));
        let mut image = vec![0u8; 64];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert_eq!(arch_from_header(&image), Some(Arch::Aarch64));
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            e.write_all(&image).unwrap();
            e.write_all(&[0u8; 4096]).unwrap();
        }
        assert_eq!(arch_from_header(&gz), Some(Arch::Aarch64));
        let mut pe = vec![0u8; 0x100];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0xaa64u16.to_le_bytes());
        assert_eq!(arch_from_header(&pe), Some(Arch::Aarch64));
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[5] = 1;
        elf[18..20].copy_from_slice(&21u16.to_le_bytes());
        assert_eq!(arch_from_header(&elf), Some(Arch::Ppc64le));
        assert_eq!(arch_from_header(b"garbage"), None);
        assert_eq!(arch_from_header(b""), None);
    }

    #[test]
    fn missing_qemu_names_the_debian_package() {
        let q = QemuTarget {
            binary: "qemu-system-osbuilder-test-none",
            machine: "x",
            cpu: None,
            console: "ttyS0",
            debian_package: "qemu-system-x86",
        };
        let e = find_binary(&q).unwrap_err().to_string();
        assert!(e.contains("qemu-system-osbuilder-test-none") && e.contains("qemu-system-x86"));
    }
}
