//! Compressors for initrds, all streaming, all using every core the format allows.
//!
//! gzip is written pigz-style: the input is cut into chunks that are deflated in parallel,
//! each primed with the previous 32 KiB as dictionary and ended with a sync flush, then
//! concatenated into ONE gzip member. (Several members would also be valid gzip, but the
//! kernel's initramfs unpacker is only known-good with a single stream.)
//!
//! [`reader`] goes the other way for archives osbuilder reads back (an initrd to unpack):
//! the compression is recognised from the first bytes, as the kernel does.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    None,
}

impl Compression {
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 9,
            Compression::Zstd => 3,
            Compression::Xz => 6,
            Compression::None => 0,
        }
    }

    pub fn level_range(self) -> (u32, u32) {
        match self {
            Compression::Gzip => (1, 9),
            Compression::Zstd => (1, 19),
            Compression::Xz => (0, 9),
            Compression::None => (0, 0),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::None => "none",
        }
    }
}

/// The compression a stream's first bytes announce; `None` for anything else (an
/// uncompressed archive, or a format osbuilder does not read).
pub fn sniff(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else {
        None
    }
}

/// Other formats the kernel can unpack but osbuilder cannot, by magic (for the error).
fn unsupported(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"BZh") {
        Some("bzip2")
    } else if head.starts_with(&[0x02, 0x21, 0x4c, 0x18])
        || head.starts_with(&[0x04, 0x22, 0x4d, 0x18])
    {
        Some("lz4")
    } else if head.starts_with(&[0x5d, 0x00, 0x00]) {
        Some("lzma")
    } else if head.starts_with(&[0x89, b'L', b'Z', b'O']) {
        Some("lzo")
    } else {
        None
    }
}

/// A reader that decompresses `r` according to its first bytes (gzip, zstd, xz), or
/// passes it through when it is not compressed.
pub fn reader<'a, R: Read + 'a>(r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buf = io::BufReader::with_capacity(1 << 20, r);
    let head = buf.fill_buf()?.to_vec();
    if let Some(name) = unsupported(&head) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name}-compressed data: osbuilder reads gzip, zstd, xz or uncompressed"),
        ));
    }
    Ok(match sniff(&head) {
        Some(Compression::Gzip) => (
            Compression::Gzip,
            Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        ),
        Some(Compression::Zstd) => (
            Compression::Zstd,
            Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
        ),
        Some(Compression::Xz) => (
            Compression::Xz,
            Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(buf)),
        ),
        _ => (Compression::None, Box::new(buf)),
    })
}

/// A compressing writer that must be finished explicitly (to write trailers).
pub trait Finish: Write + Send {
    fn finish(self: Box<Self>) -> io::Result<()>;
}

pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Wrap `out` in the chosen compressor.
pub fn writer<W: Write + Send + 'static>(
    c: Compression,
    level: u32,
    out: W,
) -> io::Result<Box<dyn Finish>> {
    let threads = threads();
    Ok(match c {
        Compression::None => Box::new(Plain(io::BufWriter::with_capacity(1 << 20, out))),
        Compression::Gzip => Box::new(ParallelGz::new(out, level, threads)),
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, level as i32)?;
            if threads > 1 {
                enc.multithread(threads as u32)?;
            }
            enc.include_checksum(true)?;
            Box::new(Zstd(enc))
        }
        Compression::Xz => {
            // The kernel's xz decoder wants CRC32 (not the default CRC64).
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(threads as u32)
                .preset(level)
                .check(liblzma::stream::Check::Crc32)
                .encoder()
                .map_err(io::Error::other)?;
            Box::new(Xz(liblzma::write::XzEncoder::new_stream(out, stream)))
        }
    })
}

struct Plain<W: Write>(io::BufWriter<W>);
impl<W: Write> Write for Plain<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
impl<W: Write + Send> Finish for Plain<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

struct Zstd<W: Write>(zstd::stream::write::Encoder<'static, W>);
impl<W: Write> Write for Zstd<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
impl<W: Write + Send> Finish for Zstd<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.finish()?.flush()
    }
}

struct Xz<W: Write>(liblzma::write::XzEncoder<W>);
impl<W: Write> Write for Xz<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
impl<W: Write + Send> Finish for Xz<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.finish()?.flush()
    }
}

const CHUNK: usize = 1 << 20;
const WINDOW: usize = 32 * 1024;

struct Job {
    input: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// Single-member gzip, deflated in parallel chunks.
pub struct ParallelGz<W: Write> {
    /// Taken by `finish_inner`; present until then.
    out: Option<W>,
    level: u32,
    chunk: Vec<u8>,
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    max_pending: usize,
    header_done: bool,
}

impl<W: Write> ParallelGz<W> {
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    loop {
                        let job = match rx.lock().map(|r| r.recv()) {
                            Ok(Ok(job)) => job,
                            _ => return,
                        };
                        let res = deflate_chunk(&job.input, &job.dict, level, job.last);
                        let _ = job.reply.send(res);
                    }
                })
            })
            .collect();
        ParallelGz {
            out: Some(out),
            level,
            chunk: Vec::with_capacity(CHUNK),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            pending: VecDeque::new(),
            jobs: Some(tx),
            workers,
            max_pending: threads * 3,
            header_done: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_done {
            // No name, mtime 0 (reproducible), XFL per level, OS = Unix.
            let xfl = match self.level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            self.out_mut()
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
            self.header_done = true;
        }
        Ok(())
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let input = std::mem::replace(
            &mut self.chunk,
            Vec::with_capacity(if last { 0 } else { CHUNK }),
        );
        let dict = std::mem::take(&mut self.dict);
        self.dict = input[input.len().saturating_sub(WINDOW)..].to_vec();
        let (reply, rx) = sync_channel(1);
        self.jobs
            .as_ref()
            .expect("jobs channel open until finish")
            .send(Job {
                input,
                dict,
                last,
                reply,
            })
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        self.pending.push_back(rx);
        while self.pending.len() > self.max_pending {
            self.drain_one()?;
        }
        Ok(())
    }

    fn drain_one(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let data = rx
                .recv()
                .map_err(|_| io::Error::other("gzip worker died"))??;
            self.header()?;
            self.out_mut().write_all(&data)?;
        }
        Ok(())
    }

    pub fn finish_inner(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        self.header()?;
        let crc = std::mem::take(&mut self.crc).finalize();
        let total = self.total as u32;
        let out = self.out_mut();
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&total.to_le_bytes())?;
        out.flush()?;
        Ok(self.out.take().expect("output present until finished"))
    }

    fn out_mut(&mut self) -> &mut W {
        self.out.as_mut().expect("output present until finished")
    }
}

impl<W: Write> Drop for ParallelGz<W> {
    fn drop(&mut self) {
        // Close the channel so the workers exit, then wait for them.
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        self.crc.update(buf);
        self.total += n as u64;
        while !buf.is_empty() {
            let room = CHUNK - self.chunk.len();
            let take = room.min(buf.len());
            self.chunk.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.chunk.len() == CHUNK {
                self.submit(false)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send> Finish for ParallelGz<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        (*self).finish_inner().map(|_| ())
    }
}

/// Raw deflate of one chunk, primed with `dict`; ends byte-aligned (sync flush) unless last.
fn deflate_chunk(input: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out: Vec<u8> = Vec::with_capacity(input.len() / 2 + 4096);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        if status == Status::StreamEnd {
            break;
        }
        // A sync flush is complete once all input is in and zlib left output space unused.
        if !last && c.total_in() as usize == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivial: text-ish with a slowly changing pattern.
        let mut v = Vec::with_capacity(n);
        let mut x: u32 = 12345;
        while v.len() < n {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let word = [
                "init", "systemd", "kata", "agent", "usr/lib", "\n", "0000", "ELF",
            ][(x >> 16) as usize % 8];
            v.extend_from_slice(word.as_bytes());
            v.push((x >> 24) as u8);
        }
        v.truncate(n);
        v
    }

    fn gz(data: &[u8], level: u32, threads: usize) -> Vec<u8> {
        let mut w = ParallelGz::new(Vec::new(), level, threads);
        // Odd write sizes to exercise chunk boundaries.
        for part in data.chunks(77_777) {
            w.write_all(part).unwrap();
        }
        w.finish_inner().unwrap()
    }

    #[test]
    fn parallel_gzip_is_one_valid_member() {
        for size in [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 12345] {
            let data = sample(size);
            let out = gz(&data, 6, 2);
            // A single-member decoder must read it all (no reliance on concatenated members).
            let mut dec = flate2::read::GzDecoder::new(&out[..]);
            let mut back = Vec::new();
            dec.read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "size {size}");
            let mut rest = Vec::new();
            dec.into_inner().read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "trailing bytes after the gzip member");
        }
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let data = sample(5 * CHUNK / 2);
        assert_eq!(gz(&data, 9, 1), gz(&data, 9, 2));
        assert_eq!(gz(&data, 9, 2), gz(&data, 9, 4));
    }

    #[test]
    fn dictionary_keeps_size_close_to_single_stream() {
        let data = sample(4 * CHUNK);
        let ours = gz(&data, 9, 2).len();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        e.write_all(&data).unwrap();
        let single = e.finish().unwrap().len();
        assert!(
            (ours as f64) < single as f64 * 1.01,
            "ours {ours} vs single-stream {single}"
        );
    }

    #[test]
    fn zstd_and_xz_round_trip() {
        let data = sample(CHUNK + 5);
        for c in [Compression::Zstd, Compression::Xz, Compression::None] {
            let buf = Arc::new(Mutex::new(Vec::new()));
            struct Shared(Arc<Mutex<Vec<u8>>>);
            impl Write for Shared {
                fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                    self.0.lock().unwrap().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> io::Result<()> {
                    Ok(())
                }
            }
            let mut w = writer(c, 3, Shared(buf.clone())).unwrap();
            w.write_all(&data).unwrap();
            w.finish().unwrap();
            let out = buf.lock().unwrap().clone();
            let back = match c {
                Compression::Zstd => zstd::decode_all(&out[..]).unwrap(),
                Compression::Xz => {
                    let mut v = Vec::new();
                    liblzma::read::XzDecoder::new(&out[..])
                        .read_to_end(&mut v)
                        .unwrap();
                    v
                }
                _ => out,
            };
            assert_eq!(back, data, "{c:?}");
        }
    }

    #[test]
    fn reader_recognises_what_writer_wrote() {
        let data = sample(CHUNK + 99);
        for c in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
            Compression::None,
        ] {
            let buf = Arc::new(Mutex::new(Vec::new()));
            struct Shared(Arc<Mutex<Vec<u8>>>);
            impl Write for Shared {
                fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                    self.0.lock().unwrap().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> io::Result<()> {
                    Ok(())
                }
            }
            let mut w = writer(c, c.default_level(), Shared(buf.clone())).unwrap();
            w.write_all(&data).unwrap();
            w.finish().unwrap();
            let out = buf.lock().unwrap().clone();
            let (found, mut r) = reader(&out[..]).unwrap();
            assert_eq!(found, c);
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "{c:?}");
        }
        let e = reader(&b"BZh91AY&SY"[..]).err().unwrap().to_string();
        assert!(e.contains("bzip2"), "{e}");
    }
}
