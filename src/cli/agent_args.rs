//! Agent and provisioning flags shared by `osbuilder provision` and `osbuilder rootfs`.

use std::path::PathBuf;

use anyhow::Result;

use crate::arch::Arch;
use crate::distro::InitMode;
use crate::provision::{AgentSource, AgentUnits, Spec};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentArgs {
    /// Agent binary to install (Kata's AGENT_SOURCE_BIN); default: osbuilder's reference agent
    #[arg(long, value_name = "PATH", conflicts_with = "agent_tarball")]
    pub agent_bin: Option<PathBuf>,
    /// Kata's kata-static-agent tarball (.tar.zst with usr/bin/kata-agent and its units)
    #[arg(long, value_name = "FILE")]
    pub agent_tarball: Option<PathBuf>,
    /// Agent version recorded in osbuilder.yaml
    #[arg(long, value_name = "VERSION")]
    pub agent_version: Option<String>,
    /// Kernel modules folder copied to /lib/modules/<its name> (Kata's KERNEL_MODULES_DIR)
    #[arg(long, value_name = "DIR")]
    pub kernel_modules: Option<PathBuf>,
    /// Delete systemd units and generators an agent guest does not need (Kata's rootfs.sh -d)
    #[arg(long)]
    pub prune_units: bool,
}

impl AgentArgs {
    pub fn source(&self, arch: Arch) -> Result<AgentSource> {
        if let Some(p) = &self.agent_bin {
            return Ok(AgentSource::Binary(p.clone()));
        }
        if let Some(p) = &self.agent_tarball {
            return Ok(AgentSource::Tarball(p.clone()));
        }
        match crate::agent::reference_agent_arch() {
            Some(a) if a == arch => Ok(AgentSource::Reference {
                bytes: crate::agent::reference_agent(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
            built => Err(super::UsageError(format!(
                "no agent given for {arch}: osbuilder's built-in reference agent is built for {}; \
                 pass --agent-bin PATH (a static {arch} binary) or --agent-tarball FILE",
                built
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "another architecture".into())
            ))
            .into()),
        }
    }

    /// The provisioning spec for these flags (distro details filled in by the caller).
    pub fn spec(&self, arch: Arch, init: InitMode) -> Result<Spec> {
        Ok(Spec {
            arch,
            init,
            agent: self.source(arch)?,
            agent_version: self.agent_version.clone(),
            units: AgentArgs::units(),
            kernel_modules: self.kernel_modules.clone(),
            prune_units: self.prune_units,
            distro: None,
            default_packages: Vec::new(),
            extra_packages: Vec::new(),
            source_date_epoch: crate::tree::source_date_epoch()?,
        })
    }

    pub fn units() -> AgentUnits {
        AgentUnits {
            agent_service: crate::agent::KATA_AGENT_SERVICE.to_string(),
            containers_target: crate::agent::KATA_CONTAINERS_TARGET.to_string(),
        }
    }
}
