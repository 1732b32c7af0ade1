//! Reading a .deb (an ar archive: debian-binary, control.tar.*, data.tar.*): the control
//! members are kept for the dpkg database, the data member is streamed through the safe
//! extractor into the rootfs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The control archive of one package.
#[derive(Clone, Debug, Default)]
pub struct ControlInfo {
    /// The `control` file (one deb822 stanza).
    pub control: String,
    /// Other members by name: md5sums, conffiles, preinst, postinst, prerm, postrm,
    /// triggers, shlibs, symbols, templates, config…
    pub members: BTreeMap<String, Vec<u8>>,
}

fn decompressor<'a, R: Read + 'a>(name: &str, r: R) -> Result<Box<dyn Read + 'a>> {
    Ok(if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new(r))
    } else if name.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(r)?)
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(r))
    } else if name.ends_with(".tar") {
        Box::new(r)
    } else {
        bail!("unsupported .deb member compression: {name}")
    })
}

fn read_control<R: Read>(name: &str, r: R) -> Result<ControlInfo> {
    let mut ar = tar::Archive::new(decompressor(name, r)?);
    let mut info = ControlInfo::default();
    for e in ar.entries()? {
        let mut e = e?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e.path_bytes().into_owned();
        let base = path
            .rsplit(|b| *b == b'/')
            .next()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        if base.is_empty() || base.contains('/') {
            continue;
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        if base == "control" {
            info.control = String::from_utf8(data).context("control file is not UTF-8")?;
        } else {
            info.members.insert(base, data);
        }
    }
    if info.control.trim().is_empty() {
        bail!("control archive has no control file");
    }
    Ok(info)
}

/// A .deb read into memory: its control data and its decompressed data tar. Reading can
/// run on worker threads while the extractor (which must apply packages in order) works.
pub struct LoadedDeb {
    pub control: ControlInfo,
    pub data_tar: Vec<u8>,
}

/// Only the control archive of a .deb (the data member is not decompressed).
pub fn load_control(path: &Path, origin: &str) -> Result<ControlInfo> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ar = ar::Archive::new(std::io::BufReader::new(f));
    while let Some(entry) = ar.next_entry() {
        let entry = entry.with_context(|| format!("{origin}: not a valid .deb (ar) file"))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let name = name.trim_end_matches('/').to_string();
        if name.starts_with("control.tar") {
            return read_control(&name, entry).with_context(|| format!("{origin}: {name}"));
        }
    }
    bail!("{origin}: no control archive")
}

/// Read and decompress a .deb without touching any rootfs.
pub fn load_deb(path: &Path, origin: &str) -> Result<LoadedDeb> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ar = ar::Archive::new(std::io::BufReader::new(f));
    let mut control = None;
    let mut data = None;
    let mut magic_ok = false;
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.with_context(|| format!("{origin}: not a valid .deb (ar) file"))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let name = name.trim_end_matches('/').to_string();
        if name == "debian-binary" {
            let mut v = String::new();
            entry.read_to_string(&mut v)?;
            if !v.starts_with("2.") {
                bail!("{origin}: unsupported .deb format version {}", v.trim());
            }
            magic_ok = true;
        } else if name.starts_with("control.tar") {
            control =
                Some(read_control(&name, entry).with_context(|| format!("{origin}: {name}"))?);
        } else if name.starts_with("data.tar") {
            let mut buf = Vec::new();
            decompressor(&name, entry)?
                .read_to_end(&mut buf)
                .with_context(|| format!("{origin}: decompressing {name}"))?;
            data = Some(buf);
        }
    }
    if !magic_ok {
        bail!("{origin}: not a .deb (no debian-binary member)");
    }
    match (control, data) {
        (Some(control), Some(data_tar)) => Ok(LoadedDeb { control, data_tar }),
        _ => bail!("{origin}: .deb lacks a control or data member"),
    }
}
