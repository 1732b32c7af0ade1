//! Filesystem writers. Each uses the trusted standard tool for its format and applies
//! the tree's metadata without privileges.

pub mod erofs;
pub mod ext4;
mod ext4_inodes;
pub mod xfs;

use std::process::Command;

use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FsType {
    Ext4,
    Xfs,
    Erofs,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Erofs => "erofs",
        }
    }

    /// Host tools this filesystem needs, with the Debian package that provides each.
    pub fn tools(self) -> &'static [(&'static str, &'static str)] {
        match self {
            FsType::Ext4 => &[("mkfs.ext4", "e2fsprogs"), ("debugfs", "e2fsprogs")],
            FsType::Xfs => &[("mkfs.xfs", "xfsprogs"), ("xfs_db", "xfsprogs")],
            FsType::Erofs => &[("mkfs.erofs", "erofs-utils"), ("fakeroot", "fakeroot")],
        }
    }
}

/// Run a tool; a failure carries its stderr.
pub fn run_tool(cmd: &mut Command, name: &str) -> Result<()> {
    let out = crate::process::output(cmd).map_err(|e| anyhow::anyhow!("running {name}: {e}"))?;
    if !out.status.success() {
        bail!(
            "{name} failed ({}): {}",
            out.status,
            crate::show::tool_output(&out.stderr, 8)
        );
    }
    Ok(())
}

/// Is `tool` on PATH (or in the sbin folders an unprivileged PATH may lack)?
pub fn find_tool(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Check every tool up front; name the Debian packages to install for those missing.
pub fn check_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<_> = tools
        .iter()
        .filter(|(t, _)| find_tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    pkgs.dedup();
    bail!(
        "missing host tool(s): {}. Install them with: apt-get install {}",
        missing
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
            .join(", "),
        pkgs.join(" ")
    )
}

/// A Command for `tool`, found on PATH or in the sbin folders.
pub fn tool(name: &str) -> Command {
    crate::process::command(find_tool(name).unwrap_or_else(|| name.into()))
}
