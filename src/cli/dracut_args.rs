//! Flags of the dracut build method, shared by `osbuilder initrd` and `osbuilder rootfs`.

use std::path::PathBuf;

use anyhow::Result;

use crate::distro::InitMode;
use crate::provision::AgentRequest;

/// How the rootfs or initrd is made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// From a distro's packages (osbuilder rootfs), or from a rootfs you give (initrd)
    #[default]
    Distro,
    /// The host is the base: Kata's overlay merged by dracut with the host's files
    Dracut,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct DracutArgs {
    /// With --method dracut: a dracut profile from dracut-profiles/ (repeatable or
    /// comma-separated; replaces the default 'kata'). `rootfs` without --method dracut: the
    /// host profile to build (baremetal, virtualization; see profiles/)
    #[arg(long = "profile", value_name = "NAME", value_delimiter = ',')]
    pub profiles: Vec<String>,
    /// Kernel release whose modules go into the initrd (default: none, as Kata without
    /// DRACUT_KVERSION). With --method dracut
    #[arg(long, value_name = "V")]
    pub kver: Option<String>,
    /// That kernel's modules folder (default /lib/modules/V; `osbuilder kernel fetch -o K`
    /// writes K/modules/<release>). With --method dracut
    #[arg(long, value_name = "DIR")]
    pub kmoddir: Option<PathBuf>,
}

impl DracutArgs {
    /// The flags given, by name (for refusing them with another method).
    pub fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.profiles.is_empty() {
            v.push("--profile");
        }
        if self.kver.is_some() {
            v.push("--kver");
        }
        if self.kmoddir.is_some() {
            v.push("--kmoddir");
        }
        v
    }

    pub fn options(
        &self,
        init: InitMode,
        agent: Option<AgentRequest>,
    ) -> Result<crate::dracut::Options> {
        Ok(crate::dracut::Options {
            profiles: self.profiles.clone(),
            kver: self.kver.clone(),
            kmoddir: self.kmoddir.clone(),
            init,
            agent,
            source_date_epoch: crate::tree::source_date_epoch()?,
        })
    }
}

/// Refuse `flags` (given, by name) that only apply to another method.
pub fn refuse(flags: &[&str], why: &str) -> Result<()> {
    match flags {
        [] => Ok(()),
        [one] => Err(crate::error::refused(format!("{one} {why}"))),
        many => Err(crate::error::refused(format!("{} {why}", many.join(", ")))),
    }
}

/// What a dracut build says on stderr when it is done.
pub fn report(r: &crate::dracut::Report) {
    for w in &r.warnings {
        eprintln!("osbuilder: dracut: {w}");
    }
    if let Some((path, sha)) = &r.agent {
        eprintln!("osbuilder: agent at {path} (sha256 {})", &sha[..16]);
    }
    if !r.libraries.is_empty() {
        eprintln!(
            "osbuilder: added the agent's {} libraries: {}",
            r.libraries.len(),
            r.libraries
                .iter()
                .map(|l| l.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    eprintln!(
        "osbuilder: dracut ({} s) with profile(s) {}{}: {} entries from {} host packages",
        format_args!("{:.1}", r.dracut_time.as_secs_f64()),
        r.profiles.join(", "),
        match &r.kver {
            Some(k) if r.drivers.is_empty() => format!(", modules of {k}"),
            Some(k) => format!(", modules of {k} (loaded at boot: {})", r.drivers.join(" ")),
            None => ", no kernel modules".into(),
        },
        r.members,
        r.host_packages
    );
}
