//! A streaming reader of the cpio archives in RPM payloads: SVR4 "newc" (`070701`, and
//! `070702` with checksums) and rpm v6's stripped form (`07070X`: only the index of the
//! file in the header's file list, its metadata living in the header). Entries are read
//! one at a time; the content of each is a bounded reader over the same stream, so a
//! package is extracted without holding its payload in memory.

use std::io::Read;

use anyhow::{Context, Result, bail};

/// The name of the last entry.
const TRAILER: &[u8] = b"TRAILER!!!";
/// Longest name accepted (PATH_MAX).
const MAX_NAME: usize = 4096;

/// One archive entry's header.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The path as archived (`./usr/bin/foo`), or empty for a stripped entry.
    pub name: Vec<u8>,
    /// For stripped (`07070X`) entries: the file's index in the header.
    pub index: Option<u32>,
    pub mode: u32,
    pub nlink: u32,
    pub ino: u32,
    pub size: u64,
    pub rdev: (u32, u32),
}

/// Reads entries from a decompressed payload stream.
pub struct Reader<R: Read> {
    inner: R,
    /// Bytes of the current entry's content not yet read, and its padding.
    remaining: u64,
    pad: usize,
    /// Bytes consumed so far (for 4-byte alignment).
    pos: u64,
    done: bool,
}

fn hex8(b: &[u8]) -> Result<u32> {
    let s = std::str::from_utf8(b).context("bad cpio header field")?;
    u32::from_str_radix(s, 16).with_context(|| format!("bad cpio header field '{s}'"))
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Reader<R> {
        Reader {
            inner,
            remaining: 0,
            pad: 0,
            pos: 0,
            done: false,
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner
            .read_exact(buf)
            .context("the payload ends inside a cpio entry")?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read_exact(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn align4(&mut self) -> Result<()> {
        let n = (4 - (self.pos % 4)) % 4;
        self.skip(n)
    }

    /// The next entry, after skipping what is left of the previous one's content; None
    /// at the trailer.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        let rest = self.remaining;
        self.skip(rest)?;
        self.remaining = 0;
        let pad = self.pad;
        self.skip(pad as u64)?;
        self.pad = 0;
        let mut magic = [0u8; 6];
        self.read_exact(&mut magic)?;
        if &magic == b"07070X" {
            // Stripped: the file index, then the content (size from the header).
            let mut idx = [0u8; 8];
            self.read_exact(&mut idx)?;
            self.align4()?;
            return Ok(Some(Entry {
                name: Vec::new(),
                index: Some(hex8(&idx)?),
                mode: 0,
                nlink: 0,
                ino: 0,
                size: 0,
                rdev: (0, 0),
            }));
        }
        if &magic != b"070701" && &magic != b"070702" {
            bail!(
                "bad cpio magic {:?} in the payload (not a newc archive)",
                String::from_utf8_lossy(&magic)
            );
        }
        let mut h = [0u8; 104];
        self.read_exact(&mut h)?;
        let f = |i: usize| hex8(&h[i * 8..i * 8 + 8]);
        let (ino, mode, nlink) = (f(0)?, f(1)?, f(4)?);
        let size = f(6)? as u64;
        let rdev = (f(9)?, f(10)?);
        let namesize = f(11)? as usize;
        if namesize == 0 || namesize > MAX_NAME + 1 {
            bail!("cpio entry with a name of {namesize} bytes; refusing");
        }
        let mut name = vec![0u8; namesize];
        self.read_exact(&mut name)?;
        if name.pop() != Some(0) || name.contains(&0) {
            bail!("cpio entry name is not NUL-terminated");
        }
        self.align4()?;
        if name == TRAILER {
            self.done = true;
            return Ok(None);
        }
        self.set_content(size);
        Ok(Some(Entry {
            name,
            index: None,
            mode,
            nlink,
            ino,
            size,
            rdev,
        }))
    }

    /// The current entry's content is `size` bytes (for stripped entries, whose size
    /// comes from the header).
    pub fn set_content(&mut self, size: u64) {
        self.remaining = size;
        self.pad = ((4 - (size % 4)) % 4) as usize;
    }

    /// Read the whole (small) content of the current entry, e.g. a symlink target.
    pub fn read_small(&mut self, limit: usize) -> Result<Vec<u8>> {
        if self.remaining > limit as u64 {
            bail!(
                "cpio entry content of {} bytes is too large",
                self.remaining
            );
        }
        let mut v = vec![0u8; self.remaining as usize];
        let mut c = self.content();
        c.read_exact(&mut v)
            .context("the payload ends inside a cpio entry")?;
        Ok(v)
    }

    /// A reader over the rest of the current entry's content.
    pub fn content(&mut self) -> Content<'_, R> {
        Content { r: self }
    }
}

/// The content of one entry; reading past its end returns EOF.
pub struct Content<'a, R: Read> {
    r: &'a mut Reader<R>,
}

impl<R: Read> Read for Content<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.r.remaining == 0 {
            return Ok(0);
        }
        let k = (buf.len() as u64).min(self.r.remaining) as usize;
        let n = self.r.inner.read(&mut buf[..k])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the payload ends inside a cpio entry",
            ));
        }
        self.r.remaining -= n as u64;
        self.r.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
        let h = format!(
            "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }

    #[test]
    fn reads_entries_and_content_in_order() {
        let mut a = Vec::new();
        entry(&mut a, "./usr", 0o40755, b"");
        entry(&mut a, "./usr/a", 0o100644, b"hello");
        entry(&mut a, "./usr/b", 0o100644, b"xy");
        entry(&mut a, "TRAILER!!!", 0, b"");
        let mut r = Reader::new(&a[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.name, b"./usr");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!((e.name.as_slice(), e.size), (&b"./usr/a"[..], 5));
        let mut s = String::new();
        r.content().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        // Content left unread is skipped.
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.name, b"./usr/b");
        assert!(r.next_entry().unwrap().is_none());
        assert!(r.next_entry().unwrap().is_none());
        // Truncated archives and bad magic are errors.
        let mut r = Reader::new(&a[..a.len() - 130]);
        let mut err = None;
        for _ in 0..4 {
            match r.next_entry() {
                Err(e) => {
                    err = Some(e);
                    break;
                }
                Ok(None) => break,
                Ok(Some(_)) => {}
            }
        }
        assert!(err.is_some());
        assert!(Reader::new(&b"070707xxxx"[..]).next_entry().is_err());
    }
}
