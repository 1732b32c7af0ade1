//! deb822 control data (Packages indexes, Release files, control files, APT .sources):
//! stanzas separated by blank lines, `Field: value` with continuation lines that start
//! with a space or tab. Values borrow from the input, so a 60,000-stanza index parses
//! without copying.

/// One stanza: fields in file order, plus its exact text (for the dpkg status file).
#[derive(Clone, Debug, Default)]
pub struct Stanza<'a> {
    pub fields: Vec<(&'a str, &'a str)>,
    pub text: &'a str,
}

impl<'a> Stanza<'a> {
    /// A field's value (field names compare case-insensitively, as in deb822).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Parse every stanza of `text`. Comment lines (`#`) are skipped.
pub fn parse_stanzas(text: &str) -> Vec<Stanza<'_>> {
    let mut out = Vec::new();
    let mut cur = Stanza::default();
    let mut start: Option<usize> = None;
    let mut end = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let lstart = pos;
        pos += line.len();
        let l = line.trim_end_matches(['\n', '\r']);
        if l.trim().is_empty() {
            if let Some(s) = start.take() {
                cur.text = &text[s..end];
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        if start.is_none() {
            start = Some(lstart);
        }
        end = lstart + l.len();
        if l.starts_with(' ') || l.starts_with('\t') {
            // Continuation: extend the previous value to the end of this line.
            if let Some((_, v)) = cur.fields.last_mut() {
                let vstart = v.as_ptr() as usize - text.as_ptr() as usize;
                *v = &text[vstart..end];
            }
            continue;
        }
        if let Some(colon) = l.find(':') {
            let key = &l[..colon];
            let value = l[colon + 1..].trim_start();
            let vstart = lstart + colon + 1 + (l[colon + 1..].len() - value.len());
            cur.fields.push((key, &text[vstart..end]));
        }
    }
    if let Some(s) = start {
        cur.text = &text[s..end];
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_fields_and_continuations() {
        let t = "Package: a\nDescription: short\n long line\n .\n more\nDepends: b,\n c\n\n\n# c\nPackage: b\r\nVersion: 1\n";
        let s = parse_stanzas(t);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].get("package"), Some("a"));
        assert_eq!(
            s[0].get("Description"),
            Some("short\n long line\n .\n more")
        );
        assert_eq!(s[0].get("Depends"), Some("b,\n c"));
        assert!(s[0].text.starts_with("Package: a") && s[0].text.ends_with(" c"));
        assert_eq!(s[1].get("Version"), Some("1"));
    }
}
