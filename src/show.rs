//! Names and paths as messages show them: on one line and of a readable length, whatever
//! bytes they hold. A file name may contain a newline, bytes that are not UTF-8, or run to
//! thousands of characters (a hostile package, a mistyped `-o`); printed raw, it breaks the
//! one-line error, hides what is wrong, or buries it in kilobytes.
//!
//! Printable text is kept as it is (spaces and non-ASCII letters included); a backslash,
//! control characters and invalid bytes are escaped (`\n`, `\t`, `\x1b`, `\xff`); anything
//! longer than [`MAX`] characters keeps its start and end around a note of how much was
//! left out.

use std::path::Path;

/// Longest shown form, in characters.
pub const MAX: usize = 160;

/// `bytes` escaped and, when long, shortened.
pub fn bytes(b: &[u8]) -> String {
    let parts = escaped(b);
    if parts.len() <= MAX {
        return parts.concat();
    }
    let keep = MAX / 2 - 10;
    format!(
        "{}…[{} bytes]…{}",
        parts[..keep].concat(),
        b.len(),
        parts[parts.len() - keep..].concat()
    )
}

/// A tool's output (stderr, say) as one line: each line escaped, lines joined with "; ",
/// at most `lines` of them.
pub fn tool_output(out: &[u8], lines: usize) -> String {
    let all: Vec<String> = out
        .split(|c| *c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| escaped(l.trim_ascii()).concat())
        .collect();
    let mut s = all
        .iter()
        .take(lines)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if all.len() > lines {
        s.push_str(&format!("; … ({} more lines)", all.len() - lines));
    }
    s
}

/// One string per shown character.
fn escaped(b: &[u8]) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            parts.push(match c {
                '\\' => "\\\\".into(),
                '\n' => "\\n".into(),
                '\t' => "\\t".into(),
                '\r' => "\\r".into(),
                c if c.is_control() => c.escape_unicode().to_string(),
                c => c.to_string(),
            });
        }
        for x in chunk.invalid() {
            parts.push(format!("\\x{x:02x}"));
        }
    }
    parts
}

/// A path, escaped and shortened like [`bytes`].
pub fn path(p: &Path) -> String {
    bytes(p.as_os_str().as_encoded_bytes())
}

/// A rootfs-relative path ("a/b") as the guest sees it ("/a/b").
pub fn in_root(rel: &[u8]) -> String {
    let mut p = Vec::with_capacity(rel.len() + 1);
    p.push(b'/');
    p.extend_from_slice(rel);
    bytes(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_whatever_the_bytes() {
        assert_eq!(bytes(b"usr/bin/caf\xc3\xa9 x"), "usr/bin/café x");
        assert_eq!(bytes(b"a\nb\tc\\d"), "a\\nb\\tc\\\\d");
        assert_eq!(bytes(b"bad\xff\xfename"), "bad\\xff\\xfename");
        assert_eq!(bytes(b"esc\x1b[31m"), "esc\\u{1b}[31m");
        assert_eq!(in_root(b"etc/x\ny"), "/etc/x\\ny");
        assert_eq!(
            tool_output(b"mkfs: bad\n\n  x\xff\r\nthree\nfour\n", 2),
            "mkfs: bad; x\\xff; … (2 more lines)"
        );
    }

    #[test]
    fn long_names_are_shortened_around_their_length() {
        let long = format!("/tmp/{}/out.img", "b".repeat(5000));
        let s = path(Path::new(&long));
        assert!(s.chars().count() < MAX + 30, "{s}");
        assert!(
            s.starts_with("/tmp/bbb") && s.ends_with("bbb/out.img"),
            "{s}"
        );
        assert!(s.contains("[5013 bytes]"), "{s}");
    }
}
