//! The SVR4 "newc" cpio format (magic 070701), as the kernel's initramfs unpacker and
//! GNU cpio read it: a 110-byte ASCII-hex header, the NUL-terminated name padded to 4 bytes,
//! the data padded to 4 bytes. Sizes and times are 32-bit: files over 4 GiB cannot be stored.

use std::io::{self, Write};

pub const MAGIC: &[u8; 6] = b"070701";
pub const TRAILER: &[u8] = b"TRAILER!!!";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

/// Counts bytes so that padding can be computed; wraps any writer.
pub struct NewcWriter<W: Write> {
    inner: W,
    pos: u64,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(inner: W) -> Self {
        NewcWriter { inner, pos: 0 }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let n = (4 - (self.pos % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    /// Write a header and name; the caller then writes exactly `h.filesize` bytes with
    /// [`NewcWriter::data`] and calls [`NewcWriter::end_data`].
    pub fn header(&mut self, h: &Header, name: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(110 + name.len() + 4);
        buf.extend_from_slice(MAGIC);
        for v in [
            h.ino,
            h.mode,
            h.uid,
            h.gid,
            h.nlink,
            h.mtime,
            h.filesize,
            0, // devmajor of the archived filesystem: meaningless in an image
            0, // devminor
            h.rdev_major,
            h.rdev_minor,
            (name.len() + 1) as u32,
            0, // check: only for the "070702" crc format
        ] {
            write!(buf, "{v:08x}")?;
        }
        buf.extend_from_slice(name);
        buf.push(0);
        self.put(&buf)?;
        self.pad4()
    }

    pub fn data(&mut self, b: &[u8]) -> io::Result<()> {
        self.put(b)
    }

    pub fn end_data(&mut self) -> io::Result<()> {
        self.pad4()
    }

    /// The trailer, then zeros up to a 512-byte boundary as GNU cpio does.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(
            &Header {
                nlink: 1,
                ..Default::default()
            },
            TRAILER,
        )?;
        let n = ((512 - (self.pos % 512)) % 512) as usize;
        self.put(&vec![0u8; n])?;
        Ok(self.inner)
    }

    pub fn position(&self) -> u64 {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        let mut w = NewcWriter::new(Vec::new());
        let h = Header {
            ino: 1,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0x5f5e100,
            filesize: 3,
            ..Default::default()
        };
        w.header(&h, b"etc/x").unwrap();
        w.data(b"abc").unwrap();
        w.end_data().unwrap();
        let out = w.finish().unwrap();
        let expect_header = b"070701\
00000001\
000081a4\
00000000\
00000000\
00000001\
05f5e100\
00000003\
00000000\
00000000\
00000000\
00000000\
00000006\
00000000\
etc/x\0";
        assert_eq!(&out[..116], &expect_header[..]);
        // header+name = 116 bytes (4-aligned), data 3 bytes + 1 pad.
        assert_eq!(&out[116..120], b"abc\0");
        assert_eq!(&out[120..126], b"070701");
        assert_eq!(&out[120 + 110..120 + 110 + 11], b"TRAILER!!!\0");
        assert_eq!(out.len(), 512);
    }
}
