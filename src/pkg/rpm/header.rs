//! RPM headers, the structure both the signature header and the main header use: an
//! 16-byte intro (magic `8E AD E8 01`, 4 reserved bytes, index count, store size), 16-byte
//! index entries (tag, type, offset, count) and the data store. Read with bounds checks
//! on every entry (a hostile header is an error, never a panic), and kept as the raw bytes
//! the signatures and digests cover.

use std::io::Read;

use anyhow::{Context, Result, bail};

/// The header magic, version 1, and the 4 reserved bytes.
pub const MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
/// rpm's own limits (hdrblobVerifyInfo): 64 Ki entries, 256 MiB of data.
const MAX_ENTRIES: u32 = 0xffff;
const MAX_STORE: u32 = 0x0fff_ffff;

/// Entry data types.
pub mod ty {
    pub const NULL: u32 = 0;
    pub const CHAR: u32 = 1;
    pub const INT8: u32 = 2;
    pub const INT16: u32 = 3;
    pub const INT32: u32 = 4;
    pub const INT64: u32 = 5;
    pub const STRING: u32 = 6;
    pub const BIN: u32 = 7;
    pub const STRING_ARRAY: u32 = 8;
    pub const I18NSTRING: u32 = 9;
}

/// One index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tag: u32,
    pub ty: u32,
    pub offset: u32,
    pub count: u32,
}

/// A parsed header and the exact bytes it was read from.
#[derive(Clone, Debug)]
pub struct Header {
    raw: Vec<u8>,
    entries: Vec<Entry>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Header {
    /// Read one header from `r`. `pad` consumes the padding to an 8-byte boundary that
    /// follows the signature header.
    pub fn read<R: Read + ?Sized>(r: &mut R, pad: bool, what: &str) -> Result<Header> {
        let mut intro = [0u8; 16];
        r.read_exact(&mut intro)
            .with_context(|| format!("{what}: truncated before the header"))?;
        if intro[..8] != MAGIC {
            bail!("{what}: bad header magic (not an RPM header)");
        }
        let il = be32(&intro[8..12]);
        let dl = be32(&intro[12..16]);
        if il == 0 || il > MAX_ENTRIES || dl > MAX_STORE {
            bail!("{what}: header claims {il} entries and {dl} bytes of data; refusing");
        }
        let len = 16 + il as usize * 16 + dl as usize;
        let mut raw = Vec::with_capacity(len);
        raw.extend_from_slice(&intro);
        raw.resize(len, 0);
        r.read_exact(&mut raw[16..])
            .with_context(|| format!("{what}: truncated header"))?;
        if pad {
            let n = (8 - dl as usize % 8) % 8;
            let mut skip = [0u8; 8];
            r.read_exact(&mut skip[..n])
                .with_context(|| format!("{what}: truncated header padding"))?;
        }
        Header::parse(raw, what)
    }

    /// Parse a complete header (intro, index, store).
    pub fn parse(raw: Vec<u8>, what: &str) -> Result<Header> {
        if raw.len() < 16 || raw[..8] != MAGIC {
            bail!("{what}: bad header magic (not an RPM header)");
        }
        let il = be32(&raw[8..12]) as usize;
        let dl = be32(&raw[12..16]) as usize;
        if raw.len() != 16 + il * 16 + dl {
            bail!("{what}: header length does not match its index");
        }
        let mut entries = Vec::with_capacity(il);
        for i in 0..il {
            let e = &raw[16 + i * 16..32 + i * 16];
            let entry = Entry {
                tag: be32(&e[0..4]),
                ty: be32(&e[4..8]),
                offset: be32(&e[8..12]),
                count: be32(&e[12..16]),
            };
            check_entry(&entry, dl).with_context(|| {
                format!(
                    "{what}: malformed header entry for tag {} (type {}, offset {}, count {})",
                    entry.tag, entry.ty, entry.offset, entry.count
                )
            })?;
            entries.push(entry);
        }
        let h = Header { raw, entries };
        check_strings(&h, what)?;
        Ok(h)
    }

    /// The bytes the header was read from, magic to the end of the store: what header
    /// signatures and the SHA-1/SHA-256 header digests cover.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The data store.
    pub fn store(&self) -> &[u8] {
        &self.raw[16 + self.entries.len() * 16..]
    }

    pub fn entry(&self, tag: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.tag == tag)
    }

    pub fn has(&self, tag: u32) -> bool {
        self.entry(tag).is_some()
    }

    /// The `count` NUL-terminated strings at `offset` (checked at parse time).
    fn strings_at(&self, e: &Entry) -> Vec<String> {
        let store = self.store();
        let mut out = Vec::with_capacity(e.count as usize);
        let mut pos = e.offset as usize;
        for _ in 0..e.count {
            let end = store[pos..]
                .iter()
                .position(|b| *b == 0)
                .map_or(store.len(), |n| pos + n);
            out.push(String::from_utf8_lossy(&store[pos..end]).into_owned());
            pos = end + 1;
        }
        out
    }

    /// A string tag (STRING; the first of a STRING_ARRAY or I18NSTRING).
    pub fn string(&self, tag: u32) -> Option<String> {
        self.strings(tag).into_iter().next()
    }

    /// A string-array tag (a STRING counts as one); empty when absent or not strings.
    pub fn strings(&self, tag: u32) -> Vec<String> {
        match self.entry(tag) {
            Some(e) if matches!(e.ty, ty::STRING | ty::STRING_ARRAY | ty::I18NSTRING) => {
                self.strings_at(e)
            }
            _ => Vec::new(),
        }
    }

    /// An integer-array tag of any width; empty when absent or not integers.
    pub fn ints(&self, tag: u32) -> Vec<u64> {
        let Some(e) = self.entry(tag) else {
            return Vec::new();
        };
        let store = self.store();
        let o = e.offset as usize;
        let n = e.count as usize;
        match e.ty {
            ty::CHAR | ty::INT8 => store[o..o + n].iter().map(|b| *b as u64).collect(),
            ty::INT16 => (0..n)
                .map(|i| u16::from_be_bytes([store[o + 2 * i], store[o + 2 * i + 1]]) as u64)
                .collect(),
            ty::INT32 => (0..n).map(|i| be32(&store[o + 4 * i..]) as u64).collect(),
            ty::INT64 => (0..n)
                .map(|i| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&store[o + 8 * i..o + 8 * i + 8]);
                    u64::from_be_bytes(b)
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn int(&self, tag: u32) -> Option<u64> {
        self.ints(tag).into_iter().next()
    }

    /// A BIN tag's bytes.
    pub fn bin(&self, tag: u32) -> Option<&[u8]> {
        let e = self.entry(tag).filter(|e| e.ty == ty::BIN)?;
        Some(&self.store()[e.offset as usize..(e.offset + e.count) as usize])
    }
}

/// Size in bytes of one element of a fixed-size type, and its alignment.
fn fixed_size(t: u32) -> Option<usize> {
    match t {
        ty::NULL => Some(0),
        ty::CHAR | ty::INT8 | ty::BIN => Some(1),
        ty::INT16 => Some(2),
        ty::INT32 => Some(4),
        ty::INT64 => Some(8),
        _ => None,
    }
}

fn check_entry(e: &Entry, dl: usize) -> Result<()> {
    if e.ty > ty::I18NSTRING {
        bail!("unknown type");
    }
    if e.count == 0 || e.count > MAX_STORE {
        bail!("bad count");
    }
    let off = e.offset as usize;
    // Region tags (62, 63) point at their trailer, which lies inside the store too.
    if off > dl {
        bail!("offset beyond the store");
    }
    match fixed_size(e.ty) {
        Some(sz) => {
            if sz > 1 && off % sz != 0 {
                bail!("misaligned");
            }
            if off + sz * e.count as usize > dl {
                bail!("data beyond the store");
            }
        }
        // Strings: their terminators are checked once the whole header is read.
        None if e.ty == ty::STRING && e.count != 1 => bail!("a STRING entry must have count 1"),
        None => {}
    }
    Ok(())
}

/// Check that the strings of string entries are terminated inside the store (done once,
/// so the accessors can index freely).
fn check_strings(h: &Header, what: &str) -> Result<()> {
    let store = h.store();
    for e in h.entries() {
        if !matches!(e.ty, ty::STRING | ty::STRING_ARRAY | ty::I18NSTRING) {
            continue;
        }
        let mut pos = e.offset as usize;
        for _ in 0..e.count {
            match store
                .get(pos..)
                .and_then(|s| s.iter().position(|b| *b == 0))
            {
                Some(n) => pos += n + 1,
                None => bail!("{what}: string data of tag {} runs past the store", e.tag),
            }
        }
    }
    Ok(())
}

/// Serialise a header back to bytes, in the form the rpm database stores (`il`, `dl`,
/// entries, store: no magic). `extra` entries are appended after the original ones with
/// their data after the original store, each aligned for its type — what rpm itself does
/// with the tags it adds at install time (the signed region stays byte-identical).
pub fn export_with(h: &Header, extra: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
    let mut store = h.store().to_vec();
    let mut entries: Vec<Entry> = h.entries().to_vec();
    for (tag, t, count, data) in extra {
        let align = fixed_size(*t).unwrap_or(1).max(1);
        while store.len() % align != 0 {
            store.push(0);
        }
        entries.push(Entry {
            tag: *tag,
            ty: *t,
            offset: store.len() as u32,
            count: *count,
        });
        store.extend_from_slice(data);
    }
    let mut out = Vec::with_capacity(8 + entries.len() * 16 + store.len());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    out.extend_from_slice(&(store.len() as u32).to_be_bytes());
    for e in &entries {
        for v in [e.tag, e.ty, e.offset, e.count] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out.extend_from_slice(&store);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with one STRING (tag 1000) and one INT32 array (tag 1028).
    fn sample() -> Vec<u8> {
        let store = [
            b"hello\0\0\0".as_slice(),
            &7u32.to_be_bytes(),
            &9u32.to_be_bytes(),
        ]
        .concat();
        let mut raw = MAGIC.to_vec();
        raw.extend_from_slice(&2u32.to_be_bytes());
        raw.extend_from_slice(&(store.len() as u32).to_be_bytes());
        for v in [1000u32, ty::STRING, 0, 1, 1028, ty::INT32, 8, 2] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        raw.extend_from_slice(&store);
        raw
    }

    #[test]
    fn reads_tags_and_keeps_the_raw_bytes() {
        let raw = sample();
        let h = Header::read(&mut &raw[..], false, "t").unwrap();
        assert_eq!(h.raw(), &raw[..]);
        assert_eq!(h.string(1000).as_deref(), Some("hello"));
        assert_eq!(h.ints(1028), vec![7, 9]);
        assert_eq!(h.int(1029), None);
        let blob = export_with(&h, &[(1008, ty::INT32, 1, 5u32.to_be_bytes().to_vec())]);
        assert_eq!(&blob[0..4], &3u32.to_be_bytes());
    }

    #[test]
    fn hostile_headers_are_errors() {
        let mut raw = sample();
        // INT32 data past the store.
        raw[16 + 16 + 12..16 + 16 + 16].copy_from_slice(&100u32.to_be_bytes());
        assert!(Header::read(&mut &raw[..], false, "t").is_err());
        let mut raw = sample();
        raw[0] = 0;
        assert!(Header::read(&mut &raw[..], false, "t").is_err());
        let mut raw = sample();
        raw[8..12].copy_from_slice(&0x10_0000u32.to_be_bytes());
        assert!(Header::read(&mut &raw[..], false, "t").is_err());
        let raw = sample();
        assert!(Header::read(&mut &raw[..raw.len() - 1], false, "t").is_err());
        // A string running past the store.
        let mut raw = sample();
        raw[16 + 8..16 + 12].copy_from_slice(&12u32.to_be_bytes());
        raw[16 + 16 + 8..16 + 16 + 12].copy_from_slice(&0u32.to_be_bytes());
        let n = raw.len();
        raw[n - 4..].copy_from_slice(b"abcd");
        let err = Header::read(&mut &raw[..], false, "t").unwrap_err();
        assert!(format!("{err:#}").contains("runs past"), "{err:#}");
    }
}
