//! ucf and ucfr on a fresh install: the shipped file is installed as the configuration
//! file, its md5sum recorded in /var/lib/ucf/hashfile (the previous hashfile kept as
//! hashfile.0, as ucf 3.0052 does), a copy cached for three-way merges, and the file
//! registered to its package in /var/lib/ucf/registry (previous versions rotated to
//! registry.0…7).

use anyhow::Result;
use md5::Digest as _;

use crate::pkg::extract::{Attrs, Extractor};

const STATE: &str = "var/lib/ucf";

fn rel(p: &str) -> &[u8] {
    p.trim_start_matches('/').as_bytes()
}

fn copy(ex: &mut Extractor, from: &str, to: &str, mtime: i64) -> Result<bool> {
    let Some(data) = ex.read_file(rel(from))? else {
        return Ok(false);
    };
    let st = ex.stat(rel(from))?;
    let a = Attrs {
        mode: st.map(|s| s.mode).unwrap_or(0o644),
        uid: st.map(|s| s.uid).unwrap_or(0),
        gid: st.map(|s| s.gid).unwrap_or(0),
        mtime,
    };
    ex.write_file(rel(to), &mut data.as_slice(), a)?;
    Ok(true)
}

fn lines(ex: &mut Extractor, p: &str) -> Result<Option<Vec<String>>> {
    Ok(ex.read_file(rel(p))?.map(|d| {
        String::from_utf8_lossy(&d)
            .lines()
            .map(String::from)
            .collect()
    }))
}

fn put(ex: &mut Extractor, p: &str, lines: &[String], mtime: i64) -> Result<()> {
    let mut t = lines.join("\n");
    if !lines.is_empty() {
        t.push('\n');
    }
    ex.write_file(rel(p), &mut t.as_bytes(), Attrs::root(0o644, mtime))?;
    Ok(())
}

/// `ucf [--three-way] [--debconf-ok] NEW DEST`. Returns an error text for what is not
/// emulated (a destination that exists already asks questions ucf answers itself only
/// for unchanged files).
pub fn ucf(
    ex: &mut Extractor,
    args: &[String],
    mtime: i64,
) -> Result<std::result::Result<(), String>> {
    let mut files = Vec::new();
    let mut three_way = false;
    for a in args {
        match a.as_str() {
            "--three-way" | "-3" => three_way = true,
            "--purge" | "-p" => return Ok(Ok(())),
            s if s.starts_with('-') => {}
            s => files.push(s.to_string()),
        }
    }
    let [new, dest] = files.as_slice() else {
        return Ok(Err(format!("ucf {}", args.join(" "))));
    };
    ex.create_dir(
        format!("{STATE}/cache").as_bytes(),
        Attrs::root(0o755, mtime),
    )?;
    let hashfile = format!("{STATE}/hashfile");
    let last = lines(ex, &hashfile)?;
    let registered = last
        .as_ref()
        .is_some_and(|l| l.iter().any(|x| x.ends_with(&format!("  {dest}"))));
    if ex.lstat(rel(dest))?.is_some() || registered {
        return Ok(Err(format!("ucf {new} {dest} over an existing file")));
    }
    let Some(data) = ex.read_file(rel(new))? else {
        return Ok(Err(format!("ucf: {new} is missing")));
    };
    copy(ex, new, dest, mtime)?;
    let sum = hex::encode(md5::Md5::digest(&data));
    let mut hash = Vec::new();
    if let Some(old) = last {
        put(ex, &format!("{STATE}/hashfile.0"), &old, mtime)?;
        hash = old;
    }
    hash.retain(|l| !l.ends_with(&format!("  {dest}")));
    hash.push(format!("{sum}  {dest}"));
    put(ex, &hashfile, &hash, mtime)?;
    if three_way || data.len() < 25600 {
        let cached = format!("{STATE}/cache/{}", dest.replace('/', ":"));
        copy(ex, new, &cached, mtime)?;
    }
    Ok(Ok(()))
}

/// `ucfr PACKAGE FILE`: associate a configuration file with its package.
pub fn ucfr(
    ex: &mut Extractor,
    args: &[String],
    mtime: i64,
) -> Result<std::result::Result<(), String>> {
    let plain: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--purge" || a == "-p") {
        return Ok(Ok(()));
    }
    let [pkg, file] = plain.as_slice() else {
        return Ok(Err(format!("ucfr {}", args.join(" "))));
    };
    ex.create_dir(STATE.as_bytes(), Attrs::root(0o755, mtime))?;
    let registry = format!("{STATE}/registry");
    let cur = lines(ex, &registry)?.unwrap_or_default();
    let entry = |l: &String| l.rsplit(' ').next() == Some(file.as_str());
    if let Some(l) = cur.iter().find(|l| entry(l)) {
        return Ok(if l.split(' ').next() == Some(pkg.as_str()) {
            Ok(())
        } else {
            Err(format!("ucfr {pkg} {file}: registered to another package"))
        });
    }
    for i in (0..7).rev() {
        if let Some(old) = lines(ex, &format!("{STATE}/registry.{i}"))? {
            put(ex, &format!("{STATE}/registry.{}", i + 1), &old, mtime)?;
        }
    }
    put(ex, &format!("{STATE}/registry.0"), &cur, mtime)?;
    let mut next = cur;
    next.push(format!("{pkg} \t {file}"));
    put(ex, &registry, &next, mtime)?;
    Ok(Ok(()))
}
