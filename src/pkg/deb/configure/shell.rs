//! A POSIX shell subset for reading Debian maintainer scripts the way `/bin/sh` would,
//! without running anything of the target: the script's control flow (if, case, for,
//! while, functions, `&&`/`||`, command substitution, here-documents) is evaluated here,
//! and every external command is handed to a [`Host`] that emulates it on the rootfs
//! (adduser, update-alternatives, mkdir…) or reports that it cannot.
//!
//! Only what maintainer scripts use is supported; a script that does not parse is
//! reported, not guessed at. `set -e` is ignored: on a fresh install every failing
//! command of a real run is guarded (the install succeeded), and an emulated command
//! that is not understood must not stop the rest of the script.

use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{Result, bail};

/// One piece of a word.
#[derive(Clone, Debug)]
enum Part {
    /// Literal text; `quoted` text is not split or globbed.
    Lit(String, bool),
    /// `$name`, `${name…}`.
    Param {
        name: String,
        op: String,
        arg: Vec<Part>,
        quoted: bool,
    },
    /// `$(…)` or backquotes: the source text.
    Subst(String, bool),
    /// `$((…))`.
    Arith(Vec<Part>, bool),
}

type Word = Vec<Part>;

#[derive(Clone, Debug)]
enum RedirKind {
    Out,
    Append,
    In,
    Dup,
    HereDoc(String, bool),
}

#[derive(Clone, Debug)]
struct Redir {
    fd: u32,
    kind: RedirKind,
    target: Word,
}

#[derive(Clone, Debug)]
enum Cmd {
    Simple {
        assigns: Vec<(String, Word)>,
        words: Vec<Word>,
        redirs: Vec<Redir>,
    },
    Pipeline(Vec<Cmd>, bool),
    AndOr(Box<Cmd>, Vec<(bool, Cmd)>),
    List(Vec<Cmd>),
    If(Vec<(Cmd, Cmd)>, Option<Box<Cmd>>),
    For(String, Option<Vec<Word>>, Box<Cmd>),
    While(Box<Cmd>, Box<Cmd>, bool),
    Case(Word, Vec<(Vec<Word>, Cmd)>),
    Group(Box<Cmd>, Vec<Redir>),
    FuncDef(String, Rc<Cmd>),
}

// ---------------------------------------------------------------- parsing

struct Parser<'s> {
    s: &'s [u8],
    pos: usize,
    /// Here-documents announced on the current line: (delimiter, strip tabs, expand).
    pending: Vec<(String, bool, bool, usize)>,
    heredocs: HashMap<usize, (String, bool)>,
    next_heredoc: usize,
}

const KEYWORDS: &[&str] = &[
    "if", "then", "elif", "else", "fi", "for", "in", "do", "done", "case", "esac", "while",
    "until", "{", "}", "!",
];

impl<'s> Parser<'s> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at(&self, t: &str) -> bool {
        self.s[self.pos..].starts_with(t.as_bytes())
    }

    fn err<T>(&self, what: &str) -> Result<T> {
        let line = self.s[..self.pos.min(self.s.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        bail!("shell syntax not understood at line {line}: {what}")
    }

    /// Skip blanks, comments and line continuations (not newlines).
    fn blanks(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r') => self.pos += 1,
                Some(b'\\') if self.s.get(self.pos + 1) == Some(&b'\n') => self.pos += 2,
                Some(b'#') => {
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn newline(&mut self) -> bool {
        if self.peek() == Some(b'\n') {
            self.pos += 1;
            self.read_heredocs();
            true
        } else {
            false
        }
    }

    /// Skip blanks, comments, newlines and `;` separators where a list may continue.
    fn linebreaks(&mut self) {
        loop {
            self.blanks();
            if !self.newline() {
                return;
            }
        }
    }

    fn read_heredocs(&mut self) {
        for (delim, strip, expand, id) in std::mem::take(&mut self.pending) {
            let mut body = String::new();
            loop {
                if self.pos >= self.s.len() {
                    break;
                }
                let end = self.s[self.pos..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map(|i| self.pos + i)
                    .unwrap_or(self.s.len());
                let mut line = String::from_utf8_lossy(&self.s[self.pos..end]).into_owned();
                self.pos = (end + 1).min(self.s.len());
                if strip {
                    line = line.trim_start_matches('\t').to_string();
                }
                if line == delim {
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            self.heredocs.insert(id, (body, expand));
        }
    }

    /// The next bare word at the cursor, if it is exactly `kw` (a reserved word).
    fn keyword(&mut self, kw: &str) -> bool {
        self.blanks();
        if self.at(kw) {
            let after = self.s.get(self.pos + kw.len()).copied();
            if matches!(
                after,
                None | Some(b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'\r')
            ) {
                self.pos += kw.len();
                return true;
            }
        }
        false
    }

    fn peek_keyword(&mut self) -> Option<&'static str> {
        self.blanks();
        let save = self.pos;
        for kw in KEYWORDS {
            if self.keyword(kw) {
                self.pos = save;
                return Some(kw);
            }
        }
        None
    }

    fn program(&mut self) -> Result<Cmd> {
        let c = self.list(&[])?;
        self.linebreaks();
        if self.pos < self.s.len() {
            return self.err("unexpected text");
        }
        Ok(c)
    }

    /// A list of and-or commands up to one of the `stop` keywords (or `)`/`;;`/EOF).
    fn list(&mut self, stop: &[&str]) -> Result<Cmd> {
        let mut items = Vec::new();
        loop {
            self.linebreaks();
            if self.pos >= self.s.len() || self.at(")") || self.at(";;") {
                break;
            }
            if let Some(kw) = self.peek_keyword() {
                if stop.contains(&kw) {
                    break;
                }
            }
            items.push(self.and_or()?);
            self.blanks();
            match self.peek() {
                Some(b';') if !self.at(";;") => self.pos += 1,
                Some(b'&') if !self.at("&&") => self.pos += 1,
                Some(b'\n') => {
                    self.newline();
                }
                _ => {}
            }
        }
        Ok(Cmd::List(items))
    }

    fn and_or(&mut self) -> Result<Cmd> {
        let first = self.pipeline()?;
        let mut rest = Vec::new();
        loop {
            self.blanks();
            let and = if self.at("&&") {
                true
            } else if self.at("||") {
                false
            } else {
                break;
            };
            self.pos += 2;
            self.linebreaks();
            rest.push((and, self.pipeline()?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Cmd::AndOr(Box::new(first), rest)
        })
    }

    fn pipeline(&mut self) -> Result<Cmd> {
        let negate = self.keyword("!");
        let mut cmds = vec![self.command()?];
        loop {
            self.blanks();
            if self.at("|") && !self.at("||") {
                self.pos += 1;
                self.linebreaks();
                cmds.push(self.command()?);
            } else {
                break;
            }
        }
        Ok(if cmds.len() == 1 && !negate {
            cmds.pop().unwrap()
        } else {
            Cmd::Pipeline(cmds, negate)
        })
    }

    fn command(&mut self) -> Result<Cmd> {
        self.blanks();
        if self.keyword("if") {
            let mut arms = Vec::new();
            let mut els = None;
            let cond = self.list(&["then"])?;
            self.expect("then")?;
            let body = self.list(&["elif", "else", "fi"])?;
            arms.push((cond, body));
            loop {
                if self.keyword("elif") {
                    let c = self.list(&["then"])?;
                    self.expect("then")?;
                    let b = self.list(&["elif", "else", "fi"])?;
                    arms.push((c, b));
                } else if self.keyword("else") {
                    els = Some(Box::new(self.list(&["fi"])?));
                } else {
                    self.expect("fi")?;
                    break;
                }
            }
            let c = Cmd::If(arms, els);
            return self.trailing_redirs(c);
        }
        if self.keyword("for") {
            self.blanks();
            let var = self
                .name()
                .ok_or_else(|| anyhow::anyhow!("for without a name"))?;
            self.blanks();
            let words = if self.keyword("in") {
                let mut ws = Vec::new();
                loop {
                    self.blanks();
                    if matches!(self.peek(), Some(b';' | b'\n')) {
                        break;
                    }
                    match self.word()? {
                        Some(w) => ws.push(w),
                        None => break,
                    }
                }
                Some(ws)
            } else {
                None
            };
            self.blanks();
            if self.peek() == Some(b';') {
                self.pos += 1;
            }
            self.linebreaks();
            self.expect("do")?;
            let body = self.list(&["done"])?;
            self.expect("done")?;
            let c = Cmd::For(var, words, Box::new(body));
            return self.trailing_redirs(c);
        }
        for (kw, until) in [("while", false), ("until", true)] {
            if self.keyword(kw) {
                let cond = self.list(&["do"])?;
                self.expect("do")?;
                let body = self.list(&["done"])?;
                self.expect("done")?;
                let c = Cmd::While(Box::new(cond), Box::new(body), until);
                return self.trailing_redirs(c);
            }
        }
        if self.keyword("case") {
            self.blanks();
            let w = self
                .word()?
                .ok_or_else(|| anyhow::anyhow!("case without a word"))?;
            self.linebreaks();
            self.expect("in")?;
            let mut arms = Vec::new();
            loop {
                self.linebreaks();
                if self.keyword("esac") {
                    break;
                }
                if self.peek() == Some(b'(') {
                    self.pos += 1;
                }
                let mut pats = Vec::new();
                loop {
                    self.blanks();
                    match self.word()? {
                        Some(p) => pats.push(p),
                        None => return self.err("case pattern"),
                    }
                    self.blanks();
                    if self.peek() == Some(b'|') {
                        self.pos += 1;
                        continue;
                    }
                    if self.peek() == Some(b')') {
                        self.pos += 1;
                        break;
                    }
                    return self.err("case pattern");
                }
                let body = self.list(&["esac"])?;
                self.blanks();
                if self.at(";;") {
                    self.pos += 2;
                }
                arms.push((pats, body));
            }
            let c = Cmd::Case(w, arms);
            return self.trailing_redirs(c);
        }
        if self.keyword("{") {
            let body = self.list(&["}"])?;
            self.expect("}")?;
            let redirs = self.redirs()?;
            return Ok(Cmd::Group(Box::new(body), redirs));
        }
        if self.peek() == Some(b'(') {
            self.pos += 1;
            let body = self.list(&[])?;
            self.blanks();
            if self.peek() != Some(b')') {
                return self.err("unclosed subshell");
            }
            self.pos += 1;
            let redirs = self.redirs()?;
            return Ok(Cmd::Group(Box::new(body), redirs));
        }
        // A function definition: name ( ) compound
        let save = self.pos;
        if let Some(n) = self.name() {
            self.blanks();
            if self.at("()") || self.at("( )") {
                self.pos += if self.at("()") { 2 } else { 3 };
                self.linebreaks();
                let body = self.command()?;
                return Ok(Cmd::FuncDef(n, Rc::new(body)));
            }
        }
        self.pos = save;
        self.simple()
    }

    fn trailing_redirs(&mut self, c: Cmd) -> Result<Cmd> {
        let r = self.redirs()?;
        Ok(if r.is_empty() {
            c
        } else {
            Cmd::Group(Box::new(c), r)
        })
    }

    fn redirs(&mut self) -> Result<Vec<Redir>> {
        let mut out = Vec::new();
        while let Some(r) = self.redir()? {
            out.push(r);
        }
        Ok(out)
    }

    fn expect(&mut self, kw: &str) -> Result<()> {
        self.linebreaks();
        if self.keyword(kw) {
            Ok(())
        } else {
            self.err(&format!("expected `{kw}`"))
        }
    }

    fn name(&mut self) -> Option<String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' || (c == b'-' && self.pos > start) {
                self.pos += 1;
            } else {
                break;
            }
        }
        let n = &self.s[start..self.pos];
        if n.is_empty() || n[0].is_ascii_digit() {
            self.pos = start;
            return None;
        }
        Some(String::from_utf8_lossy(n).into_owned())
    }

    fn redir(&mut self) -> Result<Option<Redir>> {
        self.blanks();
        let save = self.pos;
        let mut fd = None;
        if let Some(c) = self.peek() {
            if c.is_ascii_digit() && matches!(self.s.get(self.pos + 1), Some(b'<' | b'>')) {
                fd = Some((c - b'0') as u32);
                self.pos += 1;
            }
        }
        let (kind, default_fd) = if self.at("<<") {
            let strip = self.at("<<-");
            self.pos += if strip { 3 } else { 2 };
            self.blanks();
            let raw = self.raw_word();
            let expand = !raw.contains(['\'', '"', '\\']);
            let delim: String = raw
                .chars()
                .filter(|c| !matches!(c, '\'' | '"' | '\\'))
                .collect();
            let id = self.next_heredoc;
            self.next_heredoc += 1;
            self.pending.push((delim, strip, expand, id));
            return Ok(Some(Redir {
                fd: fd.unwrap_or(0),
                kind: RedirKind::HereDoc(format!("\u{0}{id}"), expand),
                target: Vec::new(),
            }));
        } else if self.at(">>") {
            self.pos += 2;
            (RedirKind::Append, 1)
        } else if self.at(">&") {
            self.pos += 2;
            (RedirKind::Dup, 1)
        } else if self.at("<&") {
            self.pos += 2;
            (RedirKind::Dup, 0)
        } else if self.at(">|") {
            self.pos += 2;
            (RedirKind::Out, 1)
        } else if self.at(">") {
            self.pos += 1;
            (RedirKind::Out, 1)
        } else if self.at("<") {
            self.pos += 1;
            (RedirKind::In, 0)
        } else {
            self.pos = save;
            return Ok(None);
        };
        self.blanks();
        let target = match self.word()? {
            Some(w) => w,
            None => return self.err("redirection without a target"),
        };
        Ok(Some(Redir {
            fd: fd.unwrap_or(default_fd),
            kind,
            target,
        }))
    }

    /// The source text of a word, unparsed (here-document delimiters).
    fn raw_word(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(
                c,
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b')'
            ) {
                break;
            }
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    fn simple(&mut self) -> Result<Cmd> {
        let mut assigns = Vec::new();
        let mut words = Vec::new();
        let mut redirs = Vec::new();
        loop {
            if let Some(r) = self.redir()? {
                redirs.push(r);
                continue;
            }
            self.blanks();
            if words.is_empty() {
                let save = self.pos;
                if let Some(n) = self.name() {
                    if self.peek() == Some(b'=') {
                        self.pos += 1;
                        let v = self.word()?.unwrap_or_default();
                        assigns.push((n, v));
                        continue;
                    }
                }
                self.pos = save;
            }
            match self.word()? {
                Some(w) => words.push(w),
                None => break,
            }
        }
        if assigns.is_empty() && words.is_empty() && redirs.is_empty() {
            return self.err("empty command");
        }
        Ok(Cmd::Simple {
            assigns,
            words,
            redirs,
        })
    }

    /// One word (None at an operator, newline or end).
    fn word(&mut self) -> Result<Option<Word>> {
        let mut parts: Word = Vec::new();
        let mut lit = String::new();
        let flush = |lit: &mut String, parts: &mut Word, q: bool| {
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(lit), q));
            }
        };
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')' | b'\r' => {
                    break;
                }
                b'\\' => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'\n') => self.pos += 1,
                        Some(n) => {
                            flush(&mut lit, &mut parts, false);
                            parts.push(Part::Lit((n as char).to_string(), true));
                            self.pos += 1;
                        }
                        None => {}
                    }
                }
                b'\'' => {
                    flush(&mut lit, &mut parts, false);
                    self.pos += 1;
                    let s = self.pos;
                    while !matches!(self.peek(), None | Some(b'\'')) {
                        self.pos += 1;
                    }
                    parts.push(Part::Lit(
                        String::from_utf8_lossy(&self.s[s..self.pos]).into_owned(),
                        true,
                    ));
                    self.pos += 1;
                }
                b'"' => {
                    flush(&mut lit, &mut parts, false);
                    self.pos += 1;
                    let inner = self.dquoted()?;
                    if inner.is_empty() {
                        parts.push(Part::Lit(String::new(), true));
                    }
                    parts.extend(inner);
                }
                b'$' | b'`' => {
                    flush(&mut lit, &mut parts, false);
                    parts.push(self.dollar(false)?);
                }
                _ => {
                    // Multi-byte UTF-8 is copied through as bytes of a String.
                    let ch_len = utf8_len(c);
                    lit.push_str(&String::from_utf8_lossy(
                        &self.s[self.pos..(self.pos + ch_len).min(self.s.len())],
                    ));
                    self.pos += ch_len;
                }
            }
        }
        flush(&mut lit, &mut parts, false);
        if self.pos == start {
            return Ok(None);
        }
        Ok(Some(parts))
    }

    /// The inside of "…" (cursor after the opening quote; consumes the closing one).
    fn dquoted(&mut self) -> Result<Word> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        loop {
            match self.peek() {
                None => return self.err("unterminated \""),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let n = self.s.get(self.pos + 1).copied();
                    match n {
                        Some(b'$' | b'`' | b'"' | b'\\') => {
                            lit.push(n.unwrap() as char);
                            self.pos += 2;
                        }
                        Some(b'\n') => self.pos += 2,
                        _ => {
                            lit.push('\\');
                            self.pos += 1;
                        }
                    }
                }
                Some(b'$' | b'`') => {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit), true));
                    }
                    parts.push(self.dollar(true)?);
                }
                Some(c) => {
                    let l = utf8_len(c);
                    lit.push_str(&String::from_utf8_lossy(
                        &self.s[self.pos..(self.pos + l).min(self.s.len())],
                    ));
                    self.pos += l;
                }
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit, true));
        }
        Ok(parts)
    }

    /// `$…` or a backquoted command (cursor at `$` or `` ` ``).
    fn dollar(&mut self, quoted: bool) -> Result<Part> {
        if self.peek() == Some(b'`') {
            self.pos += 1;
            let s = self.pos;
            while !matches!(self.peek(), None | Some(b'`')) {
                if self.peek() == Some(b'\\') {
                    self.pos += 1;
                }
                self.pos += 1;
            }
            let src = String::from_utf8_lossy(&self.s[s..self.pos]).replace("\\`", "`");
            self.pos += 1;
            return Ok(Part::Subst(src, quoted));
        }
        self.pos += 1; // $
        if self.at("((") {
            self.pos += 2;
            let s = self.pos;
            let mut depth = 0;
            loop {
                match self.peek() {
                    None => return self.err("unterminated $(("),
                    Some(b'(') => depth += 1,
                    Some(b')') if depth > 0 => depth -= 1,
                    Some(b')') if self.at("))") => break,
                    _ => {}
                }
                self.pos += 1;
            }
            let inner = self.s[s..self.pos].to_vec();
            self.pos += 2;
            let mut p = Parser {
                s: &inner,
                pos: 0,
                pending: vec![],
                heredocs: HashMap::new(),
                next_heredoc: 0,
            };
            let mut parts = Vec::new();
            while p.pos < inner.len() {
                p.blanks();
                if let Some(w) = p.word()? {
                    parts.extend(w);
                    parts.push(Part::Lit(" ".into(), true));
                } else if p.pos < inner.len() {
                    parts.push(Part::Lit((inner[p.pos] as char).to_string(), true));
                    p.pos += 1;
                }
            }
            return Ok(Part::Arith(parts, quoted));
        }
        if self.peek() == Some(b'(') {
            self.pos += 1;
            let s = self.pos;
            let mut depth = 1;
            let mut in_sq = false;
            let mut in_dq = false;
            while let Some(c) = self.peek() {
                match c {
                    b'\'' if !in_dq => in_sq = !in_sq,
                    b'"' if !in_sq => in_dq = !in_dq,
                    b'\\' if !in_sq => self.pos += 1,
                    b'(' if !in_sq && !in_dq => depth += 1,
                    b')' if !in_sq && !in_dq => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                self.pos += 1;
            }
            let src = String::from_utf8_lossy(&self.s[s..self.pos]).into_owned();
            self.pos += 1;
            return Ok(Part::Subst(src, quoted));
        }
        if self.peek() == Some(b'{') {
            self.pos += 1;
            let mut name = String::new();
            if self.peek() == Some(b'#') && self.s.get(self.pos + 1) != Some(&b'}') {
                self.pos += 1;
                let n = self.param_name();
                if self.peek() != Some(b'}') {
                    return self.err("${#…}");
                }
                self.pos += 1;
                return Ok(Part::Param {
                    name: n,
                    op: "#len".into(),
                    arg: vec![],
                    quoted,
                });
            }
            name.push_str(&self.param_name());
            let mut op = String::new();
            for o in [
                ":-", ":=", ":+", ":?", "##", "%%", "-", "=", "+", "?", "#", "%",
            ] {
                if self.at(o) {
                    op = o.to_string();
                    self.pos += o.len();
                    break;
                }
            }
            let mut arg = Vec::new();
            let mut lit = String::new();
            loop {
                match self.peek() {
                    None => return self.err("unterminated ${"),
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    Some(b'"') => {
                        if !lit.is_empty() {
                            arg.push(Part::Lit(std::mem::take(&mut lit), quoted));
                        }
                        self.pos += 1;
                        arg.extend(self.dquoted()?);
                    }
                    Some(b'\'') if !quoted => {
                        self.pos += 1;
                        let s = self.pos;
                        while !matches!(self.peek(), None | Some(b'\'')) {
                            self.pos += 1;
                        }
                        if !lit.is_empty() {
                            arg.push(Part::Lit(std::mem::take(&mut lit), quoted));
                        }
                        arg.push(Part::Lit(
                            String::from_utf8_lossy(&self.s[s..self.pos]).into_owned(),
                            true,
                        ));
                        self.pos += 1;
                    }
                    Some(b'$' | b'`') => {
                        if !lit.is_empty() {
                            arg.push(Part::Lit(std::mem::take(&mut lit), quoted));
                        }
                        arg.push(self.dollar(quoted)?);
                    }
                    Some(b'\\') => {
                        if let Some(n) = self.s.get(self.pos + 1) {
                            lit.push(*n as char);
                        }
                        self.pos += 2;
                    }
                    Some(c) => {
                        lit.push(c as char);
                        self.pos += 1;
                    }
                }
            }
            if !lit.is_empty() {
                arg.push(Part::Lit(lit, quoted));
            }
            return Ok(Part::Param {
                name,
                op,
                arg,
                quoted,
            });
        }
        let n = self.param_name();
        if n.is_empty() {
            return Ok(Part::Lit("$".into(), quoted));
        }
        Ok(Part::Param {
            name: n,
            op: String::new(),
            arg: vec![],
            quoted,
        })
    }

    fn param_name(&mut self) -> String {
        match self.peek() {
            Some(c @ (b'@' | b'*' | b'#' | b'?' | b'$' | b'!' | b'-' | b'0'..=b'9')) => {
                self.pos += 1;
                (c as char).to_string()
            }
            _ => {
                let s = self.pos;
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || c == b'_' {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                String::from_utf8_lossy(&self.s[s..self.pos]).into_owned()
            }
        }
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// A parsed script.
#[derive(Clone, Debug)]
pub struct Script {
    body: Cmd,
    heredocs: Rc<HashMap<usize, (String, bool)>>,
}

/// Parse shell source.
pub fn parse(src: &str) -> Result<Script> {
    let mut p = Parser {
        s: src.as_bytes(),
        pos: 0,
        pending: vec![],
        heredocs: HashMap::new(),
        next_heredoc: 0,
    };
    let body = p.program()?;
    p.read_heredocs();
    Ok(Script {
        body,
        heredocs: Rc::new(p.heredocs),
    })
}

/// The commands a script names, with their literal arguments (a word with expansions
/// is left out): what the plan lists before anything is unpacked. A function the script
/// defines appears as `NAME()`, before the commands of its body.
pub fn commands(script: &Script) -> Vec<Vec<String>> {
    fn lit(w: &Word) -> Option<String> {
        let mut s = String::new();
        for p in w {
            match p {
                Part::Lit(t, _) => s.push_str(t),
                _ => return None,
            }
        }
        Some(s)
    }
    fn walk(c: &Cmd, out: &mut Vec<Vec<String>>) {
        match c {
            Cmd::Simple { words, .. } => {
                if let Some(first) = words.first().and_then(lit) {
                    let mut v = vec![first];
                    v.extend(words[1..].iter().filter_map(lit));
                    out.push(v);
                }
            }
            Cmd::Pipeline(cs, _) | Cmd::List(cs) => cs.iter().for_each(|c| walk(c, out)),
            Cmd::AndOr(a, rest) => {
                walk(a, out);
                rest.iter().for_each(|(_, c)| walk(c, out));
            }
            Cmd::If(arms, els) => {
                for (a, b) in arms {
                    walk(a, out);
                    walk(b, out);
                }
                if let Some(e) = els {
                    walk(e, out);
                }
            }
            Cmd::For(_, _, b) | Cmd::Group(b, _) => walk(b, out),
            Cmd::While(a, b, _) => {
                walk(a, out);
                walk(b, out);
            }
            Cmd::Case(_, arms) => arms.iter().for_each(|(_, b)| walk(b, out)),
            Cmd::FuncDef(name, b) => {
                // A call of the script's own function is not a command it runs.
                out.push(vec![format!("{name}()")]);
                walk(b, out)
            }
        }
    }
    let mut out = Vec::new();
    walk(&script.body, &mut out);
    out
}

/// Whether the interpreter itself handles `name` (a shell builtin).
pub fn builtin(name: &str) -> bool {
    is_builtin(name)
        || matches!(
            name,
            "readonly"
                | "trap"
                | "cd"
                | "wait"
                | "hash"
                | "ulimit"
                | "break"
                | "continue"
                | "source"
        )
}

// ---------------------------------------------------------------- evaluation

/// What a command's redirections give it: its input (a here-document or a file) and where
/// its output goes (a path and whether to append; an empty path is the caller's output).
type Redirected = (Option<Vec<u8>>, Option<(String, bool)>);

/// What an external command did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: i32,
    pub stdout: Vec<u8>,
}

impl Outcome {
    pub fn ok() -> Outcome {
        Outcome::default()
    }
    pub fn status(status: i32) -> Outcome {
        Outcome {
            status,
            stdout: Vec::new(),
        }
    }
    pub fn text(s: impl Into<String>) -> Outcome {
        Outcome {
            status: 0,
            stdout: s.into().into_bytes(),
        }
    }
}

/// The emulated system a script runs against.
pub trait Host {
    /// Run an external command (not a shell builtin or function).
    fn exec(&mut self, sh: &mut Shell, argv: &[String], stdin: &[u8]) -> Result<Outcome>;
    /// Read a file of the rootfs (redirections, `.`), None when absent.
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>>;
    /// Write (or append to) a file of the rootfs (redirections).
    fn write(&mut self, path: &str, data: &[u8], append: bool) -> Result<()>;
    /// `test`'s file predicates: -e -f -d -L -h -x -r -w -s.
    fn test_file(&mut self, op: &str, path: &str) -> Result<bool>;
    /// Names in a directory (globbing), sorted.
    fn list(&mut self, dir: &str) -> Result<Vec<String>>;
    /// `. FILE`: Some(script) to run it, None to treat it as done (e.g. debconf's
    /// confmodule, which the host emulates through `db_*` commands).
    fn source(&mut self, path: &str) -> Result<Option<String>>;
}

enum Flow {
    Exit(i32),
    Return(i32),
    Break(u32),
    Continue(u32),
}

type Run = std::result::Result<i32, Flow>;

/// Interpreter state for one script run.
pub struct Shell {
    pub vars: HashMap<String, String>,
    positional: Vec<String>,
    funcs: HashMap<String, Rc<Cmd>>,
    heredocs: Rc<HashMap<usize, (String, bool)>>,
    status: i32,
    depth: usize,
    /// Errors met while running (not fatal), for the caller's report.
    pub errors: Vec<String>,
}

struct Io<'a> {
    input: &'a [u8],
    pos: usize,
    out: Vec<u8>,
}

impl Shell {
    pub fn new(vars: HashMap<String, String>, args: Vec<String>) -> Shell {
        Shell {
            vars,
            positional: args,
            funcs: HashMap::new(),
            heredocs: Rc::new(HashMap::new()),
            status: 0,
            depth: 0,
            errors: Vec::new(),
        }
    }

    /// Run a parsed script; returns its exit status.
    pub fn run(&mut self, script: &Script, host: &mut dyn Host) -> Result<i32> {
        let saved = std::mem::replace(&mut self.heredocs, script.heredocs.clone());
        let mut io = Io {
            input: &[],
            pos: 0,
            out: Vec::new(),
        };
        let r = self.eval(&script.body, host, &mut io);
        self.heredocs = saved;
        Ok(match r? {
            Ok(s) => s,
            Err(Flow::Exit(s)) | Err(Flow::Return(s)) => s,
            Err(_) => self.status,
        })
    }

    fn eval(&mut self, c: &Cmd, host: &mut dyn Host, io: &mut Io<'_>) -> Result<Run> {
        let r = match c {
            Cmd::List(items) => {
                let mut s = 0;
                for i in items {
                    match self.eval(i, host, io)? {
                        Ok(v) => s = v,
                        Err(f) => return Ok(Err(f)),
                    }
                }
                Ok(s)
            }
            Cmd::AndOr(first, rest) => {
                let mut s = match self.eval(first, host, io)? {
                    Ok(v) => v,
                    f => return Ok(f),
                };
                for (and, c) in rest {
                    if (*and && s == 0) || (!*and && s != 0) {
                        s = match self.eval(c, host, io)? {
                            Ok(v) => v,
                            f => return Ok(f),
                        };
                    }
                }
                Ok(s)
            }
            Cmd::Pipeline(cmds, negate) => {
                let mut data: Vec<u8> = io.input[io.pos..].to_vec();
                let mut s = 0;
                for (k, c) in cmds.iter().enumerate() {
                    let mut sub = Io {
                        input: &data,
                        pos: 0,
                        out: Vec::new(),
                    };
                    s = match self.eval(c, host, &mut sub)? {
                        Ok(v) => v,
                        Err(Flow::Exit(v)) if k + 1 < cmds.len() => v,
                        f => return Ok(f),
                    };
                    data = sub.out;
                }
                io.out.extend(data);
                Ok(if *negate { (s == 0) as i32 } else { s })
            }
            Cmd::If(arms, els) => {
                for (cond, body) in arms {
                    match self.eval(cond, host, io)? {
                        Ok(0) => return self.eval(body, host, io),
                        Ok(_) => {}
                        f => return Ok(f),
                    }
                }
                match els {
                    Some(e) => self.eval(e, host, io)?,
                    None => Ok(0),
                }
            }
            Cmd::For(var, words, body) => {
                let items = match words {
                    Some(ws) => {
                        let mut v = Vec::new();
                        for w in ws {
                            v.extend(self.expand(w, host)?);
                        }
                        v
                    }
                    None => self.positional.clone(),
                };
                let mut s = 0;
                for it in items {
                    self.vars.insert(var.clone(), it);
                    match self.eval(body, host, io)? {
                        Ok(v) => s = v,
                        Err(Flow::Break(n)) => {
                            if n > 1 {
                                return Ok(Err(Flow::Break(n - 1)));
                            }
                            break;
                        }
                        Err(Flow::Continue(n)) => {
                            if n > 1 {
                                return Ok(Err(Flow::Continue(n - 1)));
                            }
                        }
                        f => return Ok(f),
                    }
                }
                Ok(s)
            }
            Cmd::While(cond, body, until) => {
                let mut s = 0;
                for _ in 0..100_000 {
                    let c = match self.eval(cond, host, io)? {
                        Ok(v) => v,
                        f => return Ok(f),
                    };
                    if (c == 0) == *until {
                        break;
                    }
                    match self.eval(body, host, io)? {
                        Ok(v) => s = v,
                        Err(Flow::Break(_)) => break,
                        Err(Flow::Continue(_)) => {}
                        f => return Ok(f),
                    }
                }
                Ok(s)
            }
            Cmd::Case(w, arms) => {
                let subject = self.expand_one(w, host)?;
                for (pats, body) in arms {
                    for p in pats {
                        let pat = self.expand_pattern(p, host)?;
                        if glob_match(&pat, &subject) {
                            return self.eval(body, host, io);
                        }
                    }
                }
                Ok(0)
            }
            Cmd::Group(body, redirs) => {
                let (input, target) = self.open_redirs(redirs, host)?;
                match input {
                    Some(data) => {
                        let mut sub = Io {
                            input: &data,
                            pos: 0,
                            out: Vec::new(),
                        };
                        let r = self.eval(body, host, &mut sub)?;
                        self.close_redirs(target, sub.out, host, io)?;
                        r
                    }
                    None => {
                        let start = io.out.len();
                        let r = self.eval(body, host, io)?;
                        let out = io.out.split_off(start);
                        self.close_redirs(target, out, host, io)?;
                        r
                    }
                }
            }
            Cmd::FuncDef(name, body) => {
                self.funcs.insert(name.clone(), body.clone());
                Ok(0)
            }
            Cmd::Simple {
                assigns,
                words,
                redirs,
            } => self.simple(assigns, words, redirs, host, io)?,
        };
        if let Ok(s) = r {
            self.status = s;
        }
        Ok(r)
    }

    /// Input and output redirection of a compound or simple command.
    fn open_redirs(&mut self, redirs: &[Redir], host: &mut dyn Host) -> Result<Redirected> {
        let mut input = None;
        let mut target: Option<(String, bool)> = Some((String::new(), false));
        for r in redirs {
            match &r.kind {
                RedirKind::HereDoc(id, expand) => {
                    let n: usize = id.trim_start_matches('\u{0}').parse().unwrap_or(0);
                    let (body, _) = self.heredocs.get(&n).cloned().unwrap_or_default();
                    let text = if *expand {
                        self.expand_heredoc(&body, host)?
                    } else {
                        body
                    };
                    input = Some(text.into_bytes());
                }
                RedirKind::In => {
                    let p = self.expand_one(&r.target, host)?;
                    input = Some(host.read(&p)?.unwrap_or_default());
                }
                RedirKind::Out | RedirKind::Append if r.fd == 1 => {
                    let p = self.expand_one(&r.target, host)?;
                    target = Some((p, matches!(r.kind, RedirKind::Append)));
                }
                RedirKind::Dup if r.fd == 1 => {
                    // >&2: to stderr, which nobody reads.
                    target = Some(("/dev/null".into(), false));
                }
                _ => {}
            }
        }
        Ok((input, target))
    }

    fn close_redirs(
        &mut self,
        target: Option<(String, bool)>,
        out: Vec<u8>,
        host: &mut dyn Host,
        io: &mut Io<'_>,
    ) -> Result<()> {
        match target {
            Some((p, _)) if p.is_empty() => io.out.extend(out),
            Some((p, _)) if p == "/dev/null" || p.starts_with("/dev/std") => {}
            Some((p, append)) => host.write(&p, &out, append)?,
            None => {}
        }
        Ok(())
    }

    fn simple(
        &mut self,
        assigns: &[(String, Word)],
        words: &[Word],
        redirs: &[Redir],
        host: &mut dyn Host,
        io: &mut Io<'_>,
    ) -> Result<Run> {
        let mut argv = Vec::new();
        for w in words {
            argv.extend(self.expand(w, host)?);
        }
        let mut values = Vec::new();
        for (n, w) in assigns {
            values.push((n.clone(), self.expand_one(w, host)?));
        }
        if argv.is_empty() {
            for (n, v) in values {
                self.vars.insert(n, v);
            }
            // A redirection alone (`: > file`) still creates the file.
            let (_, target) = self.open_redirs(redirs, host)?;
            self.close_redirs(target, Vec::new(), host, io)?;
            return Ok(Ok(self.status));
        }
        let saved: Vec<(String, Option<String>)> = values
            .iter()
            .map(|(n, _)| (n.clone(), self.vars.get(n).cloned()))
            .collect();
        for (n, v) in &values {
            self.vars.insert(n.clone(), v.clone());
        }
        let (input, target) = self.open_redirs(redirs, host)?;
        let stdin_owned;
        let mut sub = match &input {
            Some(d) => {
                stdin_owned = d.clone();
                Io {
                    input: &stdin_owned,
                    pos: 0,
                    out: Vec::new(),
                }
            }
            None => Io {
                input: io.input,
                pos: io.pos,
                out: Vec::new(),
            },
        };
        let r = self.command(&argv, host, &mut sub)?;
        if input.is_none() {
            io.pos = sub.pos;
        }
        self.close_redirs(target, sub.out, host, io)?;
        if !self.funcs.contains_key(&argv[0]) && !matches!(argv[0].as_str(), "export" | "local") {
            for (n, old) in saved {
                match old {
                    Some(v) => self.vars.insert(n, v),
                    None => self.vars.remove(&n),
                };
            }
        }
        Ok(r)
    }

    fn command(&mut self, argv: &[String], host: &mut dyn Host, io: &mut Io<'_>) -> Result<Run> {
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        let status = match a[0] {
            ":" | "true" | "set" | "export" | "readonly" | "trap" | "cd" | "wait" | "hash"
            | "ulimit" => {
                if a[0] == "set" {
                    if let Some(i) = a.iter().position(|x| *x == "--") {
                        self.positional = argv[i + 1..].to_vec();
                    }
                }
                if a[0] == "export" || a[0] == "readonly" {
                    for kv in &argv[1..] {
                        if let Some((k, v)) = kv.split_once('=') {
                            self.vars.insert(k.into(), v.into());
                        }
                    }
                }
                0
            }
            "local" => {
                for kv in &argv[1..] {
                    match kv.split_once('=') {
                        Some((k, v)) => self.vars.insert(k.into(), v.into()),
                        None => self.vars.insert(kv.clone(), String::new()),
                    };
                }
                0
            }
            "false" => 1,
            "unset" => {
                for n in &argv[1..] {
                    self.vars.remove(n);
                    self.funcs.remove(n);
                }
                0
            }
            "shift" => {
                let n: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
                if n > self.positional.len() {
                    1
                } else {
                    self.positional.drain(..n);
                    0
                }
            }
            "exit" => {
                let s = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(self.status);
                return Ok(Err(Flow::Exit(s)));
            }
            "return" => {
                let s = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(self.status);
                return Ok(Err(Flow::Return(s)));
            }
            "break" => {
                return Ok(Err(Flow::Break(
                    a.get(1).and_then(|s| s.parse().ok()).unwrap_or(1),
                )));
            }
            "continue" => {
                return Ok(Err(Flow::Continue(
                    a.get(1).and_then(|s| s.parse().ok()).unwrap_or(1),
                )));
            }
            "echo" => {
                let mut args = &argv[1..];
                let mut newline = true;
                if args.first().map(String::as_str) == Some("-n") {
                    newline = false;
                    args = &args[1..];
                }
                io.out.extend(args.join(" ").as_bytes());
                if newline {
                    io.out.push(b'\n');
                }
                0
            }
            "printf" => {
                if let Some(fmt) = a.get(1) {
                    io.out.extend(printf(fmt, &argv[2..]).as_bytes());
                }
                0
            }
            "test" | "[" => {
                let mut args: Vec<&str> = a[1..].to_vec();
                if a[0] == "[" && args.last() == Some(&"]") {
                    args.pop();
                }
                if self.test(&args, host)? { 0 } else { 1 }
            }
            "read" => {
                let rest = &io.input[io.pos..];
                if rest.is_empty() {
                    1
                } else {
                    let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
                    let line = String::from_utf8_lossy(&rest[..end]).into_owned();
                    io.pos += (end + 1).min(rest.len());
                    let names: Vec<&str> = a[1..]
                        .iter()
                        .copied()
                        .filter(|x| !x.starts_with('-'))
                        .collect();
                    let ifs = self
                        .vars
                        .get("IFS")
                        .cloned()
                        .unwrap_or_else(|| " \t\n".into());
                    let mut fields: Vec<String> = split_fields(&line, &ifs);
                    for (k, n) in names.iter().enumerate() {
                        let v = if k + 1 == names.len() {
                            let rest: Vec<String> = std::mem::take(&mut fields);
                            rest.join(" ")
                        } else if fields.is_empty() {
                            String::new()
                        } else {
                            fields.remove(0)
                        };
                        self.vars.insert(n.to_string(), v);
                    }
                    0
                }
            }
            "." | "source" => {
                let Some(path) = a.get(1) else {
                    return Ok(Ok(1));
                };
                match host.source(path)? {
                    None => 0,
                    Some(src) => match parse(&src) {
                        Ok(script) => {
                            let saved =
                                std::mem::replace(&mut self.heredocs, script.heredocs.clone());
                            let r = self.eval(&script.body, host, io)?;
                            self.heredocs = saved;
                            match r {
                                Ok(s) | Err(Flow::Return(s)) => s,
                                f => return Ok(f),
                            }
                        }
                        Err(e) => {
                            self.errors.push(format!("{path}: {e}"));
                            1
                        }
                    },
                }
            }
            "eval" => {
                let src = argv[1..].join(" ");
                match parse(&src) {
                    Ok(script) => {
                        let saved = std::mem::replace(&mut self.heredocs, script.heredocs.clone());
                        let r = self.eval(&script.body, host, io)?;
                        self.heredocs = saved;
                        return Ok(r);
                    }
                    Err(e) => {
                        self.errors.push(format!("eval: {e}"));
                        1
                    }
                }
            }
            "command" if a.get(1) == Some(&"-v") || a.get(1) == Some(&"-V") => {
                let name = a.get(2).copied().unwrap_or("");
                if self.funcs.contains_key(name) || is_builtin(name) {
                    io.out.extend(format!("{name}\n").as_bytes());
                    0
                } else {
                    let o = host.exec(self, &["command".into(), "-v".into(), name.into()], &[])?;
                    io.out.extend(o.stdout);
                    o.status
                }
            }
            "command" => {
                if argv.len() < 2 {
                    0
                } else {
                    return self.command(&argv[1..], host, io);
                }
            }
            name if self.funcs.contains_key(name) => {
                if self.depth > 50 {
                    self.errors.push(format!("{name}: recursion too deep"));
                    return Ok(Ok(1));
                }
                let body = self.funcs[name].clone();
                let saved = std::mem::replace(&mut self.positional, argv[1..].to_vec());
                self.depth += 1;
                let r = self.eval(&body, host, io)?;
                self.depth -= 1;
                self.positional = saved;
                match r {
                    Ok(s) | Err(Flow::Return(s)) => s,
                    f => return Ok(f),
                }
            }
            _ => {
                let stdin = io.input[io.pos..].to_vec();
                let o = host.exec(self, argv, &stdin)?;
                io.out.extend(o.stdout);
                o.status
            }
        };
        Ok(Ok(status))
    }

    fn test(&mut self, a: &[&str], host: &mut dyn Host) -> Result<bool> {
        // Lowest precedence first: -o, then -a, then !.
        if let Some(i) = a.iter().position(|x| *x == "-o") {
            return Ok(self.test(&a[..i], host)? || self.test(&a[i + 1..], host)?);
        }
        if let Some(i) = a.iter().position(|x| *x == "-a") {
            if i > 0 {
                return Ok(self.test(&a[..i], host)? && self.test(&a[i + 1..], host)?);
            }
        }
        Ok(match a {
            [] => false,
            ["!", rest @ ..] => !self.test(rest, host)?,
            ["(", rest @ .., ")"] => self.test(rest, host)?,
            [s] => !s.is_empty(),
            ["-n", s] => !s.is_empty(),
            ["-z", s] => s.is_empty(),
            [op, p] if op.len() == 2 && op.starts_with('-') => host.test_file(op, p)?,
            [l, "=" | "==", r] => l == r,
            [l, "!=", r] => l != r,
            [l, op, r] if ["-eq", "-ne", "-lt", "-le", "-gt", "-ge"].contains(op) => {
                let (l, r): (i64, i64) =
                    (l.trim().parse().unwrap_or(0), r.trim().parse().unwrap_or(0));
                match *op {
                    "-eq" => l == r,
                    "-ne" => l != r,
                    "-lt" => l < r,
                    "-le" => l <= r,
                    "-gt" => l > r,
                    _ => l >= r,
                }
            }
            _ => {
                self.errors
                    .push(format!("test {} not understood", a.join(" ")));
                false
            }
        })
    }

    // ------------------------------------------------------------ expansion

    fn param(&mut self, name: &str) -> Option<String> {
        match name {
            "#" => Some(self.positional.len().to_string()),
            "?" => Some(self.status.to_string()),
            "@" | "*" => Some(self.positional.join(" ")),
            "$" => Some("1".into()),
            "0" => Some(self.vars.get("0").cloned().unwrap_or_else(|| "sh".into())),
            n if n.chars().all(|c| c.is_ascii_digit()) => {
                let i: usize = n.parse().unwrap_or(0);
                self.positional.get(i - 1).cloned()
            }
            n => self.vars.get(n).cloned(),
        }
    }

    /// Expand a word into fields (split and globbed where unquoted).
    fn expand(&mut self, w: &Word, host: &mut dyn Host) -> Result<Vec<String>> {
        // "$@" alone expands to the positional parameters, one field each.
        if let [
            Part::Param {
                name,
                op,
                quoted: true,
                ..
            },
        ] = w.as_slice()
        {
            if name == "@" && op.is_empty() {
                return Ok(self.positional.clone());
            }
        }
        let mut fields: Vec<String> = Vec::new();
        let mut cur = String::new();
        let mut have = false;
        let mut globbable = false;
        let ifs = self
            .vars
            .get("IFS")
            .cloned()
            .unwrap_or_else(|| " \t\n".into());
        for p in w {
            let (text, quoted) = self.expand_part(p, host)?;
            if quoted {
                cur.push_str(&text);
                have = true;
                continue;
            }
            if matches!(p, Part::Lit(..)) {
                if text.contains(['*', '?', '[']) {
                    globbable = true;
                }
                cur.push_str(&text);
                have = have || !text.is_empty();
                continue;
            }
            // Unquoted expansion: split on IFS.
            let mut first = true;
            let starts_blank = text.starts_with(|c: char| ifs.contains(c));
            let ends_blank = text.ends_with(|c: char| ifs.contains(c));
            let parts = split_fields(&text, &ifs);
            if starts_blank && have {
                fields.push(std::mem::take(&mut cur));
                have = false;
            }
            let n = parts.len();
            for (k, f) in parts.into_iter().enumerate() {
                if !first {
                    fields.push(std::mem::take(&mut cur));
                }
                first = false;
                cur.push_str(&f);
                have = true;
                if k + 1 == n && ends_blank {
                    fields.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
        }
        if have {
            fields.push(cur);
        }
        if globbable {
            let mut out = Vec::new();
            for f in fields {
                out.extend(self.glob(&f, host)?);
            }
            return Ok(out);
        }
        Ok(fields)
    }

    fn glob(&mut self, pat: &str, host: &mut dyn Host) -> Result<Vec<String>> {
        let (dir, base) = match pat.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), pat.to_string()),
        };
        if dir.contains(['*', '?', '[']) || !base.contains(['*', '?', '[']) {
            return Ok(vec![pat.to_string()]);
        }
        let list_dir = if dir.is_empty() { "." } else { dir.as_str() };
        let mut hits: Vec<String> = host
            .list(if pat.starts_with('/') && dir.is_empty() {
                "/"
            } else {
                list_dir
            })?
            .into_iter()
            .filter(|n| !n.starts_with('.') || base.starts_with('.'))
            .filter(|n| glob_match(&base, n))
            .map(|n| {
                if dir.is_empty() {
                    n
                } else {
                    format!("{dir}/{n}")
                }
            })
            .collect();
        hits.sort();
        if hits.is_empty() {
            hits.push(pat.to_string());
        }
        Ok(hits)
    }

    /// Expand a word to one string (assignments, case subjects, redirection targets).
    fn expand_one(&mut self, w: &Word, host: &mut dyn Host) -> Result<String> {
        let mut s = String::new();
        for p in w {
            s.push_str(&self.expand_part(p, host)?.0);
        }
        Ok(s)
    }

    /// A case pattern: quoted parts match literally.
    fn expand_pattern(&mut self, w: &Word, host: &mut dyn Host) -> Result<String> {
        let mut s = String::new();
        for p in w {
            let (t, quoted) = self.expand_part(p, host)?;
            if quoted {
                for c in t.chars() {
                    if matches!(c, '*' | '?' | '[' | '\\') {
                        s.push('\\');
                    }
                    s.push(c);
                }
            } else {
                s.push_str(&t);
            }
        }
        Ok(s)
    }

    fn expand_part(&mut self, p: &Part, host: &mut dyn Host) -> Result<(String, bool)> {
        Ok(match p {
            Part::Lit(s, q) => (s.clone(), *q),
            Part::Subst(src, q) => (self.subst(src, host)?, *q),
            Part::Arith(parts, q) => {
                let mut s = String::new();
                for p in parts {
                    s.push_str(&self.expand_part(p, host)?.0);
                }
                (arith(&s, &self.vars).to_string(), *q)
            }
            Part::Param {
                name,
                op,
                arg,
                quoted,
            } => {
                let val = self.param(name);
                let mut argv = String::new();
                let needs_arg = !matches!(op.as_str(), "" | "#len");
                if needs_arg {
                    for a in arg {
                        argv.push_str(&self.expand_part(a, host)?.0);
                    }
                }
                let set = val.is_some();
                let nonempty = val.as_deref().is_some_and(|v| !v.is_empty());
                let v = val.clone().unwrap_or_default();
                let out = match op.as_str() {
                    "" => v,
                    "#len" => v.chars().count().to_string(),
                    ":-" => {
                        if nonempty {
                            v
                        } else {
                            argv
                        }
                    }
                    "-" => {
                        if set {
                            v
                        } else {
                            argv
                        }
                    }
                    ":=" | "=" => {
                        if (op == ":=" && !nonempty) || (op == "=" && !set) {
                            self.vars.insert(name.clone(), argv.clone());
                            argv
                        } else {
                            v
                        }
                    }
                    ":+" => {
                        if nonempty {
                            argv
                        } else {
                            String::new()
                        }
                    }
                    "+" => {
                        if set {
                            argv
                        } else {
                            String::new()
                        }
                    }
                    ":?" | "?" => v,
                    "#" | "##" => strip_prefix(&v, &argv, op == "##"),
                    "%" | "%%" => strip_suffix(&v, &argv, op == "%%"),
                    _ => v,
                };
                (out, *quoted)
            }
        })
    }

    fn subst(&mut self, src: &str, host: &mut dyn Host) -> Result<String> {
        let script = match parse(src) {
            Ok(s) => s,
            Err(e) => {
                self.errors.push(format!("$({src}): {e}"));
                return Ok(String::new());
            }
        };
        let saved = std::mem::replace(&mut self.heredocs, script.heredocs.clone());
        let mut io = Io {
            input: &[],
            pos: 0,
            out: Vec::new(),
        };
        let r = self.eval(&script.body, host, &mut io)?;
        self.heredocs = saved;
        if let Ok(s) | Err(Flow::Exit(s)) = r {
            self.status = s;
        }
        let mut out = String::from_utf8_lossy(&io.out).into_owned();
        while out.ends_with('\n') {
            out.pop();
        }
        Ok(out)
    }

    fn expand_heredoc(&mut self, body: &str, host: &mut dyn Host) -> Result<String> {
        let mut p = Parser {
            s: body.as_bytes(),
            pos: 0,
            pending: vec![],
            heredocs: HashMap::new(),
            next_heredoc: 0,
        };
        let mut out = String::new();
        while p.pos < body.len() {
            match p.peek() {
                Some(b'$' | b'`') => {
                    let part = p.dollar(true)?;
                    out.push_str(&self.expand_part(&part, host)?.0);
                }
                Some(b'\\') if matches!(p.s.get(p.pos + 1), Some(b'$' | b'`' | b'\\' | b'\n')) => {
                    if p.s[p.pos + 1] != b'\n' {
                        out.push(p.s[p.pos + 1] as char);
                    }
                    p.pos += 2;
                }
                Some(c) => {
                    let l = utf8_len(c);
                    out.push_str(&String::from_utf8_lossy(
                        &p.s[p.pos..(p.pos + l).min(p.s.len())],
                    ));
                    p.pos += l;
                }
                None => break,
            }
        }
        Ok(out)
    }
}

fn is_builtin(n: &str) -> bool {
    matches!(
        n,
        ":" | "true"
            | "false"
            | "echo"
            | "printf"
            | "test"
            | "["
            | "set"
            | "shift"
            | "exit"
            | "return"
            | "export"
            | "unset"
            | "local"
            | "read"
            | "."
            | "eval"
            | "command"
    )
}

fn split_fields(s: &str, ifs: &str) -> Vec<String> {
    s.split(|c: char| ifs.contains(c))
        .filter(|f| !f.is_empty())
        .map(String::from)
        .collect()
}

fn strip_prefix(v: &str, pat: &str, longest: bool) -> String {
    let idx: Vec<usize> = v.char_indices().map(|(i, _)| i).chain([v.len()]).collect();
    let order: Box<dyn Iterator<Item = &usize>> = if longest {
        Box::new(idx.iter().rev())
    } else {
        Box::new(idx.iter())
    };
    for &i in order {
        if glob_match(pat, &v[..i]) {
            return v[i..].to_string();
        }
    }
    v.to_string()
}

fn strip_suffix(v: &str, pat: &str, longest: bool) -> String {
    let idx: Vec<usize> = v.char_indices().map(|(i, _)| i).chain([v.len()]).collect();
    let order: Box<dyn Iterator<Item = &usize>> = if longest {
        Box::new(idx.iter())
    } else {
        Box::new(idx.iter().rev())
    };
    for &i in order {
        if glob_match(pat, &v[i..]) {
            return v[..i].to_string();
        }
    }
    v.to_string()
}

/// Shell pattern matching (`*`, `?`, `[…]`, backslash escapes).
pub fn glob_match(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = s.chars().collect();
    fn m(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|k| m(&p[1..], &t[k..])),
            Some('?') => !t.is_empty() && m(&p[1..], &t[1..]),
            Some('\\') if p.len() > 1 => !t.is_empty() && t[0] == p[1] && m(&p[2..], &t[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|c| *c == ']').map(|e| e + 1) else {
                    return !t.is_empty() && t[0] == '[' && m(&p[1..], &t[1..]);
                };
                if t.is_empty() {
                    return false;
                }
                let mut set = &p[1..end];
                let negate = matches!(set.first(), Some('!' | '^'));
                if negate {
                    set = &set[1..];
                }
                let mut hit = false;
                let mut k = 0;
                while k < set.len() {
                    if k + 2 < set.len() && set[k + 1] == '-' {
                        if set[k] <= t[0] && t[0] <= set[k + 2] {
                            hit = true;
                        }
                        k += 3;
                    } else {
                        if set[k] == t[0] {
                            hit = true;
                        }
                        k += 1;
                    }
                }
                hit != negate && m(&p[end + 1..], &t[1..])
            }
            Some(c) => !t.is_empty() && t[0] == *c && m(&p[1..], &t[1..]),
        }
    }
    m(&p, &t)
}

/// `printf FORMAT ARGS…` for %s, %d and backslash escapes; the format is reused while
/// arguments remain.
fn printf(fmt: &str, args: &[String]) -> String {
    let mut out = String::new();
    let mut k = 0;
    loop {
        let mut chars = fmt.chars().peekable();
        let mut used = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('\\') => out.push('\\'),
                    Some(o) => {
                        out.push('\\');
                        out.push(o);
                    }
                    None => out.push('\\'),
                },
                '%' => {
                    let mut spec = String::new();
                    while let Some(&n) = chars.peek() {
                        spec.push(n);
                        chars.next();
                        if n.is_ascii_alphabetic() || n == '%' {
                            break;
                        }
                    }
                    match spec.chars().last() {
                        Some('%') => out.push('%'),
                        Some('s' | 'd' | 'u' | 'x' | 'o' | 'b') => {
                            out.push_str(args.get(k).map(String::as_str).unwrap_or(""));
                            k += 1;
                            used = true;
                        }
                        _ => {}
                    }
                }
                c => out.push(c),
            }
        }
        if !used || k >= args.len() {
            break;
        }
    }
    out
}

/// `$((…))` with integers, + - * / %, comparisons and parentheses; unknown → 0.
fn arith(expr: &str, vars: &HashMap<String, String>) -> i64 {
    let toks: Vec<String> = {
        let mut v = Vec::new();
        let mut cur = String::new();
        for c in expr.chars() {
            if c.is_alphanumeric() || c == '_' {
                cur.push(c);
            } else {
                if !cur.is_empty() {
                    v.push(std::mem::take(&mut cur));
                }
                if !c.is_whitespace() {
                    v.push(c.to_string());
                }
            }
        }
        if !cur.is_empty() {
            v.push(cur);
        }
        v
    };
    fn atom(t: &[String], i: &mut usize, vars: &HashMap<String, String>) -> i64 {
        let Some(x) = t.get(*i) else { return 0 };
        *i += 1;
        match x.as_str() {
            "(" => {
                let v = sum(t, i, vars);
                *i += 1;
                v
            }
            "-" => -atom(t, i, vars),
            n => n
                .parse()
                .unwrap_or_else(|_| vars.get(n).and_then(|v| v.trim().parse().ok()).unwrap_or(0)),
        }
    }
    fn prod(t: &[String], i: &mut usize, vars: &HashMap<String, String>) -> i64 {
        let mut v = atom(t, i, vars);
        while let Some(op) = t.get(*i) {
            let r = match op.as_str() {
                "*" | "/" | "%" => {
                    *i += 1;
                    atom(t, i, vars)
                }
                _ => break,
            };
            v = match op.as_str() {
                "*" => v * r,
                "/" if r != 0 => v / r,
                "%" if r != 0 => v % r,
                _ => 0,
            };
        }
        v
    }
    fn sum(t: &[String], i: &mut usize, vars: &HashMap<String, String>) -> i64 {
        let mut v = prod(t, i, vars);
        while let Some(op) = t.get(*i) {
            match op.as_str() {
                "+" => {
                    *i += 1;
                    v += prod(t, i, vars)
                }
                "-" => {
                    *i += 1;
                    v -= prod(t, i, vars)
                }
                _ => break,
            }
        }
        v
    }
    let mut i = 0;
    sum(&toks, &mut i, vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        files: std::collections::BTreeMap<String, Vec<u8>>,
        ran: Vec<String>,
    }

    impl Host for Fake {
        fn exec(&mut self, _: &mut Shell, argv: &[String], stdin: &[u8]) -> Result<Outcome> {
            self.ran.push(argv.join(" "));
            Ok(match argv[0].as_str() {
                "cat" => Outcome {
                    status: 0,
                    stdout: stdin.to_vec(),
                },
                "upper" => Outcome::text(String::from_utf8_lossy(stdin).to_uppercase()),
                _ => Outcome::status(1),
            })
        }
        fn read(&mut self, p: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.files.get(p).cloned())
        }
        fn write(&mut self, p: &str, d: &[u8], append: bool) -> Result<()> {
            let e = self.files.entry(p.into()).or_default();
            if !append {
                e.clear();
            }
            e.extend(d);
            Ok(())
        }
        fn test_file(&mut self, _op: &str, p: &str) -> Result<bool> {
            Ok(self.files.contains_key(p))
        }
        fn list(&mut self, _dir: &str) -> Result<Vec<String>> {
            Ok(vec![])
        }
        fn source(&mut self, _p: &str) -> Result<Option<String>> {
            Ok(None)
        }
    }

    fn run(src: &str, args: &[&str]) -> (Fake, i32) {
        let mut f = Fake::default();
        let s = parse(src).unwrap();
        let mut sh = Shell::new(HashMap::new(), args.iter().map(|s| s.to_string()).collect());
        let st = sh.run(&s, &mut f).unwrap();
        (f, st)
    }

    #[test]
    fn control_flow_functions_and_expansion() {
        let src = r#"#!/bin/sh
set -e
X=one
greet() {
    echo "hi $1" > /out
}
case "$1" in
    configure|abort-upgrade)
        if [ -z "$2" ] && [ ! -e /etc/none ]; then
            greet "${X}${DPKG_ROOT:+--root=$DPKG_ROOT}"
        fi
        for d in a b; do
            echo "$d" >> /list
        done
        ;;
    *) exit 1 ;;
esac
v=$(echo nested | upper)
cat > /here <<-EOF
	value=$v
	EOF
tool --flag 'quoted arg' \
    second
exit 0
"#;
        let (f, st) = run(src, &["configure", ""]);
        assert_eq!(st, 0);
        assert_eq!(f.files["/out"], b"hi one\n");
        assert_eq!(f.files["/list"], b"a\nb\n");
        assert_eq!(f.files["/here"], b"value=NESTED\n");
        assert!(f.ran.contains(&"tool --flag quoted arg second".to_string()));
    }

    #[test]
    fn patterns_and_parameter_operators() {
        assert!(glob_match("*.so.[0-9]*", "libc.so.6"));
        assert!(!glob_match("[!a]*", "abc"));
        let (f, _) = run(
            "v=/usr/lib/x.conf; echo \"${v##*/} ${v%.conf} ${#v}\" > /o",
            &[],
        );
        assert_eq!(f.files["/o"], b"x.conf /usr/lib/x 15\n");
    }

    #[test]
    fn negated_pipelines_and_unknown_commands() {
        let (f, _) = run(
            "if ! chronyd -p | grep -q '^user'; then echo yes > /o; fi",
            &[],
        );
        assert_eq!(f.files["/o"], b"yes\n");
    }
}
