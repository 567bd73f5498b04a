//! CMaps: the `ToUnicode` maps of fonts and the embedded encoding CMaps of
//! composite fonts (codespace ranges, `bfchar`/`bfrange`, `cidchar`/`cidrange`).
//!
//! Parsed tolerantly: a malformed entry is skipped, never fatal, and the
//! number of entries kept is bounded so a hostile CMap cannot grow without end.

use std::collections::HashMap;

/// Entries kept per CMap (chars and ranges together).
const MAX_ENTRIES: usize = 200_000;

/// One code of a content string: its value and how many bytes it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Code {
    pub(crate) value: u32,
    pub(crate) len: u8,
}

#[derive(Debug, Clone)]
enum Dst {
    /// The first code maps to this text; later codes increment its last unit.
    Start(Vec<u16>),
    /// One text per code of the range.
    List(Vec<Vec<u16>>),
}

#[derive(Debug, Clone)]
struct Range {
    len: u8,
    lo: u32,
    hi: u32,
    dst: Dst,
}

/// A parsed CMap. Unknown codes map to nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct CMap {
    /// `(len, lo, hi)` codespace ranges.
    codespace: Vec<(u8, u32, u32)>,
    chars: HashMap<Code, Vec<u16>>,
    ranges: Vec<Range>,
    cid_chars: HashMap<Code, u32>,
    cid_ranges: Vec<(u8, u32, u32, u32)>,
    /// 1 for vertical writing.
    pub(crate) wmode: u8,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Hex(Vec<u8>),
    Int(i64),
    Name(Vec<u8>),
    Open,
    Close,
    Word(Vec<u8>),
}

fn tokens(data: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        match b {
            b'%' => {
                while i < data.len() && data[i] != b'\n' && data[i] != b'\r' {
                    i += 1;
                }
            }
            b'<' if data.get(i + 1) == Some(&b'<') => i += 2,
            b'>' if data.get(i + 1) == Some(&b'>') => i += 2,
            b'<' => {
                let mut digits = Vec::new();
                i += 1;
                while i < data.len() && data[i] != b'>' {
                    if data[i].is_ascii_hexdigit() {
                        digits.push(data[i]);
                    }
                    i += 1;
                }
                i += 1;
                if digits.len() % 2 == 1 {
                    digits.push(b'0');
                }
                let bytes = digits
                    .chunks(2)
                    .map(|p| (hex(p[0]) << 4) | hex(p[1]))
                    .collect();
                out.push(Tok::Hex(bytes));
                continue;
            }
            b'(' => {
                // A literal string: kept as its bytes (rare in CMaps).
                let mut depth = 0usize;
                let mut bytes = Vec::new();
                i += 1;
                while i < data.len() {
                    match data[i] {
                        b'\\' => {
                            i += 1;
                            if let Some(&c) = data.get(i) {
                                bytes.push(c);
                            }
                        }
                        b'(' => {
                            depth += 1;
                            bytes.push(b'(');
                        }
                        b')' if depth == 0 => break,
                        b')' => {
                            depth -= 1;
                            bytes.push(b')');
                        }
                        c => bytes.push(c),
                    }
                    i += 1;
                }
                out.push(Tok::Hex(bytes));
            }
            b'[' => out.push(Tok::Open),
            b']' => out.push(Tok::Close),
            b'/' => {
                let start = i + 1;
                i += 1;
                while i < data.len() && !is_delim(data[i]) {
                    i += 1;
                }
                out.push(Tok::Name(data[start..i].to_vec()));
                continue;
            }
            c if c.is_ascii_whitespace() || c == 0 => {}
            _ => {
                let start = i;
                while i < data.len() && !is_delim(data[i]) {
                    i += 1;
                }
                let word = &data[start..i];
                match std::str::from_utf8(word).ok().and_then(|s| s.parse().ok()) {
                    Some(n) => out.push(Tok::Int(n)),
                    None => out.push(Tok::Word(word.to_vec())),
                }
                if i == start {
                    i += 1;
                }
                continue;
            }
        }
        i += 1;
    }
    out
}

fn is_delim(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(b, b'/' | b'[' | b']' | b'<' | b'>' | b'(' | b')' | b'%' | 0)
}

fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d.wrapping_sub(b'A').wrapping_add(10) & 0x0f,
    }
}

fn code_of(bytes: &[u8]) -> Option<Code> {
    if bytes.is_empty() || bytes.len() > 4 {
        return None;
    }
    let value = bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b));
    Some(Code {
        value,
        len: bytes.len() as u8,
    })
}

fn utf16(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks(2)
        .map(|p| {
            if p.len() == 2 {
                u16::from_be_bytes([p[0], p[1]])
            } else {
                u16::from(p[0])
            }
        })
        .collect()
}

impl CMap {
    /// Parses CMap program text.
    pub(crate) fn parse(data: &[u8]) -> CMap {
        let toks = tokens(data);
        let mut map = CMap::default();
        let mut i = 0;
        let mut entries = 0usize;
        while i < toks.len() {
            match &toks[i] {
                Tok::Name(n) if n == b"WMode" => {
                    if let Some(Tok::Int(v)) = toks.get(i + 1) {
                        map.wmode = u8::from(*v == 1);
                    }
                }
                Tok::Word(w) if w == b"begincodespacerange" => {
                    i += 1;
                    while let (Some(Tok::Hex(lo)), Some(Tok::Hex(hi))) =
                        (toks.get(i), toks.get(i + 1))
                    {
                        if let (Some(l), Some(h)) = (code_of(lo), code_of(hi)) {
                            map.codespace.push((l.len, l.value, h.value));
                        }
                        i += 2;
                    }
                    continue;
                }
                Tok::Word(w) if w == b"beginbfchar" => {
                    i += 1;
                    while let (Some(Tok::Hex(src)), Some(dst)) = (toks.get(i), toks.get(i + 1)) {
                        let text = match dst {
                            Tok::Hex(d) => Some(utf16(d)),
                            Tok::Name(n) => {
                                super::encoding::glyph_text(n).map(|s| s.encode_utf16().collect())
                            }
                            _ => None,
                        };
                        if let (Some(code), Some(text)) = (code_of(src), text) {
                            if entries < MAX_ENTRIES {
                                map.chars.insert(code, text);
                                entries += 1;
                            }
                        }
                        i += 2;
                    }
                    continue;
                }
                Tok::Word(w) if w == b"beginbfrange" => {
                    i += 1;
                    while let (Some(Tok::Hex(lo)), Some(Tok::Hex(hi))) =
                        (toks.get(i), toks.get(i + 1))
                    {
                        i += 2;
                        let dst = match toks.get(i) {
                            Some(Tok::Hex(d)) => {
                                i += 1;
                                Some(Dst::Start(utf16(d)))
                            }
                            Some(Tok::Open) => {
                                i += 1;
                                let mut list = Vec::new();
                                while let Some(Tok::Hex(d)) = toks.get(i) {
                                    list.push(utf16(d));
                                    i += 1;
                                }
                                if toks.get(i) == Some(&Tok::Close) {
                                    i += 1;
                                }
                                Some(Dst::List(list))
                            }
                            _ => None,
                        };
                        if let (Some(l), Some(h), Some(dst)) = (code_of(lo), code_of(hi), dst) {
                            if l.value <= h.value && entries < MAX_ENTRIES {
                                map.ranges.push(Range {
                                    len: l.len,
                                    lo: l.value,
                                    hi: h.value,
                                    dst,
                                });
                                entries += 1;
                            }
                        }
                    }
                    continue;
                }
                Tok::Word(w) if w == b"begincidchar" => {
                    i += 1;
                    while let (Some(Tok::Hex(src)), Some(Tok::Int(cid))) =
                        (toks.get(i), toks.get(i + 1))
                    {
                        if let Some(code) = code_of(src) {
                            if entries < MAX_ENTRIES {
                                map.cid_chars.insert(code, u32::try_from(*cid).unwrap_or(0));
                                entries += 1;
                            }
                        }
                        i += 2;
                    }
                    continue;
                }
                Tok::Word(w) if w == b"begincidrange" => {
                    i += 1;
                    while let (Some(Tok::Hex(lo)), Some(Tok::Hex(hi)), Some(Tok::Int(cid))) =
                        (toks.get(i), toks.get(i + 1), toks.get(i + 2))
                    {
                        if let (Some(l), Some(h)) = (code_of(lo), code_of(hi)) {
                            if l.value <= h.value && entries < MAX_ENTRIES {
                                map.cid_ranges.push((
                                    l.len,
                                    l.value,
                                    h.value,
                                    u32::try_from(*cid).unwrap_or(0),
                                ));
                                entries += 1;
                            }
                        }
                        i += 3;
                    }
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        map
    }

    /// The next code of `bytes` by the codespace ranges: the shortest
    /// length whose range holds the leading bytes. `None` when no range
    /// declares that many bytes; the caller then takes its default.
    pub(crate) fn next_code(&self, bytes: &[u8]) -> Option<Code> {
        for len in 1..=4u8 {
            let n = usize::from(len);
            if bytes.len() < n {
                break;
            }
            let value = bytes[..n]
                .iter()
                .fold(0u32, |v, &b| (v << 8) | u32::from(b));
            if self
                .codespace
                .iter()
                .any(|&(l, lo, hi)| l == len && in_range(value, lo, hi, len))
            {
                return Some(Code { value, len });
            }
        }
        None
    }

    /// Code lengths the codespace declares, shortest first.
    pub(crate) fn lengths(&self) -> impl Iterator<Item = u8> + '_ {
        let mut lens: Vec<u8> = self.codespace.iter().map(|c| c.0).collect();
        lens.sort_unstable();
        lens.dedup();
        lens.into_iter()
    }

    /// The Unicode text of `code`, if the CMap maps it.
    pub(crate) fn unicode(&self, code: Code) -> Option<String> {
        if let Some(u) = self.chars.get(&code) {
            return Some(String::from_utf16_lossy(u));
        }
        let range = self
            .ranges
            .iter()
            .rev()
            .find(|r| r.len == code.len && r.lo <= code.value && code.value <= r.hi)
            .or_else(|| {
                // Producers often write 1-byte sources for 2-byte codes and the reverse.
                self.ranges
                    .iter()
                    .rev()
                    .find(|r| r.lo <= code.value && code.value <= r.hi)
            })?;
        let offset = code.value - range.lo;
        match &range.dst {
            Dst::Start(start) => {
                let mut units = start.clone();
                let last = units.last_mut()?;
                *last = last.wrapping_add(u16::try_from(offset).ok()?);
                Some(String::from_utf16_lossy(&units))
            }
            Dst::List(list) => list
                .get(usize::try_from(offset).ok()?)
                .map(|u| String::from_utf16_lossy(u)),
        }
    }

    /// The CID of `code` by the `cidchar`/`cidrange` entries.
    pub(crate) fn cid(&self, code: Code) -> Option<u32> {
        if let Some(&c) = self.cid_chars.get(&code) {
            return Some(c);
        }
        self.cid_ranges
            .iter()
            .find(|&&(len, lo, hi, _)| len == code.len && lo <= code.value && code.value <= hi)
            .map(|&(_, lo, _, cid)| cid + (code.value - lo))
    }

    /// Whether the map carries any text mapping.
    pub(crate) fn is_empty(&self) -> bool {
        self.chars.is_empty() && self.ranges.is_empty()
    }
}

/// Codespace ranges bound each byte separately (PDF 32000-1, 9.7.6.2).
fn in_range(value: u32, lo: u32, hi: u32, len: u8) -> bool {
    (0..len).all(|k| {
        let shift = 8 * u32::from(k);
        let (v, l, h) = (
            (value >> shift) & 0xff,
            (lo >> shift) & 0xff,
            (hi >> shift) & 0xff,
        );
        l <= v && v <= h
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap
/CMapName /Adobe-Identity-UCS def
1 begincodespacerange <0000> <FFFF> endcodespacerange
3 beginbfchar
<0003> <0020>
<0011> <00660069>
<0012> <D835DC00>
endbfchar
2 beginbfrange
<0020> <0022> <0041>
<0030> <0031> [<0078> <0079>]
endbfrange
1 begincidrange <0100> <01ff> 500 endcidrange
endcmap CMapName currentdict /CMap defineresource pop end end";

    fn code(value: u32) -> Code {
        Code { value, len: 2 }
    }

    #[test]
    fn chars_ranges_and_arrays() {
        let m = CMap::parse(SAMPLE);
        assert_eq!(m.unicode(code(3)).as_deref(), Some(" "));
        assert_eq!(
            m.unicode(code(0x11)).as_deref(),
            Some("fi"),
            "a ligature to two code points"
        );
        assert_eq!(
            m.unicode(code(0x12)).as_deref(),
            Some("\u{1D400}"),
            "a surrogate pair"
        );
        assert_eq!(m.unicode(code(0x21)).as_deref(), Some("B"));
        assert_eq!(m.unicode(code(0x22)).as_deref(), Some("C"));
        assert_eq!(m.unicode(code(0x31)).as_deref(), Some("y"));
        assert_eq!(m.unicode(code(0x23)), None);
        assert_eq!(m.cid(code(0x105)), Some(505));
        assert_eq!(m.next_code(&[0x00, 0x41, 0x00]), Some(code(0x41)));
    }

    #[test]
    fn mixed_length_codespace() {
        let m = CMap::parse(b"2 begincodespacerange <00> <80> <8140> <9ffc> endcodespacerange");
        assert_eq!(
            m.next_code(&[0x41, 0x81]),
            Some(Code {
                value: 0x41,
                len: 1
            })
        );
        assert_eq!(
            m.next_code(&[0x88, 0x9f]),
            Some(Code {
                value: 0x889f,
                len: 2
            })
        );
        assert_eq!(m.next_code(&[0xa0]), None);
    }

    #[test]
    fn garbage_is_not_fatal() {
        let m = CMap::parse(b"beginbfchar <01> endbfchar beginbfrange <zz> [ <41 endbfrange ( ");
        assert!(m.unicode(Code { value: 1, len: 1 }).is_none());
    }
}
