//! Fonts as the text engine needs them: how a content string splits into
//! codes, each code's Unicode text and its advance width.
//!
//! Simple fonts (Type1, TrueType, Type3, MMType1): `/Encoding` base
//! encodings and `/Differences`, the built-in encoding of an embedded Type 1
//! program's clear-text part, `/Widths` or the standard 14 metrics.
//! Composite (Type0) fonts: `Identity-H/V`, the predefined Unicode CMaps
//! (`Uni…-UCS2-…`, `Uni…-UTF16-…`), the legacy CJK CMaps decoded by their
//! character sets (Shift-JIS, GBK, Big5, EUC-KR, EUC-JP), embedded CMaps,
//! `/W`, `/DW`, `/W2`, `/DW2`. `ToUnicode` wins over all of these.

use lopdf::{Dictionary, Document, Object};

use super::cmap::{CMap, Code};
use super::encoding::{self, Base, Standard};

/// Bytes read from an embedded font program when looking for its encoding.
const MAX_PROGRAM_SCAN: usize = 256 * 1024;
/// Largest `/W` array entries kept.
const MAX_WIDTH_ENTRIES: usize = 100_000;

/// One code of a shown string.
#[derive(Debug, Clone)]
pub(crate) struct Glyph {
    /// Its Unicode text; empty when the font does not say.
    pub(crate) text: String,
    /// Advance in text space per unit of font size (horizontal, or
    /// vertical for vertical writing; positive).
    pub(crate) width: f64,
    /// The single-byte code 32, to which word spacing applies.
    pub(crate) word_space: bool,
}

/// CID to Unicode of the Adobe CJK collections (see scripts/gen-cid-tables.py).
static CID_TO_UNICODE: &[u8] = include_bytes!("cid2unicode.bin");

/// The Unicode character of `cid` in collection `index` (Japan1, GB1,
/// CNS1, Korea1).
fn collection_char(index: usize, cid: u32) -> Option<char> {
    let word = |at: usize| -> Option<u32> {
        let b = CID_TO_UNICODE.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut at = 0usize;
    for k in 0..=index {
        let n = word(at)? as usize;
        if k == index {
            if (cid as usize) >= n {
                return None;
            }
            return char::from_u32(word(at + 4 + 4 * cid as usize)?).filter(|&c| c != '\0');
        }
        at += 4 + 4 * n;
    }
    None
}

#[derive(Debug)]
enum CidUnicode {
    None,
    /// CIDs of an Adobe collection (index into [`CID_TO_UNICODE`]).
    Collection(usize),
    /// Codes are JIS X 0208 row/cell pairs (the `H` and `V` CMaps).
    Jis,
    /// Codes are UCS-2 / UTF-16BE code units.
    Utf16,
    /// Codes are bytes of a legacy character set.
    Legacy(&'static encoding_rs::Encoding),
}

#[derive(Debug)]
enum Codes {
    /// Two bytes a code (Identity and the UCS-2 CMaps).
    TwoByte,
    /// UTF-16: two bytes, four for a surrogate pair.
    Utf16,
    /// One byte, or two after a lead byte of the character set.
    Lead(fn(u8) -> bool),
    /// An embedded CMap's codespace.
    CMap(Box<CMap>),
}

#[derive(Debug)]
enum Kind {
    Simple {
        text: Vec<Option<String>>,
        widths: Vec<f64>,
    },
    Composite {
        codes: Codes,
        unicode: CidUnicode,
        /// `(first CID, last CID, width)`, sorted by first CID.
        widths: Vec<(u32, u32, f64)>,
        default_width: f64,
        /// Vertical advance (positive, per 1000) for vertical writing.
        vertical_advance: f64,
        identity: bool,
    },
}

/// A loaded font.
#[derive(Debug)]
pub(crate) struct Font {
    kind: Kind,
    to_unicode: Option<CMap>,
    /// 1 for vertical writing.
    pub(crate) wmode: u8,
    /// Scale of glyph heights against 1 text-space unit (1 except for Type 3).
    pub(crate) size_scale: f64,
    /// Multiplier of advance widths into text space (0.001, or the Type 3
    /// font matrix's horizontal scale).
    width_scale: f64,
    /// A bold face (by its descriptor's weight or flags, or its name).
    pub(crate) bold: bool,
}

/// A number, through a reference if need be.
pub(crate) fn number(doc: &Document, o: &Object) -> Option<f64> {
    let o = doc.dereference(o).ok()?.1;
    match o {
        Object::Integer(i) => Some(*i as f64),
        Object::Real(r) => Some(f64::from(*r)),
        _ => None,
    }
}

fn get<'a>(doc: &'a Document, dict: &'a Dictionary, key: &[u8]) -> Option<&'a Object> {
    let o = dict.get(key).ok()?;
    doc.dereference(o).ok().map(|(_, o)| o)
}

fn get_dict<'a>(doc: &'a Document, dict: &'a Dictionary, key: &[u8]) -> Option<&'a Dictionary> {
    match get(doc, dict, key)? {
        Object::Dictionary(d) => Some(d),
        Object::Stream(s) => Some(&s.dict),
        _ => None,
    }
}

fn get_name<'a>(doc: &'a Document, dict: &'a Dictionary, key: &[u8]) -> Option<&'a [u8]> {
    match get(doc, dict, key)? {
        Object::Name(n) => Some(n),
        _ => None,
    }
}

/// Whether a font is a bold face: its descriptor's `/FontWeight` (600 and
/// up) or ForceBold flag, else its name (`Arial-BoldMT`, `NimbusSans-Black`,
/// TeX's `CMBX10` and cm-super's `SFBX1200`), without the subset prefix.
fn is_bold(doc: &Document, dict: &Dictionary, descriptor: Option<&Dictionary>) -> bool {
    if let Some(d) = descriptor {
        let weight = get(doc, d, b"FontWeight").and_then(|o| number(doc, o));
        let flags = get(doc, d, b"Flags")
            .and_then(|o| number(doc, o))
            .unwrap_or(0.0) as i64;
        if weight.is_some_and(|w| w >= 600.0) || flags & (1 << 18) != 0 {
            return true;
        }
    }
    let Some(name) = get_name(doc, dict, b"BaseFont") else {
        return false;
    };
    let name = match name.iter().position(|&b| b == b'+') {
        Some(6) => &name[7..],
        _ => name,
    };
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    ["bold", "black", "heavy", "semibd", "demi"]
        .iter()
        .any(|w| name.contains(w))
        || ["cmbx", "cmssbx", "cmb10", "sfbx", "sfsx", "lmroman10-bold"]
            .iter()
            .any(|p| name.starts_with(p))
}

fn stream_data(doc: &Document, dict: &Dictionary, key: &[u8], limit: usize) -> Option<Vec<u8>> {
    match get(doc, dict, key)? {
        Object::Stream(s) => s
            .decompressed_content_with_limit(limit)
            .ok()
            .or_else(|| (s.content.len() <= limit).then(|| s.content.clone())),
        _ => None,
    }
}

impl Font {
    /// Loads the font `dict`; never fails (an unreadable part falls back).
    pub(crate) fn load(doc: &Document, dict: &Dictionary, stream_limit: usize) -> Font {
        let to_unicode = stream_data(doc, dict, b"ToUnicode", stream_limit)
            .map(|d| CMap::parse(&d))
            .filter(|m| !m.is_empty());
        let subtype = get_name(doc, dict, b"Subtype").unwrap_or(b"Type1");
        if subtype == b"Type0" {
            return Self::composite(doc, dict, to_unicode, stream_limit);
        }
        let mut width_scale = 0.001;
        // For Type 3: |FontMatrix d / a|, applied with the glyph-width guess below.
        let mut size_scale = 1.0;
        if subtype == b"Type3" {
            if let Some(Object::Array(m)) = get(doc, dict, b"FontMatrix") {
                let m: Vec<f64> = m.iter().filter_map(|o| number(doc, o)).collect();
                if m.len() == 6 && m[0] != 0.0 {
                    width_scale = m[0];
                    size_scale = (m[3] / m[0]).abs();
                }
            }
        }
        let standard = get_name(doc, dict, b"BaseFont").and_then(Standard::from_base_font);
        let descriptor = get_dict(doc, dict, b"FontDescriptor");
        let flags = descriptor
            .and_then(|d| get(doc, d, b"Flags"))
            .and_then(|o| number(doc, o))
            .unwrap_or(0.0) as i64;
        let symbolic = flags & 4 != 0 && flags & 32 == 0;

        // Glyph names per code: base encoding, then Differences.
        let mut names: Vec<Option<Vec<u8>>> = vec![None; 256];
        let (enc_base, differences) = match get(doc, dict, b"Encoding") {
            Some(Object::Name(n)) => (Base::from_name(n), None),
            Some(Object::Dictionary(d)) => (
                get_name(doc, d, b"BaseEncoding").and_then(Base::from_name),
                match get(doc, d, b"Differences") {
                    Some(Object::Array(a)) => Some(a),
                    _ => None,
                },
            ),
            _ => (None, None),
        };
        let base = enc_base.or_else(|| standard.map(Standard::builtin));
        let builtin = if base.is_none() {
            descriptor.and_then(|d| program_encoding(doc, d, stream_limit))
        } else {
            None
        };
        if let Some(builtin) = builtin {
            names = builtin;
        } else {
            let base = base.or(if symbolic || subtype == b"Type3" {
                None
            } else if subtype == b"TrueType" {
                Some(Base::WinAnsi)
            } else {
                Some(Base::Standard)
            });
            if let Some(base) = base {
                for (code, slot) in names.iter_mut().enumerate() {
                    let n = base.name(code as u8);
                    if !n.is_empty() {
                        *slot = Some(n.as_bytes().to_vec());
                    }
                }
            }
        }
        if let Some(diffs) = differences {
            let mut code = 0usize;
            for o in diffs {
                match doc.dereference(o).map(|(_, o)| o) {
                    Ok(Object::Integer(i)) => code = usize::try_from(*i).unwrap_or(256),
                    Ok(Object::Name(n)) => {
                        if let Some(slot) = names.get_mut(code) {
                            *slot = Some(n.clone());
                        }
                        code += 1;
                    }
                    _ => {}
                }
            }
        }

        let text: Vec<Option<String>> = names
            .iter()
            .enumerate()
            .map(|(code, name)| match name {
                Some(n) => encoding::glyph_text(n).or_else(|| {
                    encoding::numeric_name(n)
                        .filter(|&v| v >= 32)
                        .and_then(char::from_u32)
                        .map(String::from)
                }),
                // A symbolic font without names: its codes are usually the
                // characters themselves (or 0xF0xx in its own cmap).
                None if symbolic || subtype == b"TrueType" => {
                    (code >= 32).then(|| char::from(code as u8).to_string())
                }
                None => None,
            })
            .collect();

        // Widths.
        let missing = descriptor
            .and_then(|d| get(doc, d, b"MissingWidth"))
            .and_then(|o| number(doc, o));
        let mut widths = vec![f64::NAN; 256];
        if let Some(Object::Array(w)) = get(doc, dict, b"Widths") {
            let first = get(doc, dict, b"FirstChar")
                .and_then(|o| number(doc, o))
                .unwrap_or(0.0)
                .max(0.0) as usize;
            for (k, o) in w.iter().enumerate() {
                if let (Some(slot), Some(v)) = (widths.get_mut(first + k), number(doc, o)) {
                    *slot = v;
                }
            }
        }
        for (code, slot) in widths.iter_mut().enumerate() {
            if !slot.is_nan() {
                continue;
            }
            let afm = standard.and_then(|s| {
                let name = names[code]
                    .as_deref()
                    .and_then(|n| std::str::from_utf8(n).ok())?;
                s.width(name)
            });
            *slot = afm
                .or(missing)
                .unwrap_or(if standard.is_some() { 0.0 } else { 500.0 });
        }
        if subtype == b"Type3" {
            size_scale = type3_size_scale(&names, &widths, width_scale, size_scale);
        }
        Font {
            kind: Kind::Simple { text, widths },
            to_unicode,
            wmode: 0,
            size_scale,
            width_scale,
            bold: is_bold(doc, dict, descriptor),
        }
    }

    fn composite(
        doc: &Document,
        dict: &Dictionary,
        to_unicode: Option<CMap>,
        stream_limit: usize,
    ) -> Font {
        let (codes, unicode, wmode, identity) = match get(doc, dict, b"Encoding") {
            Some(Object::Name(n)) => predefined(n),
            Some(Object::Stream(s)) => {
                let data = s
                    .decompressed_content_with_limit(stream_limit)
                    .unwrap_or_else(|_| s.content.clone());
                let map = CMap::parse(&data);
                let wmode = map.wmode;
                let name = get_name(doc, &s.dict, b"CMapName").unwrap_or(b"");
                let (_, unicode, _, _) = predefined(name);
                (Codes::CMap(Box::new(map)), unicode, wmode, false)
            }
            _ => (Codes::TwoByte, CidUnicode::None, 0, true),
        };
        let cid_font = match get(doc, dict, b"DescendantFonts") {
            Some(Object::Array(a)) => a
                .first()
                .and_then(|o| doc.dereference(o).ok())
                .and_then(|(_, o)| o.as_dict().ok()),
            _ => None,
        };
        let mut widths = Vec::new();
        let mut default_width = 1000.0;
        let mut vertical_advance = 1000.0;
        let mut unicode = unicode;
        if let (CidUnicode::None, Some(cf)) = (&unicode, cid_font) {
            let ordering =
                get_dict(doc, cf, b"CIDSystemInfo").and_then(|i| match get(doc, i, b"Ordering") {
                    Some(Object::String(s, _)) => Some(s.clone()),
                    _ => None,
                });
            let index = match ordering.as_deref() {
                Some(b"Japan1") => Some(0),
                Some(b"GB1") => Some(1),
                Some(b"CNS1") => Some(2),
                Some(b"Korea1") => Some(3),
                _ => None,
            };
            if let Some(i) = index {
                unicode = CidUnicode::Collection(i);
            }
        }
        if let Some(cf) = cid_font {
            if let Some(dw) = get(doc, cf, b"DW").and_then(|o| number(doc, o)) {
                default_width = dw;
            }
            if let Some(Object::Array(dw2)) = get(doc, cf, b"DW2") {
                if let Some(v) = dw2.get(1).and_then(|o| number(doc, o)) {
                    vertical_advance = v.abs();
                }
            }
            if let Some(Object::Array(w)) = get(doc, cf, b"W") {
                widths = cid_widths(doc, w);
            }
        }
        Font {
            kind: Kind::Composite {
                codes,
                unicode,
                widths,
                default_width,
                vertical_advance,
                identity,
            },
            to_unicode,
            wmode,
            size_scale: 1.0,
            width_scale: 0.001,
            bold: is_bold(
                doc,
                dict,
                cid_font.and_then(|cf| get_dict(doc, cf, b"FontDescriptor")),
            ),
        }
    }

    /// Splits a shown string into glyphs.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Vec<Glyph> {
        let mut out = Vec::with_capacity(bytes.len());
        match &self.kind {
            Kind::Simple { text, widths } => {
                for &b in bytes {
                    let code = Code {
                        value: u32::from(b),
                        len: 1,
                    };
                    let t = self
                        .mapped(code)
                        .or_else(|| text[usize::from(b)].clone())
                        .unwrap_or_default();
                    out.push(Glyph {
                        text: t,
                        width: widths[usize::from(b)] * self.width_scale,
                        word_space: b == 32,
                    });
                }
            }
            Kind::Composite {
                codes,
                unicode,
                widths,
                default_width,
                vertical_advance,
                identity,
            } => {
                let mut i = 0;
                while i < bytes.len() {
                    let rest = &bytes[i..];
                    let len = match codes {
                        Codes::TwoByte => 2,
                        Codes::Utf16 => {
                            let unit = u16::from_be_bytes([rest[0], *rest.get(1).unwrap_or(&0)]);
                            if (0xD800..0xDC00).contains(&unit) && rest.len() >= 4 {
                                4
                            } else {
                                2
                            }
                        }
                        Codes::Lead(is_lead) => {
                            if is_lead(rest[0]) && rest.len() >= 2 {
                                2
                            } else {
                                1
                            }
                        }
                        Codes::CMap(map) => map
                            .next_code(rest)
                            .map_or_else(|| map.lengths().next().unwrap_or(1), |c| c.len),
                    }
                    .min(rest.len() as u8)
                    .max(1);
                    let raw = &rest[..usize::from(len)];
                    i += usize::from(len);
                    let code = Code {
                        value: raw.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b)),
                        len,
                    };
                    let cid = match codes {
                        Codes::CMap(map) => map.cid(code),
                        _ if *identity => Some(code.value),
                        _ => None,
                    };
                    let text = self.mapped(code).unwrap_or_else(|| match unicode {
                        CidUnicode::None => String::new(),
                        CidUnicode::Collection(i) => cid
                            .and_then(|c| collection_char(*i, c))
                            .map(String::from)
                            .unwrap_or_default(),
                        CidUnicode::Jis => {
                            // JIS X 0208 row/cell bytes are EUC-JP less the high bit.
                            let euc: Vec<u8> = raw.iter().map(|b| b | 0x80).collect();
                            decode_legacy(encoding_rs::EUC_JP, &euc)
                        }
                        CidUnicode::Utf16 => {
                            let units: Vec<u16> = raw
                                .chunks(2)
                                .map(|p| u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)]))
                                .collect();
                            String::from_utf16_lossy(&units)
                        }
                        CidUnicode::Legacy(enc) => decode_legacy(enc, raw),
                    });
                    let w = if self.wmode == 1 {
                        *vertical_advance
                    } else {
                        cid.and_then(|c| lookup_width(widths, c))
                            .unwrap_or(*default_width)
                    };
                    out.push(Glyph {
                        text,
                        width: w * self.width_scale,
                        word_space: len == 1 && code.value == 32,
                    });
                }
            }
        }
        out
    }

    fn mapped(&self, code: Code) -> Option<String> {
        self.to_unicode.as_ref().and_then(|m| m.unicode(code))
    }
}

/// The size of a Type 3 font's glyphs cannot be known without drawing
/// them; like poppler, guess it from the width of `m` (0.6 em), else of
/// any letter or glyph (0.5 em).
fn type3_size_scale(
    names: &[Option<Vec<u8>>],
    widths: &[f64],
    width_scale: f64,
    matrix_ratio: f64,
) -> f64 {
    let width = |code: usize| widths[code] * width_scale;
    let one = |code: usize| {
        names[code]
            .as_deref()
            .filter(|n| n.len() == 1)
            .map(|n| n[0])
    };
    let guess = (0..256)
        .find(|&c| one(c) == Some(b'm') && width(c) > 0.0)
        .map(|c| width(c) / 0.6)
        .or_else(|| {
            (0..256)
                .find(|&c| one(c).is_some_and(|b| b.is_ascii_alphabetic()) && width(c) > 0.0)
                .map(|c| width(c) / 0.5)
        })
        .or_else(|| {
            (0..256)
                .find(|&c| names[c].is_some() && width(c) > 0.0)
                .map(|c| width(c) / 0.5)
        })
        .unwrap_or(1.0);
    let scale = guess * matrix_ratio;
    if scale.is_finite() && scale > 0.0 {
        scale.clamp(1e-3, 1e3)
    } else {
        1.0
    }
}

/// A code in a legacy character set, or nothing when it is not valid there.
fn decode_legacy(enc: &'static encoding_rs::Encoding, raw: &[u8]) -> String {
    let (s, _, bad) = enc.decode(raw);
    if bad {
        String::new()
    } else {
        s.into_owned()
    }
}

fn lookup_width(widths: &[(u32, u32, f64)], cid: u32) -> Option<f64> {
    let i = widths.partition_point(|&(lo, _, _)| lo <= cid);
    let &(lo, hi, w) = widths.get(i.checked_sub(1)?)?;
    (lo <= cid && cid <= hi).then_some(w)
}

fn cid_widths(doc: &Document, w: &[Object]) -> Vec<(u32, u32, f64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < w.len() && out.len() < MAX_WIDTH_ENTRIES {
        let Some(first) = number(doc, &w[i]) else {
            i += 1;
            continue;
        };
        let first = first.max(0.0) as u32;
        match w.get(i + 1).map(|o| doc.dereference(o).map(|(_, o)| o)) {
            Some(Ok(Object::Array(list))) => {
                for (k, o) in list.iter().enumerate().take(MAX_WIDTH_ENTRIES) {
                    if let Some(v) = number(doc, o) {
                        let c = first.saturating_add(k as u32);
                        out.push((c, c, v));
                    }
                }
                i += 2;
            }
            Some(Ok(_)) => {
                let last = w.get(i + 1).and_then(|o| number(doc, o));
                let width = w.get(i + 2).and_then(|o| number(doc, o));
                if let (Some(last), Some(width)) = (last, width) {
                    out.push((first, (last.max(0.0) as u32).max(first), width));
                }
                i += 3;
            }
            _ => break,
        }
    }
    out.sort_by_key(|e| e.0);
    out
}

fn sjis_lead(b: u8) -> bool {
    matches!(b, 0x81..=0x9F | 0xE0..=0xFC)
}

fn euc_lead(b: u8) -> bool {
    (0x81..=0xFE).contains(&b)
}

/// A predefined CMap by name: how codes split, what they mean, the
/// writing mode, and whether CIDs equal codes.
fn predefined(name: &[u8]) -> (Codes, CidUnicode, u8, bool) {
    let n = String::from_utf8_lossy(name);
    let wmode = u8::from(n.ends_with("-V") || n == "V");
    if n == "H" || n == "V" {
        return (Codes::TwoByte, CidUnicode::Jis, wmode, false);
    }
    if n.starts_with("Identity") {
        return (Codes::TwoByte, CidUnicode::None, wmode, true);
    }
    if n.starts_with("Uni") && n.contains("UCS2") {
        return (Codes::TwoByte, CidUnicode::Utf16, wmode, false);
    }
    if n.starts_with("Uni") && n.contains("UTF16") {
        return (Codes::Utf16, CidUnicode::Utf16, wmode, false);
    }
    let legacy = |enc: &'static encoding_rs::Encoding, lead: fn(u8) -> bool| {
        (Codes::Lead(lead), CidUnicode::Legacy(enc), wmode, false)
    };
    if n.contains("RKSJ") {
        return legacy(encoding_rs::SHIFT_JIS, sjis_lead);
    }
    if n.starts_with("GB") {
        return legacy(encoding_rs::GBK, euc_lead);
    }
    if n.contains("B5") || n.starts_with("CNS") {
        return legacy(encoding_rs::BIG5, euc_lead);
    }
    if n.starts_with("KSC") {
        return legacy(encoding_rs::EUC_KR, euc_lead);
    }
    if n.starts_with("EUC") || n.starts_with("83pv") || n.starts_with("90pv") {
        return legacy(encoding_rs::EUC_JP, euc_lead);
    }
    (Codes::TwoByte, CidUnicode::None, wmode, true)
}

/// The built-in encoding of an embedded Type 1 program, read from its
/// clear-text part (`dup 12 /fi put`), as TeX's fonts carry it.
fn program_encoding(
    doc: &Document,
    descriptor: &Dictionary,
    limit: usize,
) -> Option<Vec<Option<Vec<u8>>>> {
    let Some(Object::Stream(s)) = get(doc, descriptor, b"FontFile") else {
        return None;
    };
    let clear = get(doc, &s.dict, b"Length1")
        .and_then(|o| number(doc, o))
        .map_or(MAX_PROGRAM_SCAN, |l| {
            (l.max(0.0) as usize).min(MAX_PROGRAM_SCAN)
        });
    let data = s
        .decompressed_content_with_limit(limit.min(64 * 1024 * 1024))
        .ok()?;
    let data = &data[..clear.min(data.len())];
    let start = find(data, b"/Encoding")?;
    let text = &data[start..];
    if text
        .get(9..)
        .is_some_and(|t| t.trim_ascii_start().starts_with(b"StandardEncoding"))
    {
        return None;
    }
    let mut names: Vec<Option<Vec<u8>>> = vec![None; 256];
    let mut found = false;
    let words: Vec<&[u8]> = text
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .take_while(|w| *w != b"readonly" && *w != b"eexec")
        .collect();
    for win in words.windows(4) {
        if win[0] == b"dup" && win[3] == b"put" {
            if let (Some(code), Some(name)) = (
                std::str::from_utf8(win[1])
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok()),
                win[2].strip_prefix(b"/"),
            ) {
                if let Some(slot) = names.get_mut(code) {
                    *slot = Some(name.to_vec());
                    found = true;
                }
            }
        }
    }
    found.then_some(names)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
