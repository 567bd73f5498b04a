//! Glyph names and simple-font encodings: the base encodings as glyph names,
//! glyph names to Unicode (Adobe Glyph List, `uniXXXX`, `uXXXX[XX]`, and the
//! numeric names some producers use), and the standard 14 fonts' widths.

use super::tables;

/// A named base encoding of a simple font.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    Standard,
    WinAnsi,
    MacRoman,
    Symbol,
    ZapfDingbats,
}

impl Base {
    /// The encoding an `/Encoding` name selects.
    pub(crate) fn from_name(name: &[u8]) -> Option<Base> {
        match name {
            b"WinAnsiEncoding" => Some(Base::WinAnsi),
            b"MacRomanEncoding" | b"MacExpertEncoding" => Some(Base::MacRoman),
            b"StandardEncoding" => Some(Base::Standard),
            _ => None,
        }
    }

    /// The glyph name of `code`, "" when the encoding has none.
    pub(crate) fn name(self, code: u8) -> &'static str {
        let table = match self {
            Base::Standard => &tables::STANDARD,
            Base::WinAnsi => &tables::WIN_ANSI,
            Base::MacRoman => &tables::MAC_ROMAN,
            Base::Symbol => &tables::SYMBOL,
            Base::ZapfDingbats => &tables::ZAPF_DINGBATS,
        };
        table[usize::from(code)]
    }
}

/// The Unicode text of a glyph name, as PDF readers resolve it: the Adobe
/// Glyph List, then `uniXXXX…` (one or more 4-digit groups) and `uXXXX[XX]`,
/// then a name made of components (`f_f_i`, `a.sc`).
pub(crate) fn glyph_text(name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    if let Some(t) = agl(name) {
        return Some(t.to_string());
    }
    // A suffix after a period is a variant (`a.sc`, `one.oldstyle`).
    let base = name.split('.').next().unwrap_or(name);
    if base.is_empty() {
        return None;
    }
    if base != name {
        if let Some(t) = agl(base) {
            return Some(t.to_string());
        }
    }
    if let Some(t) = uni_name(base) {
        return Some(t);
    }
    if base.contains('_') {
        let parts: Option<String> = base
            .split('_')
            .map(|p| agl(p).map(str::to_string).or_else(|| uni_name(p)))
            .collect();
        return parts;
    }
    None
}

fn agl(name: &str) -> Option<&'static str> {
    tables::GLYPH_LIST
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| tables::GLYPH_LIST[i].1)
}

fn uni_name(name: &str) -> Option<String> {
    let scalar = |hex: &str| -> Option<char> {
        let v = u32::from_str_radix(hex, 16).ok()?;
        // Surrogates are not characters.
        char::from_u32(v)
    };
    if let Some(hex) = name.strip_prefix("uni") {
        if !hex.is_empty() && hex.len() % 4 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return (0..hex.len() / 4)
                .map(|k| scalar(&hex[k * 4..k * 4 + 4]))
                .collect();
        }
    }
    if let Some(hex) = name.strip_prefix('u') {
        if (4..=6).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return scalar(hex).map(String::from);
        }
    }
    None
}

/// A numeric glyph name (`g65`, `cid65`, `c65`, `a65`, `G41`): the code it
/// stands for, as producers of Type 3 and subset fonts write them. Only
/// used when a name is not otherwise known.
pub(crate) fn numeric_name(name: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(name).ok()?;
    let letters = s.bytes().take_while(u8::is_ascii_alphabetic).count();
    if letters == 0 || letters > 3 {
        return None;
    }
    let (prefix, digits) = s.split_at(letters);
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    let hex = prefix.len() == 1 && prefix.bytes().all(|b| b.is_ascii_uppercase());
    if hex && digits.len() == 2 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u32::from_str_radix(digits, 16).ok();
    }
    digits.parse().ok()
}

/// Which standard 14 font a `/BaseFont` names (with the aliases Acrobat
/// accepts: Arial, TimesNewRoman, CourierNew; a subset prefix and style
/// suffixes are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standard {
    Helvetica { bold: bool, italic: bool },
    Times { bold: bool, italic: bool },
    Courier,
    Symbol,
    ZapfDingbats,
}

impl Standard {
    pub(crate) fn from_base_font(name: &[u8]) -> Option<Standard> {
        let name = String::from_utf8_lossy(name);
        let name = match name.split_once('+') {
            Some((prefix, rest)) if prefix.len() == 6 => rest.to_string(),
            _ => name.to_string(),
        };
        let lower = name.to_ascii_lowercase().replace([' ', '-', ','], "");
        let bold = lower.contains("bold") || lower.contains("black") || lower.contains("heavy");
        let italic = lower.contains("italic") || lower.contains("oblique");
        if lower.starts_with("courier") {
            Some(Standard::Courier)
        } else if lower.starts_with("helvetica") || lower.starts_with("arial") {
            Some(Standard::Helvetica { bold, italic })
        } else if lower.starts_with("times") {
            Some(Standard::Times { bold, italic })
        } else if lower.starts_with("symbol") {
            Some(Standard::Symbol)
        } else if lower.starts_with("zapfdingbats") || lower.starts_with("dingbats") {
            Some(Standard::ZapfDingbats)
        } else {
            None
        }
    }

    /// The built-in encoding of the font.
    pub(crate) fn builtin(self) -> Base {
        match self {
            Standard::Symbol => Base::Symbol,
            Standard::ZapfDingbats => Base::ZapfDingbats,
            _ => Base::Standard,
        }
    }

    /// Width of `glyph` in 1/1000 em, from the AFM metrics.
    pub(crate) fn width(self, glyph: &str) -> Option<f64> {
        let table = match self {
            Standard::Courier => return Some(600.0),
            Standard::Helvetica {
                bold: false,
                italic: false,
            } => tables::HELVETICA,
            Standard::Helvetica {
                bold: true,
                italic: false,
            } => tables::HELVETICA_BOLD,
            Standard::Helvetica {
                bold: false,
                italic: true,
            } => tables::HELVETICA_OBLIQUE,
            Standard::Helvetica {
                bold: true,
                italic: true,
            } => tables::HELVETICA_BOLD_OBLIQUE,
            Standard::Times {
                bold: false,
                italic: false,
            } => tables::TIMES_ROMAN,
            Standard::Times {
                bold: true,
                italic: false,
            } => tables::TIMES_BOLD,
            Standard::Times {
                bold: false,
                italic: true,
            } => tables::TIMES_ITALIC,
            Standard::Times {
                bold: true,
                italic: true,
            } => tables::TIMES_BOLD_ITALIC,
            Standard::Symbol => tables::SYMBOL_WIDTHS,
            Standard::ZapfDingbats => tables::ZAPF_DINGBATS_WIDTHS,
        };
        table
            .binary_search_by(|(n, _)| (*n).cmp(glyph))
            .ok()
            .map(|i| f64::from(table[i].1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyph_names_resolve() {
        assert_eq!(glyph_text(b"A").as_deref(), Some("A"));
        assert_eq!(glyph_text(b"eacute").as_deref(), Some("é"));
        assert_eq!(glyph_text(b"uni4E2D").as_deref(), Some("中"));
        assert_eq!(glyph_text(b"uni00660069").as_deref(), Some("fi"));
        assert_eq!(glyph_text(b"u1F600").as_deref(), Some("😀"));
        assert_eq!(glyph_text(b"f_f_i").as_deref(), Some("ffi"));
        assert_eq!(glyph_text(b"a.sc").as_deref(), Some("a"));
        assert_eq!(glyph_text(b"bullet").as_deref(), Some("•"));
        assert_eq!(glyph_text(b"nosuchglyph"), None);
        assert_eq!(glyph_text(b"uniD800"), None, "a surrogate is no character");
    }

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(tables::GLYPH_LIST.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(tables::HELVETICA.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(tables::SYMBOL_WIDTHS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn base_encodings_and_metrics() {
        assert_eq!(Base::WinAnsi.name(0xE9), "eacute");
        assert_eq!(Base::Standard.name(0x27), "quoteright");
        assert_eq!(Base::MacRoman.name(0x8E), "eacute");
        assert_eq!(Base::Symbol.name(0x61), "alpha");
        let helv = Standard::from_base_font(b"ABCDEF+Arial,Bold");
        assert_eq!(
            helv,
            Some(Standard::Helvetica {
                bold: true,
                italic: false
            })
        );
        assert_eq!(
            Standard::Helvetica {
                bold: false,
                italic: false
            }
            .width("space"),
            Some(278.0)
        );
        assert_eq!(
            Standard::Times {
                bold: false,
                italic: false
            }
            .width("a"),
            Some(444.0)
        );
        assert_eq!(numeric_name(b"g65"), Some(65));
        assert_eq!(numeric_name(b"G41"), Some(0x41));
        assert_eq!(numeric_name(b"cid1234"), Some(1234));
        assert_eq!(numeric_name(b"alpha"), None);
    }
}
