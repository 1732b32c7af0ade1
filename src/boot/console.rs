//! The guest's serial console as text: bytes from QEMU in, clean lines out, and the last
//! lines kept for error reports. Pure (no I/O), so the parsing is unit-tested.

use std::collections::VecDeque;

/// How many console lines a failure report shows.
pub const TAIL_LINES: usize = 30;

/// The kernel's panic banner (printed before it stops; with panic=-1, QEMU then exits).
pub const PANIC_TEXT: &str = "Kernel panic - not syncing";

/// What the kernel prints when it restarts instead of powering off.
pub const RESTART_TEXT: &str = "reboot: Restarting system";

#[derive(Default)]
pub struct Console {
    partial: Vec<u8>,
    tail: VecDeque<String>,
}

impl Console {
    /// Add bytes; returns the lines they completed, cleaned.
    pub fn feed(&mut self, data: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in data {
            if b == b'\n' {
                let line = clean(&self.partial);
                self.partial.clear();
                if self.tail.len() == TAIL_LINES {
                    self.tail.pop_front();
                }
                self.tail.push_back(line.clone());
                done.push(line);
            } else {
                self.partial.push(b);
            }
        }
        done
    }

    /// The line being written (no newline yet), cleaned.
    pub fn partial(&self) -> String {
        clean(&self.partial)
    }

    /// The last lines, the unfinished one included.
    pub fn tail(&self) -> Vec<String> {
        let mut t: Vec<String> = self.tail.iter().cloned().collect();
        let p = self.partial();
        if !p.is_empty() {
            if t.len() == TAIL_LINES {
                t.remove(0);
            }
            t.push(p);
        }
        t
    }
}

/// Text of a console line: UTF-8 (lossy), without carriage returns, terminal escape
/// sequences (systemd's colours) or other control characters.
pub fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters… final byte in @..~; other escapes: drop ESC + one char.
            if chars.next_if_eq(&'[').is_some() {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_cleaned() {
        let mut c = Console::default();
        assert!(c.feed(b"[    0.000000] Linux ver").is_empty());
        assert_eq!(c.partial(), "[    0.000000] Linux ver");
        let l = c.feed(b"sion 6.1\r\n[  \x1b[0;32mOK\x1b[0m  ] Started\r\nlogin: ");
        assert_eq!(
            l,
            vec!["[    0.000000] Linux version 6.1", "[  OK  ] Started"]
        );
        assert_eq!(c.partial(), "login: ");
        assert_eq!(c.tail().last().unwrap(), "login: ");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut c = Console::default();
        for i in 0..100 {
            c.feed(format!("line {i}\n").as_bytes());
        }
        let t = c.tail();
        assert_eq!(t.len(), TAIL_LINES);
        assert_eq!(t[0], "line 70");
        assert_eq!(t[TAIL_LINES - 1], "line 99");
        c.feed(b"half");
        let t = c.tail();
        assert_eq!(
            (t.len(), t[0].as_str(), t[TAIL_LINES - 1].as_str()),
            (TAIL_LINES, "line 71", "half")
        );
    }

    #[test]
    fn invalid_utf8_and_controls_do_not_break_lines() {
        assert_eq!(clean(b"a\xffb\x07c\td"), "a\u{fffd}bc\td");
    }
}
