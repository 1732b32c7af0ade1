//! Installing Alpine packages into a root: signed indexes → resolution (the plan) →
//! verified packages extracted → apk's own database, without running anything from the
//! target. [`super::backend`] puts it behind the package-backend interface.
//!
//! [`Indexes::load`] fetches `MIRROR/v<ver>/<component>/<arch>/APKINDEX.tar.gz` for each
//! component and verifies it; [`Indexes::resolve`] resolves the world. [`populate`]
//! verifies each downloaded package (signature, control checksum, datahash), extracts its
//! data segment, makes what install scripts would have made (busybox applet links,
//! /etc/shadow's group, console and null devices) and writes /lib/apk/db and /etc/apk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine;

use super::busybox;
use super::db::{self, EntryKind, ManifestEntry};
use super::index::{self, Package};
use super::package::{self, Scripts, hex};
use super::resolve::Resolver;
use super::sign::{Keyring, gzip_members};
use super::version::Dep;
use crate::arch::Arch;
use crate::distro::Distro;
use crate::pkg::Digest;
use crate::pkg::extract::{Attrs, Extractor};
use crate::pkg::fetch::{Fetcher, join_url, required};

/// Which repository to read and what to trust.
#[derive(Clone, Debug)]
pub struct Options {
    pub arch: Arch,
    /// `3.22` (or `v3.22`) or `edge`.
    pub version: String,
    /// The mirror root (holding `v3.22/`, `edge/`).
    pub mirror: String,
    /// Extra folders of trusted `.rsa.pub` keys (`--keys-dir`).
    pub keys_dirs: Vec<PathBuf>,
}

/// `v3.22` or `edge`: the release folder under the mirror.
pub fn release_dir(version: &str) -> Result<String> {
    let v = version.trim().trim_start_matches('v');
    if v == "edge" {
        return Ok("edge".into());
    }
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(format!("v{v}"));
    }
    bail!("Alpine version '{version}' is not a release number like 3.22, or 'edge'")
}

/// Alpine's keys shipped in distros/alpine/keys, plus every `--keys-dir`.
pub fn keyring(distro: &Distro, extra: &[PathBuf]) -> Result<Keyring> {
    let mut k = Keyring::new();
    if let Some(dir) = &distro.keys_dir {
        for (name, pem) in distro.files_under(dir) {
            if name.ends_with(".pub") {
                k.add_pem(name, pem)
                    .with_context(|| format!("distros/{}/{dir}/{name}", distro.name))?;
            }
        }
    }
    for d in extra {
        k.add_dir(d)?;
    }
    if k.is_empty() {
        bail!(
            "no trusted apk keys: distros/{}/ has none and no --keys-dir was given",
            distro.name
        );
    }
    Ok(k)
}

/// One repository (component) whose index verified.
pub struct Repo {
    /// `MIRROR/v3.22/main`: the line for /etc/apk/repositories.
    pub base: String,
    pub signed_by: String,
}

/// The verified indexes of every component: the packages installable on the target arch
/// (its own and noarch), each with the repository it comes from.
pub struct Indexes {
    pub repos: Vec<Repo>,
    pub packages: Vec<Package>,
    /// `repo_of[i]`: index into `repos` of `packages[i]`.
    pub repo_of: Vec<usize>,
}

/// A resolved world: package indices into [`Indexes::packages`], install order.
pub struct Plan<'a> {
    pub indexes: &'a Indexes,
    pub packages: Vec<usize>,
    pub world: Vec<Dep>,
}

impl Plan<'_> {
    /// The planned packages, in install order.
    pub fn iter(&self) -> impl Iterator<Item = &Package> {
        self.packages.iter().map(|&i| &self.indexes.packages[i])
    }
}

impl Indexes {
    /// Fetch and verify `MIRROR/v<ver>/<component>/<arch>/APKINDEX.tar.gz` for each component.
    pub fn load(
        distro: &Distro,
        opts: &Options,
        keys: &Keyring,
        fetcher: &Fetcher,
    ) -> Result<Indexes> {
        let release = release_dir(&opts.version)?;
        let components = if distro.components.is_empty() {
            vec!["main".to_string()]
        } else {
            distro.components.clone()
        };
        let mut idx = Indexes {
            repos: Vec::new(),
            packages: Vec::new(),
            repo_of: Vec::new(),
        };
        for comp in &components {
            let base = join_url(&opts.mirror, &format!("{release}/{comp}"));
            let url = join_url(&base, &format!("{}/APKINDEX.tar.gz", opts.arch.alpine()));
            let bytes = required(fetcher.get_index(&url)).with_context(|| {
                format!(
                    "fetching the Alpine index {url} (a mirror is laid out as \
                     MIRROR/{release}/{comp}/{}/APKINDEX.tar.gz)",
                    opts.arch.alpine()
                )
            })?;
            let loaded = index::load(&bytes, keys, &url)?;
            let r = idx.repos.len();
            for p in loaded.packages {
                // An index holds its arch's packages and noarch ones; anything else is
                // refused rather than installed on the wrong machine.
                if p.arch == opts.arch.alpine() || p.arch == "noarch" {
                    idx.packages.push(p);
                    idx.repo_of.push(r);
                }
            }
            idx.repos.push(Repo {
                base,
                signed_by: loaded.signed_by,
            });
        }
        Ok(idx)
    }

    /// Resolve the world (package names or constraints: `busybox`, `musl>=1.2`, `so:…`).
    pub fn resolve(&self, world: &[String]) -> Result<Plan<'_>> {
        let world: Vec<Dep> = world
            .iter()
            .map(|s| Dep::parse(s).map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?;
        if world.is_empty() {
            bail!("no packages requested");
        }
        let res = Resolver::new(&self.packages).resolve(&world)?;
        Ok(Plan {
            indexes: self,
            packages: res.indices,
            world,
        })
    }

    /// Where package `i` is downloaded from.
    pub fn url_of(&self, i: usize, arch: Arch) -> String {
        join_url(
            &self.repos[self.repo_of[i]].base,
            &format!("{}/{}", arch.alpine(), self.packages[i].file_name()),
        )
    }
}

/// The digest the cache files a package under: the index's `C:` (SHA-1 of the control
/// member), checked over the whole downloaded file by splitting its gzip members.
pub fn control_digest(p: &Package) -> Result<Digest> {
    let b64 = p
        .checksum
        .strip_prefix("Q1")
        .with_context(|| format!("{}: unsupported checksum '{}' (not Q1)", p.name, p.checksum))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .with_context(|| format!("{}: bad checksum '{}'", p.name, p.checksum))?;
    fn compute(r: &mut dyn std::io::Read) -> Result<String> {
        let mut data = Vec::new();
        r.read_to_end(&mut data)?;
        let m = gzip_members(&data)?;
        let control = m.get(1).context("not an apk: fewer than 2 gzip members")?;
        use sha1::Digest as _;
        Ok(hex(&sha1::Sha1::digest(&data[control.clone()])))
    }
    Ok(Digest::Custom {
        name: "apk-control-sha1",
        hex: hex(&raw),
        compute,
    })
}

/// What [`populate`] made besides the packages' own files.
pub struct Populated {
    pub busybox_links: usize,
    /// Where the applet list came from.
    pub busybox_source: &'static str,
}

/// Verify and extract every package (`files`: the downloaded .apk files, in plan order)
/// through `x`, then write what apk and the install scripts would have: apk's database
/// and configuration, busybox's applet links, /etc/shadow's group, /dev/console and
/// /dev/null. `t` stamps the files osbuilder writes.
pub fn populate(
    x: &mut Extractor,
    distro: &Distro,
    opts: &Options,
    plan: &Plan<'_>,
    keys: &Keyring,
    files: &[PathBuf],
    t: i64,
) -> Result<Populated> {
    let mut installed: Vec<(Package, Vec<ManifestEntry>)> = Vec::new();
    let mut scripts: Vec<(Package, Scripts)> = Vec::new();
    // Every path a package put in the root, as named and as resolved in-root.
    let mut present: BTreeSet<Vec<u8>> = BTreeSet::new();
    // Which package owns each non-directory path (index into `installed`).
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    // Verification and manifests (RSA, hashes, decompression) run on all cores; the
    // extraction is sequential, in dependency order.
    let items: Vec<(&Package, &PathBuf)> = plan.iter().zip(files).collect();
    let jobs = crate::parallel::cpu_jobs();
    crate::parallel::ordered(
        &items,
        jobs,
        (jobs * 4).max(8),
        |_, (p, f)| check_one(p, keys, f),
        |i, c| {
            let pkg = items[i].0;
            let Checked {
                bytes,
                data_offset,
                scripts: pkg_scripts,
                manifest,
            } = c;
            let data = &bytes[data_offset..];
            let what = pkg.file_name();
            // apk refuses to overwrite another package's file unless the new one `replaces`
            // it; the file then belongs to the new package alone.
            let me = installed.len();
            for e in manifest.iter().filter(|e| e.kind != EntryKind::Dir) {
                if let Some(&prev) = owner.get(&e.path) {
                    let prev_name = installed[prev].0.name.clone();
                    if !replaces(pkg, &prev_name) {
                        bail!(
                            "{what} would overwrite /{}, which belongs to {prev_name}, and does \
                             not declare that it replaces it; the repository is inconsistent",
                            e.path
                        );
                    }
                    installed[prev].1.retain(|x| x.path != e.path);
                }
                owner.insert(e.path.clone(), me);
            }
            let gz = flate2::read::MultiGzDecoder::new(data);
            let placed = x.unpack(gz, &what)?;
            for i in placed.into_iter().filter(|i| !i.left_out) {
                present.insert(i.path.strip_prefix(b"/").unwrap_or(&i.path).to_vec());
                present.insert(i.on_disk);
            }
            // The index entry carries everything the db needs; the verified .PKGINFO agrees.
            let mut info = pkg.clone();
            info.size = bytes.len() as u64;
            installed.push((info.clone(), manifest));
            scripts.push((info, pkg_scripts));
            Ok(())
        },
    )?;
    let db_text: String = installed
        .iter()
        .map(|(p, m)| db::installed_record(p, m))
        .collect();

    let (busybox_links, busybox_source) = busybox_links(x, &present, t)?;
    shadow_group(x, t)?;
    device_nodes(x, &present, t)?;
    write_apk_state(x, distro, opts, plan, &present, &db_text, &scripts, t)?;
    Ok(Populated {
        busybox_links,
        busybox_source,
    })
}

/// A downloaded package that passed verification, with its data-segment manifest.
struct Checked {
    bytes: Vec<u8>,
    data_offset: usize,
    scripts: Scripts,
    manifest: Vec<ManifestEntry>,
}

fn check_one(p: &Package, keys: &Keyring, f: &std::path::Path) -> Result<Checked> {
    let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
    let v = package::verify(&bytes, keys, p)?;
    let manifest = db::manifest(v.data, &p.file_name())?;
    let data_offset = v.data.as_ptr() as usize - bytes.as_ptr() as usize;
    let scripts = v.scripts;
    Ok(Checked {
        bytes,
        data_offset,
        scripts,
        manifest,
    })
}

/// Whether `p` declares `r:` (replaces) for package `name`.
fn replaces(p: &Package, name: &str) -> bool {
    p.replaces
        .iter()
        .any(|r| Dep::parse(r).map(|d| d.name == name).unwrap_or(r == name))
}

/// The applet links of busybox's `--install -s`, from data only (see busybox.rs).
fn busybox_links(
    x: &mut Extractor,
    present: &BTreeSet<Vec<u8>>,
    t: i64,
) -> Result<(usize, &'static str)> {
    if !present.contains(b"bin/busybox".as_slice()) {
        return Ok((0, "no busybox"));
    }
    let (paths, source) = match x.read_file(b"etc/busybox-paths.d/busybox")? {
        Some(list) => (
            busybox::parse_paths_list(&String::from_utf8_lossy(&list)),
            "etc/busybox-paths.d/busybox",
        ),
        None => {
            let bin = x
                .read_file(b"bin/busybox")?
                .context("bin/busybox is not a regular file")?;
            let names = busybox::applet_names_from_binary(&bin).context(
                "busybox ships no etc/busybox-paths.d/busybox and its applet table was not \
                 found in bin/busybox; cannot make the applet links",
            )?;
            let table = crate::distro::DistroSet::embedded()
                .ok()
                .and_then(|s| {
                    s.get("alpine")
                        .and_then(|d| d.file("busybox-paths").map(<[u8]>::to_vec))
                })
                .unwrap_or_default();
            (
                busybox::place_applets(&names, &String::from_utf8_lossy(&table)),
                "the applet table in bin/busybox",
            )
        }
    };
    let mut made = 0;
    for p in paths {
        let b = p.as_bytes();
        if present.contains(b) || b == b"bin/busybox" {
            continue;
        }
        x.symlink(b, b"/bin/busybox", Attrs::root(0o777, t))?;
        made += 1;
    }
    Ok((made, source))
}

/// The two device nodes a guest needs before devtmpfs is mounted: the kernel opens
/// /dev/console for PID 1 of an initramfs, and early scripts write to /dev/null. Alpine
/// leaves /dev empty (mdev or devtmpfs fill it); as an initrd, the rootfs needs these.
/// Rootless builds record them in the metadata only.
fn device_nodes(x: &mut Extractor, present: &BTreeSet<Vec<u8>>, t: i64) -> Result<()> {
    use crate::tree::mtree::MType;
    for (path, dev, mode) in [
        (&b"dev/console"[..], (5, 1), 0o600),
        (b"dev/null", (1, 3), 0o666),
    ] {
        if !present.contains(path) {
            x.special(path, MType::Char, dev, Attrs::root(mode, t))?;
        }
    }
    Ok(())
}

/// alpine-baselayout's post-install: `chown root:shadow /etc/shadow; chmod 640`.
fn shadow_group(x: &mut Extractor, t: i64) -> Result<()> {
    let (Some(shadow), Some(group)) = (x.read_file(b"etc/shadow")?, x.read_file(b"etc/group")?)
    else {
        return Ok(());
    };
    let Some(gid) = db::group_id(&group, "shadow") else {
        return Ok(());
    };
    x.write_file(
        b"etc/shadow",
        &mut shadow.as_slice(),
        Attrs {
            mode: 0o640,
            uid: 0,
            gid,
            mtime: t,
        },
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_apk_state(
    x: &mut Extractor,
    distro: &Distro,
    opts: &Options,
    plan: &Plan<'_>,
    present: &BTreeSet<Vec<u8>>,
    db_text: &str,
    scripts: &[(Package, Scripts)],
    t: i64,
) -> Result<()> {
    let dir = |x: &mut Extractor, p: &[u8]| x.create_dir(p, Attrs::root(0o755, t));
    let file = |x: &mut Extractor, p: &[u8], body: &[u8]| {
        x.write_file(p, &mut &body[..], Attrs::root(0o644, t))
    };
    for d in [
        &b"etc/apk"[..],
        b"etc/apk/keys",
        b"lib/apk/db",
        b"var/cache/apk",
    ] {
        dir(x, d)?;
    }
    let mut world: Vec<String> = plan.world.iter().map(|d| d.to_string()).collect();
    world.sort();
    world.dedup();
    file(
        x,
        b"etc/apk/world",
        format!("{}\n", world.join("\n")).as_bytes(),
    )?;
    let repos: String = plan
        .indexes
        .repos
        .iter()
        .map(|r| format!("{}\n", r.base))
        .collect();
    file(x, b"etc/apk/repositories", repos.as_bytes())?;
    file(
        x,
        b"etc/apk/arch",
        format!("{}\n", opts.arch.alpine()).as_bytes(),
    )?;
    // The keys this build trusted, so `apk` in the guest trusts the same ones; a key
    // that a package (alpine-keys) already put there is its own and stays as it is.
    let key = |x: &mut Extractor, name: &str, pem: &[u8]| -> Result<()> {
        let path = format!("etc/apk/keys/{name}");
        if !present.contains(path.as_bytes()) {
            file(x, path.as_bytes(), pem)?;
        }
        Ok(())
    };
    if let Some(kd) = &distro.keys_dir {
        for (name, pem) in distro.files_under(kd) {
            key(x, name, pem)?;
        }
    }
    for d in &opts.keys_dirs {
        let mut names: Vec<PathBuf> = std::fs::read_dir(d)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            .collect();
        names.sort();
        for p in names {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            key(x, &name, &std::fs::read(&p)?)?;
        }
    }
    file(x, b"lib/apk/db/installed", db_text.as_bytes())?;
    let tar = db::scripts_tar(scripts, t.max(0) as u64)?;
    file(x, b"lib/apk/db/scripts.tar", &tar)?;
    file(x, b"lib/apk/db/triggers", b"")?;
    file(x, b"lib/apk/db/lock", b"")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dirs() {
        assert_eq!(release_dir("3.22").unwrap(), "v3.22");
        assert_eq!(release_dir("v3.16").unwrap(), "v3.16");
        assert_eq!(release_dir("edge").unwrap(), "edge");
        assert!(release_dir("3").is_err());
        assert!(release_dir("3.22/../x").is_err());
        assert!(release_dir("bookworm").is_err());
    }
}
