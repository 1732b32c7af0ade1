//! Agent and provisioning flags shared by `osbuilder provision` and `osbuilder rootfs`.

use std::path::PathBuf;

use anyhow::Result;

use crate::arch::Arch;
use crate::distro::InitMode;
use crate::provision::{AgentRequest, Spec};

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
    pub fn request(&self) -> AgentRequest {
        AgentRequest {
            agent_bin: self.agent_bin.clone(),
            agent_tarball: self.agent_tarball.clone(),
            agent_version: self.agent_version.clone(),
            kernel_modules: self.kernel_modules.clone(),
            prune_units: self.prune_units,
        }
    }

    pub fn spec(&self, arch: Arch, init: InitMode) -> Result<Spec> {
        self.request().spec(arch, init)
    }
}
