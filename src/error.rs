//! The library's error kinds. Everything below the CLI returns `anyhow::Result`, with context
//! that says what was being done; the few failures a caller must tell apart carry one of these
//! typed kinds somewhere in their chain. Only `cli` turns a kind into an exit status (see
//! [`Error::is_refused`]): the library never decides how the process ends.

use std::fmt;

/// A failure a caller can match on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request was refused before any work started: an unsupported distro × arch × init
    /// cell, an unknown name, a bad combination of options, an output path osbuilder will not
    /// write to. The message says what to change. The CLI exits with status 2.
    #[error("{0}")]
    Refused(String),
    /// A cell the compatibility matrix does not have (a refusal, with the supported cells).
    #[error(transparent)]
    Unsupported(#[from] crate::matrix::Unsupported),
    /// An architecture name osbuilder does not know (a refusal).
    #[error(transparent)]
    UnknownArch(#[from] crate::arch::UnknownArch),
}

impl Error {
    /// True for every kind that means "the request was refused" (exit status 2).
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            Error::Refused(_) | Error::Unsupported(_) | Error::UnknownArch(_)
        )
    }
}

/// A refused request as an `anyhow::Error`: `return Err(refused(format!(…)))`.
pub fn refused(msg: impl fmt::Display) -> anyhow::Error {
    Error::Refused(msg.to_string()).into()
}

/// Whether any error in the chain is a refusal.
pub fn is_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<Error>().is_some_and(Error::is_refused)
            || c.downcast_ref::<crate::matrix::Unsupported>().is_some()
            || c.downcast_ref::<crate::arch::UnknownArch>().is_some()
    })
}

/// Whether the chain says a disk filled up: ENOSPC from our own I/O, or a tool's
/// "No space left on device".
pub fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::ENOSPC))
            || c.to_string().contains("No space left on device")
    })
}

/// A full disk said as what it is. Tools report it in their own terms (mkfs.ext4: "No space
/// left on device while populating file system", which reads like a sizing bug): when `e`
/// is one, it becomes one line naming the folder whose disk is full, how much is free there,
/// and what to do. Other errors pass through.
pub fn explain_disk_full(e: anyhow::Error, dir: &std::path::Path, what: &str) -> anyhow::Error {
    if !is_disk_full(&e) {
        return e;
    }
    let free = rustix::fs::statvfs(dir)
        .map(|s| format!(" ({} MiB free)", (s.f_bavail * s.f_frsize) >> 20))
        .unwrap_or_default();
    anyhow::anyhow!(
        "no space left on the disk holding {}{free} while writing {what}: free space there, \
         or write {what} elsewhere with -o",
        crate::show::path(dir)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn refusals_are_found_through_context() {
        let e: anyhow::Result<()> = Err(refused("bad flag"));
        let e = e.context("building the rootfs").unwrap_err();
        assert!(is_refused(&e));
        assert_eq!(format!("{e:#}"), "building the rootfs: bad flag");
        let other = anyhow::anyhow!("disk full").context("writing");
        assert!(!is_refused(&other));
        let m: anyhow::Error = crate::matrix::Unsupported("no".into()).into();
        assert!(is_refused(&m.context("x")));
    }

    #[test]
    fn a_full_disk_is_named_as_such() {
        let ours = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("writing x.img");
        let tool = anyhow::anyhow!(
            "mkfs.ext4 failed: mkfs.ext4: No space left on device while populating file system"
        )
        .context("mkfs.ext4 could not fill 24 MiB with r");
        for e in [ours, tool] {
            let msg = explain_disk_full(e, std::path::Path::new("/"), "the image").to_string();
            assert!(
                msg.starts_with("no space left on the disk holding / (")
                    && msg.contains("MiB free) while writing the image")
                    && !msg.contains("could not fill"),
                "{msg}"
            );
        }
        let other = anyhow::anyhow!("mkfs.ext4 failed: bad superblock");
        assert_eq!(
            explain_disk_full(other, std::path::Path::new("/"), "x").to_string(),
            "mkfs.ext4 failed: bad superblock"
        );
    }
}
