//! xl domain configuration files (xl.cfg(5)), written from a resolved guest. Better than
//! meta-virtualization's generator where the manual says so: the guest `type` is explicit
//! (`pvh` unless asked otherwise), disks use the key=value syntax of
//! xl-disk-configuration(5) with `target=` last (it takes the rest of the string, commas
//! included), the ramdisk is named, every lifecycle action is spelt out, and the kernel
//! command line (`cmdline`, which xl prefers over `root=` + `extra=`) puts the console on
//! hvc0.
//!
//! Values are checked by the spec (no quotes, backslashes or line breaks), so they go into
//! xl strings verbatim.

use std::fmt::Write as _;

use super::spec::{Action, GuestType};

/// One disk of a guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XlDisk {
    /// raw or qcow2.
    pub format: &'static str,
    pub vdev: String,
    pub access: String,
    /// The image in dom0.
    pub target: String,
}

/// Everything a guest's config says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XlGuest {
    pub name: String,
    pub guest_type: GuestType,
    pub memory: u32,
    pub vcpus: u32,
    /// Paths in dom0.
    pub kernel: Option<String>,
    pub ramdisk: Option<String>,
    /// The whole kernel command line (omitted for HVM).
    pub cmdline: Option<String>,
    pub disks: Vec<XlDisk>,
    pub vifs: Vec<String>,
    pub on_poweroff: Action,
    pub on_reboot: Action,
    pub on_crash: Action,
}

/// The kernel command line of a guest: the root device (when it boots from a disk), the
/// console on hvc0, then the user's words.
pub fn cmdline(root: Option<&str>, access_ro: bool, extra: &str) -> String {
    let mut words = Vec::new();
    if let Some(r) = root {
        words.push(format!("root={r}"));
        words.push(if access_ro { "ro" } else { "rw" }.to_string());
    }
    words.push("console=hvc0".into());
    words.extend(extra.split_whitespace().map(str::to_string));
    words.join(" ")
}

impl XlGuest {
    /// The configuration file's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Xen guest {} (xl.cfg(5)), written by osbuilder {}",
            self.name,
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(s, "name = \"{}\"", self.name);
        let _ = writeln!(s, "type = \"{}\"", self.guest_type.name());
        let _ = writeln!(s, "memory = {}", self.memory);
        let _ = writeln!(s, "vcpus = {}", self.vcpus);
        if let Some(k) = &self.kernel {
            let _ = writeln!(s, "kernel = \"{k}\"");
        }
        if let Some(r) = &self.ramdisk {
            let _ = writeln!(s, "ramdisk = \"{r}\"");
        }
        if let Some(c) = &self.cmdline {
            let _ = writeln!(s, "cmdline = \"{c}\"");
        }
        let list = |items: Vec<String>| -> String {
            if items.is_empty() {
                "[ ]".into()
            } else {
                format!("[ {} ]", items.join(", "))
            }
        };
        let disks = self
            .disks
            .iter()
            .map(|d| {
                format!(
                    "'format={}, vdev={}, access={}, target={}'",
                    d.format, d.vdev, d.access, d.target
                )
            })
            .collect();
        let _ = writeln!(s, "disk = {}", list(disks));
        let vifs = self.vifs.iter().map(|v| format!("'{v}'")).collect();
        let _ = writeln!(s, "vif = {}", list(vifs));
        let _ = writeln!(s, "on_poweroff = \"{}\"", self.on_poweroff.name());
        let _ = writeln!(s, "on_reboot = \"{}\"", self.on_reboot.name());
        let _ = writeln!(s, "on_crash = \"{}\"", self.on_crash.name());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_guest_with_disk_and_ramdisk() {
        let g = XlGuest {
            name: "guest1".into(),
            guest_type: GuestType::Pvh,
            memory: 256,
            vcpus: 1,
            kernel: Some("/var/lib/xen/images/guest1-vmlinuz".into()),
            ramdisk: Some("/var/lib/xen/images/guest1-initrd.img".into()),
            cmdline: Some(cmdline(Some("/dev/xvda"), false, "quiet  panic=-1")),
            disks: vec![XlDisk {
                format: "raw",
                vdev: "xvda".into(),
                access: "rw".into(),
                target: "/var/lib/xen/images/guest1.img".into(),
            }],
            vifs: vec!["bridge=xenbr0".into()],
            on_poweroff: Action::Destroy,
            on_reboot: Action::Restart,
            on_crash: Action::Destroy,
        };
        let text = g.render();
        let body: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            body,
            [
                "name = \"guest1\"",
                "type = \"pvh\"",
                "memory = 256",
                "vcpus = 1",
                "kernel = \"/var/lib/xen/images/guest1-vmlinuz\"",
                "ramdisk = \"/var/lib/xen/images/guest1-initrd.img\"",
                "cmdline = \"root=/dev/xvda rw console=hvc0 quiet panic=-1\"",
                "disk = [ 'format=raw, vdev=xvda, access=rw, target=/var/lib/xen/images/guest1.img' ]",
                "vif = [ 'bridge=xenbr0' ]",
                "on_poweroff = \"destroy\"",
                "on_reboot = \"restart\"",
                "on_crash = \"destroy\"",
            ]
        );
    }

    #[test]
    fn hvm_guest_has_no_kernel_lines_and_empty_lists_stay_lists() {
        let g = XlGuest {
            name: "w".into(),
            guest_type: GuestType::Hvm,
            memory: 1024,
            vcpus: 2,
            kernel: None,
            ramdisk: None,
            cmdline: None,
            disks: vec![],
            vifs: vec![],
            on_poweroff: Action::Destroy,
            on_reboot: Action::Restart,
            on_crash: Action::Preserve,
        };
        let t = g.render();
        assert!(!t.contains("kernel") && !t.contains("cmdline"), "{t}");
        assert!(t.contains("disk = [ ]\nvif = [ ]\n"), "{t}");
        assert!(t.contains("on_crash = \"preserve\""), "{t}");
        assert_eq!(
            cmdline(Some("/dev/xvda1"), true, ""),
            "root=/dev/xvda1 ro console=hvc0"
        );
        assert_eq!(
            cmdline(None, false, "rdinit=/sbin/init"),
            "console=hvc0 rdinit=/sbin/init"
        );
    }
}
