//! The EFI system partition: a FAT32 filesystem written with mtools straight into its
//! partition inside the image file (`-i IMAGE@@OFFSET`), no mount, no loop device.
//!
//! mtools rather than a FAT crate: the `fatfs` crate's directories fail `fsck.fat -n`
//! (reference/crates.md), and mtools is the tool firmware vendors and distros check ESPs
//! with. Reproducible: the volume serial comes from the image seed, every timestamp from
//! SOURCE_DATE_EPOCH (mtools honours it), and the host's mtools configuration is ignored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::fs::{run_tool, tool};
use super::layout::Extent;
use super::mbr::SECTOR;
use super::size::MIB;

/// Host tools, with the Debian package that provides them.
pub const TOOLS: &[(&str, &str)] = &[
    ("mformat", "mtools"),
    ("mmd", "mtools"),
    ("mcopy", "mtools"),
];

/// GPT partition type of an EFI system partition.
pub const TYPE_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

/// FAT32 needs at least 65525 clusters; with 512-byte clusters that is about 33 MiB.
pub const MIN_BYTES: u64 = 64 * MIB;

/// One file to put on the ESP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspFile {
    /// Path on the ESP, `/`-separated, without a leading slash (`EFI/BOOT/BOOTX64.EFI`).
    pub path: String,
    /// Where its bytes are on the host.
    pub source: PathBuf,
}

/// Bytes the files take on a FAT32 volume with 4 KiB clusters (what mformat picks for the
/// sizes used here), plus room for the FATs, directories and the reserved area.
pub fn bytes_needed(files: &[EspFile]) -> Result<u64> {
    let mut data = 0u64;
    for f in files {
        let len = std::fs::metadata(&f.source)
            .with_context(|| format!("reading {} for the ESP", crate::show::path(&f.source)))?
            .len();
        data += len.div_ceil(4096) * 4096;
    }
    // FATs (2 × 4 bytes per 4 KiB cluster), directory clusters, reserved sectors: a few MiB.
    Ok(data + data / 512 + 4 * MIB)
}

/// Format `part` of `image` as FAT32 labelled `ESP` and copy `files` onto it.
pub fn write(
    image: &Path,
    part: Extent,
    files: &[EspFile],
    serial: u32,
    epoch: Option<i64>,
) -> Result<()> {
    let need = bytes_needed(files)?;
    if need > part.len {
        bail!(
            "the EFI system partition ({} MiB) cannot hold the {} MiB of boot files; give a \
             larger --esp-mb",
            part.len / MIB,
            need.div_ceil(MIB)
        );
    }
    let target = format!("{}@@{}", image.display(), part.start);
    let mtools = |name: &str| -> Command {
        let mut c = tool(name);
        // Never the host's or the user's mtools configuration, and no geometry checks (the
        // volume is a partition of a file, not a floppy).
        c.env("MTOOLSRC", "/dev/null").env("MTOOLS_SKIP_CHECK", "1");
        match epoch {
            Some(t) => c.env("SOURCE_DATE_EPOCH", t.to_string()),
            None => c.env_remove("SOURCE_DATE_EPOCH"),
        };
        c.arg("-i").arg(&target);
        c
    };
    let mut fmt = mtools("mformat");
    fmt.args(["-F", "-v", "ESP", "-N", &format!("{serial:08x}")])
        .args(["-T", &(part.len / SECTOR).to_string()])
        .args(["-H", &(part.start / SECTOR).to_string()])
        .arg("::");
    run_tool(&mut fmt, "mformat")?;

    let mut dirs = BTreeSet::new();
    for f in files {
        let mut at = String::new();
        let parts: Vec<&str> = f.path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            at = if at.is_empty() {
                p.to_string()
            } else {
                format!("{at}/{p}")
            };
            dirs.insert(at.clone());
        }
    }
    // BTreeSet order puts every parent before its children.
    if !dirs.is_empty() {
        let mut mmd = mtools("mmd");
        mmd.args(dirs.iter().map(|d| format!("::/{d}")));
        run_tool(&mut mmd, "mmd")?;
    }
    let mut sorted: Vec<&EspFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for f in sorted {
        let mut cp = mtools("mcopy");
        cp.arg(&f.source).arg(format!("::/{}", f.path));
        run_tool(&mut cp, "mcopy")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_files_is_rounded_to_clusters() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a");
        std::fs::write(&f, vec![1u8; 5000]).unwrap();
        let files = vec![EspFile {
            path: "EFI/BOOT/A".into(),
            source: f,
        }];
        assert_eq!(bytes_needed(&files).unwrap(), 8192 + 16 + 4 * MIB);
    }
}
