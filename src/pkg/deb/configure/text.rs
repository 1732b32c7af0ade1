//! grep and sed as maintainer scripts use them (GNU basic and extended regular
//! expressions, `s///` substitutions, `/re/d` and `/re/p`), on text the scripts pipe
//! through them.

use regex::Regex;

/// A POSIX basic regular expression (GNU flavour) as a Rust regex.
pub fn bre(p: &str) -> String {
    let mut out = String::new();
    let mut chars = p.chars().peekable();
    let mut at_start = true;
    let mut in_class = false;
    while let Some(c) = chars.next() {
        if in_class {
            if c == ']' {
                in_class = false;
            }
            if c == '\\' || c == '[' && chars.peek() != Some(&':') {
                out.push('\\');
            }
            out.push(c);
            continue;
        }
        match c {
            '\\' => match chars.next() {
                Some(n @ ('(' | ')' | '{' | '}' | '|' | '+' | '?')) => out.push(n),
                Some('<' | '>') => out.push_str("\\b"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push_str("\\\\"),
            },
            '(' | ')' | '{' | '}' | '|' | '+' | '?' => {
                out.push('\\');
                out.push(c);
            }
            '*' if at_start => out.push_str("\\*"),
            '[' => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().unwrap());
                }
                if chars.peek() == Some(&']') {
                    chars.next();
                    out.push_str("\\]");
                }
                at_start = false;
                continue;
            }
            c => out.push(c),
        }
        at_start = c == '^' && out.len() == 1;
    }
    out
}

pub fn compile(
    p: &str,
    extended: bool,
    fixed: bool,
    icase: bool,
    whole: bool,
    word: bool,
) -> Option<Regex> {
    let mut core = if fixed {
        regex::escape(p)
    } else if extended {
        p.to_string()
    } else {
        bre(p)
    };
    if word {
        core = format!(r"\b(?:{core})\b");
    }
    if whole {
        core = format!("^(?:{core})$");
    }
    regex::RegexBuilder::new(&core)
        .case_insensitive(icase)
        .build()
        .ok()
}

/// One sed command this emulation understands.
enum SedCmd {
    Subst {
        addr: Option<Regex>,
        re: Regex,
        repl: String,
        global: bool,
        print: bool,
    },
    Delete(Regex),
    Print(Regex),
}

fn split_delim(s: &str, d: char) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some(n) if n == d => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            }
        } else if c == d {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    Some(parts)
}

fn parse_sed(script: &str, extended: bool) -> Option<Vec<SedCmd>> {
    let mut out = Vec::new();
    for cmd in script
        .split([';', '\n'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        let re = |p: &str| compile(p, extended, false, false, false, false);
        let (addr, rest) = if let Some(r) = cmd.strip_prefix('/') {
            let end = r.find('/')?;
            (Some(re(&r[..end])?), r[end + 1..].trim())
        } else {
            (None, cmd)
        };
        if let Some(r) = rest.strip_prefix('s') {
            let d = r.chars().next()?;
            let parts = split_delim(&r[d.len_utf8()..], d)?;
            if parts.len() != 3 {
                return None;
            }
            let repl = parts[1]
                .replace("$", "$$")
                .replace("\\&", "\u{1}")
                .replace('&', "${0}")
                .replace('\u{1}', "&");
            let mut repl2 = String::new();
            let mut it = repl.chars().peekable();
            while let Some(c) = it.next() {
                if c == '\\' {
                    match it.next() {
                        Some(n) if n.is_ascii_digit() => repl2.push_str(&format!("${{{n}}}")),
                        Some('n') => repl2.push('\n'),
                        Some(n) => repl2.push(n),
                        None => {}
                    }
                } else {
                    repl2.push(c);
                }
            }
            out.push(SedCmd::Subst {
                addr,
                re: re(&parts[0])?,
                repl: repl2,
                global: parts[2].contains('g'),
                print: parts[2].contains('p'),
            });
        } else if rest == "d" {
            out.push(SedCmd::Delete(addr?));
        } else if rest == "p" {
            out.push(SedCmd::Print(addr?));
        } else {
            return None;
        }
    }
    Some(out)
}

/// Run a sed script over `input`; None when the script is beyond this emulation.
pub fn sed(script: &str, input: &str, quiet: bool, extended: bool) -> Option<String> {
    let cmds = parse_sed(script, extended)?;
    let mut out = String::new();
    for line in input.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let mut cur = body.to_string();
        let mut deleted = false;
        for c in &cmds {
            match c {
                SedCmd::Subst {
                    addr,
                    re,
                    repl,
                    global,
                    print,
                } => {
                    if addr.as_ref().is_some_and(|a| !a.is_match(&cur)) {
                        continue;
                    }
                    if re.is_match(&cur) {
                        cur = if *global {
                            re.replace_all(&cur, repl.as_str()).into_owned()
                        } else {
                            re.replace(&cur, repl.as_str()).into_owned()
                        };
                        if *print {
                            out.push_str(&cur);
                            out.push_str(nl);
                        }
                    }
                }
                SedCmd::Delete(a) => {
                    if a.is_match(&cur) {
                        deleted = true;
                        break;
                    }
                }
                SedCmd::Print(a) => {
                    if a.is_match(&cur) {
                        out.push_str(&cur);
                        out.push_str(nl);
                    }
                }
            }
        }
        if !deleted && !quiet {
            out.push_str(&cur);
            out.push_str(nl);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_regular_expressions() {
        assert_eq!(
            sed(
                r"s/\([0-9]*\)\.\([0-9]*\).*/\1 \* 100 + \2/",
                "6.12.0\n",
                false,
                false
            )
            .unwrap(),
            "6 * 100 + 12\n"
        );
        assert_eq!(sed("s/:/ /g", "/a:/b\n", false, false).unwrap(), "/a /b\n");
        assert!(
            compile("^user", false, false, false, false, false)
                .unwrap()
                .is_match("user x")
        );
        assert!(
            compile(r"\bEtc\b", false, false, false, false, false)
                .unwrap()
                .is_match("Asia, Etc")
        );
        assert!(sed("y/a/b/", "a", false, false).is_none());
    }
}
