//! Form fields whose look the viewer must build: when the form says
//! `/NeedAppearances true` (or a widget has no appearance stream) poppler
//! ignores the stored appearance and draws the field from its value — a
//! text field's text, a combo box's choice, a list box's options, a
//! button's caption when it is on. This module says what to draw, in the
//! widget's rectangle; the interpreter draws it.

use lopdf::{Dictionary, Document, Object};

/// Most `/Parent` links followed to inherit a field attribute.
const MAX_PARENTS: usize = 32;
/// Most characters of a value and options of a list box drawn.
const MAX_VALUE_CHARS: usize = 32 * 1024;
const MAX_OPTIONS: usize = 1000;

/// Field flags (`/Ff`, PDF 32000-1 tables 226–230).
const FF_MULTILINE: i64 = 1 << 12;
const FF_PASSWORD: i64 = 1 << 13;
const FF_PUSH_BUTTON: i64 = 1 << 16;
const FF_COMBO: i64 = 1 << 17;

/// The document's interactive form: whether appearances must be rebuilt,
/// its default resources and appearance string.
pub(crate) struct Form<'a> {
    pub(crate) need_appearances: bool,
    pub(crate) resources: Option<&'a Dictionary>,
    default_appearance: Option<Vec<u8>>,
}

impl<'a> Form<'a> {
    /// The catalog's `/AcroForm`, if any.
    pub(crate) fn of(doc: &'a Document) -> Option<Form<'a>> {
        let form = doc.catalog().ok()?.get(b"AcroForm").ok()?;
        let form = dict(doc, form)?;
        Some(Form {
            need_appearances: matches!(
                form.get(b"NeedAppearances").ok().map(|o| deref(doc, o)),
                Some(Object::Boolean(true))
            ),
            resources: form.get(b"DR").ok().and_then(|o| dict(doc, o)),
            default_appearance: form.get(b"DA").ok().and_then(|o| string(doc, o)),
        })
    }
}

/// What is shown: text (from the field's value) or codes in the field's
/// font (a button caption, usually ZapfDingbats).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shown {
    Text(String),
    Codes(Vec<u8>),
}

/// A run of text at `(x, y)` from the rectangle's lower-left corner.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Run {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) shown: Shown,
}

/// A field as the viewer draws it: its font (a name in the form's
/// resources), the size and the runs; no runs for an empty field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Drawn {
    pub(crate) font: Vec<u8>,
    pub(crate) size: f64,
    pub(crate) runs: Vec<Run>,
}

/// What to draw for the widget `annot` of size `width` × `height` in
/// place of its stored appearance, or `None` when the stored appearance
/// stands (a signature, a widget of no field, or appearances the form
/// does not ask to rebuild).
pub(crate) fn generated(
    doc: &Document,
    form: &Form<'_>,
    annot: &Dictionary,
    has_appearance: bool,
    width: f64,
    height: f64,
) -> Option<Drawn> {
    if annot.get(b"Subtype").ok().and_then(|o| o.as_name().ok()) != Some(b"Widget") {
        return None;
    }
    if has_appearance && !form.need_appearances {
        return None;
    }
    let kind = inherited(doc, annot, b"FT")?.as_name().ok()?.to_vec();
    let flags = inherited(doc, annot, b"Ff")
        .and_then(|o| o.as_i64().ok())
        .unwrap_or(0);
    let da = inherited(doc, annot, b"DA")
        .and_then(|o| string(doc, o))
        .or_else(|| form.default_appearance.clone())
        .unwrap_or_default();
    let (font, da_size) = parse_da(&da);
    let border = border_width(doc, annot);
    let x = border + 2.0;
    let mut drawn = Drawn {
        font: font.unwrap_or_else(|| b"Helv".to_vec()),
        size: da_size,
        runs: Vec::new(),
    };
    match kind.as_slice() {
        b"Tx" => {
            if flags & FF_PASSWORD != 0 {
                return Some(drawn);
            }
            let value = inherited(doc, annot, b"V")
                .and_then(|o| text(doc, o))
                .unwrap_or_default();
            if flags & FF_MULTILINE != 0 {
                drawn.size = if da_size > 0.0 { da_size } else { 12.0 };
                let mut y = height - 3.0;
                for line in value.lines().take(MAX_OPTIONS) {
                    y -= drawn.size;
                    drawn.runs.push(run(x, y, line));
                }
            } else if !value.is_empty() {
                drawn.size = fit(da_size, height, border);
                drawn
                    .runs
                    .push(run(x, 0.5 * height - 0.4 * drawn.size, &value));
            }
        }
        b"Ch" => {
            let options = options(doc, annot);
            if flags & FF_COMBO != 0 {
                let value = match inherited(doc, annot, b"V").map(|o| deref(doc, o)) {
                    Some(Object::Array(a)) => a.first().and_then(|o| text(doc, o)),
                    Some(o) => text(doc, o),
                    None => None,
                }
                .unwrap_or_default();
                let shown = options
                    .iter()
                    .find(|(export, _)| *export == value)
                    .map_or(value.clone(), |(_, display)| display.clone());
                if !shown.is_empty() {
                    drawn.size = fit(da_size, height, border);
                    drawn
                        .runs
                        .push(run(x, 0.5 * height - 0.4 * drawn.size, &shown));
                }
            } else {
                drawn.size = if da_size > 0.0 { da_size } else { 12.0 };
                let top = inherited(doc, annot, b"TI")
                    .and_then(|o| o.as_i64().ok())
                    .map_or(0, |t| t.clamp(0, MAX_OPTIONS as i64) as usize);
                let mut y = height - 3.0;
                for (_, display) in options.iter().skip(top) {
                    y -= 1.1 * drawn.size;
                    drawn.runs.push(run(x, y, display));
                }
            }
        }
        b"Btn" => {
            let caption = annot
                .get(b"MK")
                .ok()
                .and_then(|o| dict(doc, o))
                .and_then(|mk| mk.get(b"CA").ok())
                .and_then(|o| match deref(doc, o) {
                    Object::String(s, _) => Some(s.clone()),
                    _ => None,
                })
                .filter(|c| !c.is_empty());
            let on = flags & FF_PUSH_BUTTON != 0
                || annot
                    .get(b"AS")
                    .ok()
                    .and_then(|o| o.as_name().ok())
                    .is_some_and(|s| s != b"Off");
            if on {
                drawn.size = if da_size > 0.0 { da_size } else { 0.8 * height };
                let y = 0.5 * height - 0.4 * drawn.size;
                match caption {
                    Some(codes) => {
                        let x = (width - 0.5 * drawn.size * codes.len() as f64).max(0.0) / 2.0;
                        drawn.runs.push(Run {
                            x,
                            y,
                            shown: Shown::Codes(codes),
                        });
                    }
                    // A check box without a caption: ZapfDingbats' check mark.
                    None if flags & FF_PUSH_BUTTON == 0 => {
                        drawn.runs.push(Run {
                            x: (width - 0.8 * drawn.size).max(0.0) / 2.0,
                            y,
                            shown: Shown::Text("✓".into()),
                        });
                    }
                    None => {}
                }
            }
        }
        // Signatures keep their own appearance.
        _ => return None,
    }
    Some(drawn)
}

fn run(x: f64, y: f64, text: &str) -> Run {
    Run {
        x,
        y,
        shown: Shown::Text(text.chars().take(MAX_VALUE_CHARS).collect()),
    }
}

/// A single line's font size: the appearance string's, or (0: auto) the
/// field's height inside its border.
fn fit(size: f64, height: f64, border: f64) -> f64 {
    if size > 0.0 {
        size
    } else {
        (height - 2.0 * border).clamp(4.0, 12.0)
    }
}

/// `/BS /W`, else the third number of `/Border`, else 1.
fn border_width(doc: &Document, annot: &Dictionary) -> f64 {
    let bs = annot
        .get(b"BS")
        .ok()
        .and_then(|o| dict(doc, o))
        .and_then(|bs| bs.get(b"W").ok())
        .and_then(|o| number(deref(doc, o)));
    let border = || match annot.get(b"Border").ok().map(|o| deref(doc, o)) {
        Some(Object::Array(a)) => a.get(2).and_then(number),
        _ => None,
    };
    bs.or_else(border)
        .filter(|w| w.is_finite() && (0.0..=100.0).contains(w))
        .unwrap_or(1.0)
}

/// A choice field's `/Opt`: `(export value, displayed text)` pairs.
fn options(doc: &Document, annot: &Dictionary) -> Vec<(String, String)> {
    let Some(Object::Array(opts)) = inherited(doc, annot, b"Opt").map(|o| deref(doc, o)) else {
        return Vec::new();
    };
    opts.iter()
        .take(MAX_OPTIONS)
        .filter_map(|o| match deref(doc, o) {
            Object::Array(pair) => {
                let export = pair.first().and_then(|o| text(doc, o))?;
                let display = pair
                    .get(1)
                    .and_then(|o| text(doc, o))
                    .unwrap_or_else(|| export.clone());
                Some((export, display))
            }
            o => text(doc, o).map(|t| (t.clone(), t)),
        })
        .collect()
}

/// The font name and size of an appearance string (`/Helv 10 Tf 0 g`).
fn parse_da(da: &[u8]) -> (Option<Vec<u8>>, f64) {
    let tokens: Vec<&[u8]> = da
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    for i in (2..tokens.len()).rev() {
        if tokens[i] == b"Tf" {
            let size = std::str::from_utf8(tokens[i - 1])
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| s.is_finite() && (0.0..=1000.0).contains(s))
                .unwrap_or(0.0);
            let font = tokens[i - 2].strip_prefix(b"/").map(<[u8]>::to_vec);
            return (font, size);
        }
    }
    (None, 0.0)
}

/// A field attribute, from the widget or the nearest field above it.
fn inherited<'a>(doc: &'a Document, annot: &'a Dictionary, key: &[u8]) -> Option<&'a Object> {
    let mut node = annot;
    for _ in 0..MAX_PARENTS {
        if let Ok(o) = node.get(key) {
            return Some(deref(doc, o));
        }
        node = dict(doc, node.get(b"Parent").ok()?)?;
    }
    None
}

fn deref<'a>(doc: &'a Document, o: &'a Object) -> &'a Object {
    doc.dereference(o).map_or(o, |(_, o)| o)
}

fn dict<'a>(doc: &'a Document, o: &'a Object) -> Option<&'a Dictionary> {
    deref(doc, o).as_dict().ok()
}

fn number(o: &Object) -> Option<f64> {
    match o {
        Object::Integer(i) => Some(*i as f64),
        Object::Real(r) => Some(f64::from(*r)),
        _ => None,
    }
}

fn string(doc: &Document, o: &Object) -> Option<Vec<u8>> {
    match deref(doc, o) {
        Object::String(s, _) => Some(s.clone()),
        _ => None,
    }
}

/// A text string (PDFDocEncoding or UTF-16 with its mark); a name's
/// bytes for a name.
fn text(doc: &Document, o: &Object) -> Option<String> {
    match deref(doc, o) {
        o @ Object::String(..) => lopdf::decode_text_string(o).ok(),
        Object::Name(n) => Some(String::from_utf8_lossy(n).into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appearance_strings_give_font_and_size() {
        assert_eq!(parse_da(b"/Helv 10 Tf 0 g"), (Some(b"Helv".to_vec()), 10.0));
        assert_eq!(
            parse_da(b"0 0 0 rg /ZaDi 0 Tf"),
            (Some(b"ZaDi".to_vec()), 0.0)
        );
        assert_eq!(parse_da(b"0.3 g"), (None, 0.0));
        assert_eq!(parse_da(b"/F1 1e9 Tf"), (Some(b"F1".to_vec()), 0.0));
    }
}
