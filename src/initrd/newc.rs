//! The SVR4 "newc" cpio format (magic 070701), as the kernel's initramfs unpacker and
//! GNU cpio read it: a 110-byte ASCII-hex header, the NUL-terminated name padded to 4 bytes,
//! the data padded to 4 bytes. Sizes and times are 32-bit: files over 4 GiB cannot be stored.
//!
//! [`NewcWriter`] writes archives; [`NewcReader`] reads them back (ours, dracut's, GNU
//! cpio's), including the "070702" variant with data checksums and several archives
//! concatenated one after another, as the kernel accepts them.

use std::io::{self, Read, Write};

pub const MAGIC: &[u8; 6] = b"070701";
/// The same format with a checksum of the data in the header's `check` field.
pub const MAGIC_CRC: &[u8; 6] = b"070702";
/// Longest member name accepted when reading (the kernel's PATH_MAX).
pub const MAX_NAME: usize = 4096;
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

/// One member of an archive as read back: its header and name (without the NUL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub header: Header,
    /// The device the archived file lived on: with `ino`, what tells hard links apart.
    pub dev_major: u32,
    pub dev_minor: u32,
    pub name: Vec<u8>,
}

impl Member {
    /// The S_IFMT bits of the mode.
    pub fn file_type(&self) -> u32 {
        self.header.mode & 0o170000
    }
}

/// Reads members one at a time from an uncompressed archive stream. After each
/// [`NewcReader::next_member`], the member's data may be read with [`NewcReader::data`];
/// what is left unread is skipped by the next call.
pub struct NewcReader<R: Read> {
    inner: R,
    pos: u64,
    /// Data bytes of the current member not read yet.
    left: u64,
    /// Padding after the current member's data.
    pad: u64,
    /// The current member's expected checksum (070702) and the running sum.
    check: Option<(u32, u32)>,
    done: bool,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> NewcReader<R> {
    pub fn new(inner: R) -> Self {
        NewcReader {
            inner,
            pos: 0,
            left: 0,
            pad: 0,
            check: None,
            done: false,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Read up to `buf.len()` bytes; fewer only at the end of the stream.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += done as u64;
        Ok(done)
    }

    fn exact(&mut self, buf: &mut [u8], what: &str) -> io::Result<()> {
        let at = self.pos;
        if self.fill(buf)? != buf.len() {
            return Err(bad(format!(
                "the archive ends inside {what} (at byte {at}); it is truncated"
            )));
        }
        Ok(())
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = (buf.len() as u64).min(n) as usize;
            self.exact(&mut buf[..want], "member data")?;
            n -= want as u64;
        }
        Ok(())
    }

    /// The next member, or None at the end: after the last trailer only zeros (or nothing)
    /// may follow; another "07070x" header after a trailer starts the next archive.
    pub fn next_member(&mut self) -> io::Result<Option<Member>> {
        if self.done {
            return Ok(None);
        }
        let rest = self.left + self.pad;
        self.skip(rest)?;
        self.finish_check()?;
        self.left = 0;
        self.pad = 0;
        let at = self.pos;
        let mut magic = [0u8; 6];
        match self.fill(&mut magic)? {
            0 => Err(bad(
                "the archive ends without a TRAILER!!! member; it is truncated".into(),
            )),
            6 => self.member_after_magic(at, &magic),
            _ => Err(bad(format!(
                "the archive ends inside a header (at byte {at})"
            ))),
        }
    }

    fn member_after_magic(&mut self, at: u64, magic: &[u8]) -> io::Result<Option<Member>> {
        let crc = match magic {
            m if m == MAGIC => false,
            m if m == MAGIC_CRC => true,
            m => {
                return Err(bad(format!(
                    "no newc header at byte {at} (found {:?}): not a newc cpio archive",
                    String::from_utf8_lossy(m)
                )));
            }
        };
        let mut raw = [0u8; 104];
        self.exact(&mut raw, "a header")?;
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let field = &raw[8 * i..8 * i + 8];
            *v = std::str::from_utf8(field)
                .ok()
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "bad hex field {:?} in the header at byte {at}",
                        String::from_utf8_lossy(field)
                    ))
                })?;
        }
        let [
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            dev_major,
            dev_minor,
            rdev_major,
            rdev_minor,
            namesize,
            check,
        ] = f;
        let namesize = namesize as usize;
        if namesize == 0 || namesize > MAX_NAME + 1 {
            return Err(bad(format!(
                "member at byte {at} has a name of {namesize} bytes (1..={} allowed)",
                MAX_NAME + 1
            )));
        }
        let mut name = vec![0u8; namesize];
        self.exact(&mut name, "a member name")?;
        if name.pop() != Some(0) || name.contains(&0) {
            return Err(bad(format!(
                "member at byte {at} has a name that is not NUL-terminated"
            )));
        }
        self.skip(((4 - (110 + namesize) % 4) % 4) as u64)?;
        if name == TRAILER {
            self.skip(filesize as u64)?;
            self.skip((4 - (filesize as u64 % 4)) % 4)?;
            return self.after_trailer();
        }
        self.left = filesize as u64;
        self.pad = (4 - (filesize as u64 % 4)) % 4;
        self.check = crc.then_some((check, 0));
        Ok(Some(Member {
            header: Header {
                ino,
                mode,
                uid,
                gid,
                nlink,
                mtime,
                filesize,
                rdev_major,
                rdev_minor,
            },
            dev_major,
            dev_minor,
            name,
        }))
    }

    /// Zeros pad an archive (GNU cpio to 512 bytes; the kernel accepts any multiple of 4);
    /// a header after them starts the next archive.
    fn after_trailer(&mut self) -> io::Result<Option<Member>> {
        let mut word = [0u8; 4];
        loop {
            let at = self.pos;
            match self.fill(&mut word)? {
                0 => {
                    self.done = true;
                    return Ok(None);
                }
                4 if word == [0; 4] => {}
                4 if &word == b"0707" => {
                    let mut tail = [0u8; 2];
                    self.exact(&mut tail, "a header")?;
                    let magic = [word[0], word[1], word[2], word[3], tail[0], tail[1]];
                    return self.member_after_magic(at, &magic);
                }
                _ => {
                    return Err(bad(format!(
                        "unexpected data at byte {at} after the archive's trailer (a \
                         compressed archive appended to an uncompressed one cannot be read)"
                    )));
                }
            }
        }
    }

    fn finish_check(&mut self) -> io::Result<()> {
        if let Some((want, got)) = self.check.take() {
            if want != got {
                return Err(bad(format!(
                    "a member's data does not match its 070702 checksum ({got:08x} != {want:08x})"
                )));
            }
        }
        Ok(())
    }

    /// The current member's data (at most its remaining size).
    pub fn data(&mut self) -> Data<'_, R> {
        Data { r: self }
    }
}

/// The data of the member [`NewcReader::next_member`] returned last.
pub struct Data<'a, R: Read> {
    r: &'a mut NewcReader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.r.left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.r.left) as usize;
        let n = self.r.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(bad(
                "the archive ends inside a member's data; it is truncated".into(),
            ));
        }
        self.r.pos += n as u64;
        self.r.left -= n as u64;
        if let Some((_, sum)) = &mut self.r.check {
            *sum = buf[..n].iter().fold(*sum, |s, &b| s.wrapping_add(b as u32));
        }
        Ok(n)
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

    fn archive(members: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new());
        for (i, (name, mode, data)) in members.iter().enumerate() {
            let h = Header {
                ino: i as u32 + 1,
                mode: *mode,
                nlink: 1,
                filesize: data.len() as u32,
                ..Default::default()
            };
            w.header(&h, name).unwrap();
            w.data(data).unwrap();
            w.end_data().unwrap();
        }
        w.finish().unwrap()
    }

    /// (name, mode, data) of every member.
    type Members = Vec<(Vec<u8>, u32, Vec<u8>)>;

    fn read_all(bytes: &[u8]) -> io::Result<Members> {
        let mut r = NewcReader::new(bytes);
        let mut out = Vec::new();
        while let Some(m) = r.next_member()? {
            let mut data = Vec::new();
            r.data().read_to_end(&mut data)?;
            out.push((m.name, m.header.mode, data));
        }
        Ok(out)
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let a = archive(&[
            (b".", 0o40755, b""),
            (b"etc/hostname", 0o100644, b"guest\n"),
            (b"init", 0o120777, b"/sbin/init"),
        ]);
        let got = read_all(&a).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1],
            (b"etc/hostname".to_vec(), 0o100644, b"guest\n".to_vec())
        );
        assert_eq!(got[2].2, b"/sbin/init");
    }

    #[test]
    fn unread_data_is_skipped_and_archives_may_be_concatenated() {
        let mut a = archive(&[(b"a", 0o100644, b"12345")]);
        a.extend(archive(&[(b"b", 0o100644, b"x")]));
        let mut r = NewcReader::new(&a[..]);
        assert_eq!(r.next_member().unwrap().unwrap().name, b"a");
        assert_eq!(r.next_member().unwrap().unwrap().name, b"b");
        assert!(r.next_member().unwrap().is_none());
        assert!(r.next_member().unwrap().is_none());
    }

    #[test]
    fn crc_members_are_checked() {
        let mut a = archive(&[(b"f", 0o100644, b"ab")]);
        a[5] = b'2';
        // check field: 0x61 + 0x62
        a[102..110].copy_from_slice(b"000000c3");
        assert_eq!(read_all(&a).unwrap()[0].2, b"ab");
        a[102..110].copy_from_slice(b"000000c4");
        let e = read_all(&a).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn damaged_archives_are_refused() {
        let a = archive(&[(b"f", 0o100644, b"abcdef")]);
        let e = read_all(&a[..120]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = read_all(b"not an archive at all").unwrap_err().to_string();
        assert!(e.contains("not a newc"), "{e}");
        let mut bad_hex = a.clone();
        bad_hex[10] = b'z';
        assert!(read_all(&bad_hex).is_err());
        let mut junk = a.clone();
        let end = junk.len();
        junk[end - 4..].copy_from_slice(b"junk");
        let e = read_all(&junk).unwrap_err().to_string();
        assert!(e.contains("after the archive's trailer"), "{e}");
    }
}
