//! The installed-package database of the new rootfs, `var/lib/rpm/rpmdb.sqlite`, in rpm
//! ≥ 4.16's sqlite format, so `rpm -qa` (and `rpm -qf`, `rpm -V`) in the guest — or
//! `rpm --root ROOTFS --dbpath /var/lib/rpm -qa` on the host — list what was installed.
//!
//! Each package's row is its signed main header exactly as shipped (the immutable region
//! stays byte-identical, so rpm can still check its signature) plus the tags rpm adds at
//! install time, appended after the region the way rpm does: the legacy signature tags,
//! INSTALLTIME/INSTALLTID (the build timestamp, so rebuilds are identical), FILESTATES,
//! INSTALLCOLOR. The index tables (Name, Basenames, Providename…) are filled as rpm fills
//! them. The database is built in memory and serialised, so its bytes depend only on
//! the packages and the timestamp.

use anyhow::{Context, Result};
use rusqlite::Connection;

use super::header::{Header, export_with, ty};
use super::package::RpmFile;
use super::tags as t;

/// Index tables rpm keeps, with the header tag each indexes (rpm 4.18's dbi list).
const INDEXES: [(&str, u32); 14] = [
    ("Name", t::NAME),
    ("Basenames", t::BASENAMES),
    ("Group", t::GROUP),
    ("Requirename", t::REQUIRENAME),
    ("Providename", t::PROVIDENAME),
    ("Conflictname", t::CONFLICTNAME),
    ("Obsoletename", t::OBSOLETENAME),
    ("Triggername", t::TRIGGERNAME),
    ("Dirnames", t::DIRNAMES),
    ("Filetriggername", t::FILETRIGGERNAME),
    ("Transfiletriggername", t::TRANSFILETRIGGERNAME),
    ("Recommendname", t::RECOMMENDNAME),
    ("Suggestname", t::SUGGESTNAME),
    ("Supplementname", t::SUPPLEMENTNAME),
];
const MORE_INDEXES: [(&str, u32); 1] = [("Enhancename", t::ENHANCENAME)];
/// Tables with a BLOB key.
const BLOB_INDEXES: [&str; 2] = ["Installtid", "Sigmd5"];

fn be(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// RPMFILE_STATE_NORMAL: the file is installed.
pub const STATE_NORMAL: u8 = 0;
/// RPMFILE_STATE_NOTINSTALLED: left out on purpose (rpm's --excludedocs, osbuilder's path
/// filters).
pub const STATE_NOT_INSTALLED: u8 = 2;

/// The header rpm stores for an installed package; `states` holds each file's
/// RPMFILE_STATE_*, in header order.
fn installed_header(rpm: &RpmFile, states: &[u8], install_time: u32) -> Vec<u8> {
    let sig = &rpm.signature;
    let h = &rpm.header;
    let mut extra: Vec<(u32, u32, u32, Vec<u8>)> = Vec::new();
    if let Some(v) = sig.int(t::SIG_SIZE) {
        extra.push((t::INST_SIGSIZE, ty::INT32, 1, be(v as u32)));
    }
    for (from, to) in [
        (t::SIG_PGP, t::INST_SIGPGP),
        (t::SIG_MD5, t::INST_SIGMD5),
        (t::SIG_DSA, t::INST_DSAHEADER),
        (t::SIG_RSA, t::INST_RSAHEADER),
    ] {
        if let Some(b) = sig.bin(from) {
            if !h.has(to) {
                extra.push((to, ty::BIN, b.len() as u32, b.to_vec()));
            }
        }
    }
    for (from, to) in [
        (t::SIG_SHA1, t::INST_SHA1HEADER),
        (t::SIG_SHA256, t::INST_SHA256HEADER),
    ] {
        if let Some(s) = sig.string(from) {
            if !h.has(to) {
                let mut b = s.into_bytes();
                b.push(0);
                extra.push((to, ty::STRING, 1, b));
            }
        }
    }
    extra.push((t::INSTALLTIME, ty::INT32, 1, be(install_time)));
    let nfiles = h
        .strings(t::BASENAMES)
        .len()
        .max(h.strings(t::OLDFILENAMES).len());
    if nfiles > 0 {
        let mut states = states.to_vec();
        states.resize(nfiles, STATE_NORMAL);
        extra.push((t::FILESTATES, ty::CHAR, nfiles as u32, states));
    }
    if let Some(v) = sig.int(t::SIG_PAYLOADSIZE) {
        if !h.has(t::ARCHIVESIZE) {
            extra.push((t::ARCHIVESIZE, ty::INT32, 1, be(v as u32)));
        }
    }
    extra.push((t::INSTALLCOLOR, ty::INT32, 1, be(0)));
    extra.push((t::INSTALLTID, ty::INT32, 1, be(install_time)));
    extra.sort_by_key(|e| e.0);
    export_with(h, &extra)
}

/// The rows of one index table for a header: (key, idx).
fn keys(h: &Header, tag: u32) -> Vec<(String, u32)> {
    let mut v = h.strings(tag);
    if tag == t::NAME || tag == t::GROUP {
        v.truncate(1);
    }
    v.into_iter()
        .enumerate()
        .filter(|(_, k)| !k.is_empty())
        .map(|(i, k)| (k, i as u32))
        .collect()
}

/// Where rpm keeps the database in a root (rpm ≥ 4.16, sqlite; Azure Linux and Clear
/// Linux use /var/lib/rpm, and so does a Debian builder told `%_dbpath /var/lib/rpm`).
pub const PATH: &str = "var/lib/rpm/rpmdb.sqlite";

/// The packages an rpm database lists, as (name, [epoch:]version-release, arch): what
/// `rpm -qa` shows, read from the database the builder container's rpm wrote. The
/// `gpg-pubkey` entries rpm adds when it imports a signing key are keys, not packages:
/// left out.
pub fn installed(root: &std::path::Path) -> Result<Vec<(String, String, String)>> {
    let path = root.join(PATH);
    if !path.is_file() {
        anyhow::bail!(
            "the builder left no rpm database in the rootfs ({}): did its installer run, and \
             with %_dbpath /var/lib/rpm?",
            crate::show::path(&path)
        );
    }
    let db = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", crate::show::path(&path)))?;
    let mut stmt = db
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
        .with_context(|| format!("reading {}", crate::show::path(&path)))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (hnum, blob) = row?;
        let mut raw = super::header::MAGIC.to_vec();
        raw.extend_from_slice(&blob);
        let h = Header::parse(raw, &format!("{} package {hnum}", crate::show::path(&path)))?;
        let name = h.string(t::NAME).unwrap_or_default();
        if name == "gpg-pubkey" {
            continue;
        }
        let evr = super::version::Evr {
            epoch: h.int(t::EPOCH),
            version: h.string(t::VERSION).unwrap_or_default(),
            release: h.string(t::RELEASE).unwrap_or_default(),
        };
        out.push((name, evr.to_string(), h.string(t::ARCH).unwrap_or_default()));
    }
    Ok(out)
}

/// Build rpmdb.sqlite for `packages` (in install order, each with its files' states) and
/// return its bytes.
pub fn build(packages: &[(&RpmFile, Vec<u8>)], install_time: i64) -> Result<Vec<u8>> {
    let install_time = install_time.clamp(0, u32::MAX as i64) as u32;
    let db = Connection::open_in_memory().context("creating the rpm database")?;
    let mut sql = String::from(
        "CREATE TABLE 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT,blob BLOB NOT NULL);\n",
    );
    for (name, _) in INDEXES.iter().chain(&MORE_INDEXES) {
        sql.push_str(&format!(
            "CREATE TABLE '{name}' (key 'TEXT' NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL, \
             FOREIGN KEY (hnum) REFERENCES 'Packages'(hnum));\n\
             CREATE INDEX '{name}_key_idx' ON '{name}'(key ASC);\n"
        ));
        if *name != "Name" && *name != "Group" {
            sql.push_str(&format!(
                "CREATE INDEX '{name}_hnum_idx' ON '{name}'(hnum ASC);\n"
            ));
        }
    }
    for name in BLOB_INDEXES {
        sql.push_str(&format!(
            "CREATE TABLE '{name}' (key 'BLOB' NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL, \
             FOREIGN KEY (hnum) REFERENCES 'Packages'(hnum));\n"
        ));
    }
    sql.push_str(
        "CREATE TABLE 'Sha1header' (key 'TEXT' NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL, \
         FOREIGN KEY (hnum) REFERENCES 'Packages'(hnum));\n\
         CREATE INDEX 'Sha1header_key_idx' ON 'Sha1header'(key ASC);\n",
    );
    db.execute_batch(&sql)
        .context("creating the rpm database")?;
    let tx = db.unchecked_transaction()?;
    for (n, (rpm, states)) in packages.iter().enumerate() {
        let hnum = n as i64 + 1;
        let blob = installed_header(rpm, states, install_time);
        tx.execute(
            "INSERT INTO Packages (hnum, blob) VALUES (?1, ?2)",
            rusqlite::params![hnum, blob],
        )?;
        for (table, tag) in INDEXES.iter().chain(&MORE_INDEXES) {
            for (key, idx) in keys(&rpm.header, *tag) {
                tx.execute(
                    &format!("INSERT INTO '{table}' (key, hnum, idx) VALUES (?1, ?2, ?3)"),
                    rusqlite::params![key, hnum, idx],
                )?;
            }
        }
        // rpm keys Installtid by the native (little-endian) bytes of the id.
        tx.execute(
            "INSERT INTO Installtid (key, hnum, idx) VALUES (?1, ?2, 0)",
            rusqlite::params![install_time.to_le_bytes().to_vec(), hnum],
        )?;
        if let Some(md5) = rpm.signature.bin(t::SIG_MD5) {
            tx.execute(
                "INSERT INTO Sigmd5 (key, hnum, idx) VALUES (?1, ?2, 0)",
                rusqlite::params![md5.to_vec(), hnum],
            )?;
        }
        if let Some(sha1) = rpm.signature.string(t::SIG_SHA1) {
            tx.execute(
                "INSERT INTO Sha1header (key, hnum, idx) VALUES (?1, ?2, 0)",
                rusqlite::params![sha1, hnum],
            )?;
        }
    }
    tx.commit()?;
    let data = db
        .serialize(rusqlite::MAIN_DB)
        .context("serialising the rpm database")?;
    Ok(data.to_vec())
}
