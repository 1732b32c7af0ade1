//! Content digests (`sha256:<hex>`), the names of every blob and manifest. Only sha256 is
//! written or accepted: it is what the image spec requires registries to support, and a
//! second algorithm would double every code path that verifies content.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A validated `sha256:` digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The referrers fallback tag of this digest (`sha256-<hex>`, image-spec's tag schema).
    pub fn fallback_tag(&self) -> String {
        format!("sha256-{}", self.hex())
    }

    fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex::encode(h.finalize())))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = String;

    fn from_str(s: &str) -> Result<Digest, String> {
        let Some(hex) = s.strip_prefix("sha256:") else {
            return Err(match s.split_once(':') {
                Some((alg, _)) => {
                    format!("digest '{s}' uses {alg}; osbuilder reads sha256 digests only")
                }
                None => format!("'{s}' is not a digest (sha256:<64 hex digits>)"),
            });
        };
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "'{s}' is not a digest (sha256:<64 lowercase hex digits>)"
            ));
        }
        Ok(Digest(s.to_string()))
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Digest, String> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// Hashes and counts what passes through it (reading or writing).
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    count: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest and size of everything seen, and the inner value.
    pub fn finish(self) -> (Digest, u64, T) {
        (Digest::from_hasher(self.hasher), self.count, self.inner)
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Digest and size of a whole stream, read in 1 MiB blocks.
pub fn of_reader(r: impl Read) -> io::Result<(Digest, u64)> {
    let mut h = Hashing::new(r);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match h.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let (d, n, _) = h.finish();
    Ok((d, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_json_digest_matches_the_spec() {
        let d = Digest::of(b"{}");
        assert_eq!(
            d.as_str(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(d.fallback_tag(), format!("sha256-{}", d.hex()));
        assert_eq!(of_reader(&b"{}"[..]).unwrap(), (d, 2));
    }

    #[test]
    fn bad_digests_are_refused_with_a_reason() {
        assert!(
            "sha512:abcd"
                .parse::<Digest>()
                .unwrap_err()
                .contains("sha256 digests only")
        );
        assert!("sha256:ABCD".parse::<Digest>().is_err());
        assert!(
            "latest"
                .parse::<Digest>()
                .unwrap_err()
                .contains("not a digest")
        );
        let ok = format!("sha256:{}", "0".repeat(64));
        assert!(ok.parse::<Digest>().is_ok());
    }
}
