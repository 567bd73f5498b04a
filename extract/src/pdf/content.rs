//! The content-stream interpreter: runs a page's operators (graphics state,
//! text state and positioning, `TJ` kerning, form XObjects, annotation
//! appearances and the form fields a viewer draws itself) and yields each
//! shown character with its position, advance and size in page space
//! (points, origin top-left of the rotated page, y downwards).

use std::collections::HashMap;
use std::rc::Rc;

use lopdf::content::Content;
use lopdf::{Dictionary, Document, Object, ObjectId};

use super::fields::{self, Drawn, Form, Shown};
use super::font::Font;

/// Nesting of form XObjects followed.
const MAX_FORM_DEPTH: usize = 12;
/// Operators run per page (all streams and forms together).
const MAX_OPERATIONS: usize = 5_000_000;

/// A 2D affine matrix `[a b c d e f]`, row-vector convention (PDF's).
pub(crate) type Matrix = [f64; 6];

pub(crate) const IDENTITY: Matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];

/// `m1 × m2`.
pub(crate) fn mul(m1: &Matrix, m2: &Matrix) -> Matrix {
    [
        m1[0] * m2[0] + m1[1] * m2[2],
        m1[0] * m2[1] + m1[1] * m2[3],
        m1[2] * m2[0] + m1[3] * m2[2],
        m1[2] * m2[1] + m1[3] * m2[3],
        m1[4] * m2[0] + m1[5] * m2[2] + m2[4],
        m1[4] * m2[1] + m1[5] * m2[3] + m2[5],
    ]
}

fn apply(m: &Matrix, x: f64, y: f64) -> (f64, f64) {
    (x * m[0] + y * m[2] + m[4], x * m[1] + y * m[3] + m[5])
}

fn apply_linear(m: &Matrix, x: f64, y: f64) -> (f64, f64) {
    (x * m[0] + y * m[2], x * m[1] + y * m[3])
}

/// A letter of a right-to-left script (Hebrew, Arabic, Syriac, Thaana,
/// their presentation forms).
pub(crate) fn is_rtl(c: char) -> bool {
    matches!(c as u32, 0x0590..=0x08FF | 0xFB1D..=0xFDFF | 0xFE70..=0xFEFF) && !c.is_numeric()
}

/// One character as shown on the page.
#[derive(Debug, Clone)]
pub(crate) struct Char {
    pub(crate) ch: char,
    /// Origin of the glyph.
    pub(crate) x: f64,
    pub(crate) y: f64,
    /// The glyph's advance (without character and word spacing).
    pub(crate) dx: f64,
    pub(crate) dy: f64,
    /// Font size as drawn (points).
    pub(crate) size: f64,
    /// Text direction: 0 left to right, 1 top to bottom, 2 right to left
    /// (upside down), 3 bottom to top.
    pub(crate) rot: u8,
    /// Drawn in a bold face.
    pub(crate) bold: bool,
}

#[derive(Clone)]
struct TextState {
    font: Option<Rc<Font>>,
    size: f64,
    char_space: f64,
    word_space: f64,
    scale: f64,
    leading: f64,
    rise: f64,
}

#[derive(Clone)]
struct GState {
    ctm: Matrix,
    text: TextState,
}

/// Fonts of a document, loaded once each.
#[derive(Default)]
pub(crate) struct FontCache {
    by_id: HashMap<ObjectId, Rc<Font>>,
    by_addr: HashMap<usize, Rc<Font>>,
}

impl FontCache {
    fn get(&mut self, doc: &Document, obj: &Object, limit: usize) -> Option<Rc<Font>> {
        if let Object::Reference(id) = obj {
            if let Some(f) = self.by_id.get(id) {
                return Some(f.clone());
            }
            let dict = doc.get_object(*id).ok()?.as_dict().ok()?;
            let f = Rc::new(Font::load(doc, dict, limit));
            self.by_id.insert(*id, f.clone());
            return Some(f);
        }
        let dict = obj.as_dict().ok()?;
        let addr = std::ptr::from_ref(dict) as usize;
        if let Some(f) = self.by_addr.get(&addr) {
            return Some(f.clone());
        }
        let f = Rc::new(Font::load(doc, dict, limit));
        self.by_addr.insert(addr, f.clone());
        Some(f)
    }
}

/// What the interpreter needs of a page.
pub(crate) struct PageSpace {
    /// User space to page space (rotation, flip, `/UserUnit`).
    pub(crate) matrix: Matrix,
    pub(crate) width: f64,
    pub(crate) height: f64,
}

/// Interprets content streams and collects characters.
pub(crate) struct Interpreter<'a> {
    doc: &'a Document,
    fonts: &'a mut FontCache,
    page: &'a PageSpace,
    stream_limit: usize,
    max_chars: usize,
    pub(crate) chars: Vec<Char>,
    operations: usize,
    /// Set when a limit stopped the page early.
    pub(crate) truncated: bool,
}

fn num(o: &Object) -> Option<f64> {
    match o {
        Object::Integer(i) => Some(*i as f64),
        Object::Real(r) => Some(f64::from(*r)),
        _ => None,
    }
}

fn nums<const N: usize>(ops: &[Object]) -> Option<[f64; N]> {
    if ops.len() < N {
        return None;
    }
    let mut out = [0.0; N];
    for (slot, o) in out.iter_mut().zip(&ops[ops.len() - N..]) {
        *slot = num(o)?;
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

impl<'a> Interpreter<'a> {
    pub(crate) fn new(
        doc: &'a Document,
        fonts: &'a mut FontCache,
        page: &'a PageSpace,
        stream_limit: usize,
        max_chars: usize,
    ) -> Self {
        Interpreter {
            doc,
            fonts,
            page,
            stream_limit,
            max_chars,
            chars: Vec::new(),
            operations: 0,
            truncated: false,
        }
    }

    /// Runs `content` with `resources` under the transformation `ctm`.
    pub(crate) fn run(
        &mut self,
        content: &[u8],
        resources: Option<&Dictionary>,
        ctm: Matrix,
        depth: usize,
    ) {
        let doc = self.doc;
        let mut gs = GState {
            ctm,
            text: TextState {
                font: None,
                size: 0.0,
                char_space: 0.0,
                word_space: 0.0,
                scale: 1.0,
                leading: 0.0,
                rise: 0.0,
            },
        };
        let mut stack: Vec<GState> = Vec::new();
        let mut tm = IDENTITY;
        let mut tlm = IDENTITY;
        let font_dict = resources.and_then(|r| deref_dict(doc, r.get(b"Font").ok()?));
        let xobjects = resources.and_then(|r| deref_dict(doc, r.get(b"XObject").ok()?));
        for op in Content::decode_iter(content) {
            let Ok(op) = op else { break };
            self.operations += 1;
            if self.operations > MAX_OPERATIONS || self.chars.len() >= self.max_chars {
                self.truncated = true;
                return;
            }
            let args = &op.operands;
            match op.operator.as_str() {
                "q" if stack.len() < 1024 => stack.push(gs.clone()),
                "Q" => {
                    if let Some(s) = stack.pop() {
                        gs = s;
                    }
                }
                "cm" => {
                    if let Some(m) = nums::<6>(args) {
                        gs.ctm = mul(&m, &gs.ctm);
                    }
                }
                "BT" => {
                    tm = IDENTITY;
                    tlm = IDENTITY;
                }
                "Tf" => {
                    if let (Some(Object::Name(name)), Some(size)) =
                        (args.first(), args.get(1).and_then(num))
                    {
                        gs.text.size = size;
                        gs.text.font = font_dict
                            .and_then(|d| d.get(name).ok())
                            .and_then(|o| self.fonts.get(doc, o, self.stream_limit));
                    }
                }
                "Tc" => set(args, &mut gs.text.char_space),
                "Tw" => set(args, &mut gs.text.word_space),
                "Tz" => {
                    if let Some([v]) = nums::<1>(args) {
                        gs.text.scale = v / 100.0;
                    }
                }
                "TL" => set(args, &mut gs.text.leading),
                "Ts" => set(args, &mut gs.text.rise),
                "Td" => {
                    if let Some([tx, ty]) = nums::<2>(args) {
                        tlm = mul(&[1.0, 0.0, 0.0, 1.0, tx, ty], &tlm);
                        tm = tlm;
                    }
                }
                "TD" => {
                    if let Some([tx, ty]) = nums::<2>(args) {
                        gs.text.leading = -ty;
                        tlm = mul(&[1.0, 0.0, 0.0, 1.0, tx, ty], &tlm);
                        tm = tlm;
                    }
                }
                "Tm" => {
                    if let Some(m) = nums::<6>(args) {
                        tlm = m;
                        tm = m;
                    }
                }
                "T*" => {
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, 0.0, -gs.text.leading], &tlm);
                    tm = tlm;
                }
                "Tj" => {
                    if let Some(Object::String(s, _)) = args.last() {
                        self.show(s, &gs, &mut tm);
                    }
                }
                "'" => {
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, 0.0, -gs.text.leading], &tlm);
                    tm = tlm;
                    if let Some(Object::String(s, _)) = args.last() {
                        self.show(s, &gs, &mut tm);
                    }
                }
                "\"" => {
                    if let (Some(aw), Some(ac)) =
                        (args.first().and_then(num), args.get(1).and_then(num))
                    {
                        gs.text.word_space = aw;
                        gs.text.char_space = ac;
                    }
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, 0.0, -gs.text.leading], &tlm);
                    tm = tlm;
                    if let Some(Object::String(s, _)) = args.last() {
                        self.show(s, &gs, &mut tm);
                    }
                }
                "TJ" => {
                    if let Some(Object::Array(items)) = args.first() {
                        for item in items {
                            match item {
                                Object::String(s, _) => self.show(s, &gs, &mut tm),
                                other => {
                                    if let Some(n) = num(other) {
                                        let shift = -n / 1000.0 * gs.text.size;
                                        let vertical =
                                            gs.text.font.as_ref().is_some_and(|f| f.wmode == 1);
                                        let t = if vertical {
                                            [1.0, 0.0, 0.0, 1.0, 0.0, shift]
                                        } else {
                                            [1.0, 0.0, 0.0, 1.0, shift * gs.text.scale, 0.0]
                                        };
                                        tm = mul(&t, &tm);
                                    }
                                }
                            }
                        }
                    }
                }
                "Do" if depth < MAX_FORM_DEPTH => {
                    if let (Some(Object::Name(name)), Some(xo)) = (args.first(), xobjects) {
                        self.form(xo, name, resources, &gs.ctm, depth);
                    }
                }
                _ => {}
            }
        }
    }

    /// Draws the normal appearance of each visible annotation (form
    /// fields, free text, stamps) into its rectangle, as viewers and
    /// pdftotext show them.
    pub(crate) fn annotations(&mut self, page: &Dictionary, resources: Option<&Dictionary>) {
        let doc = self.doc;
        let Some(Object::Array(annots)) = page
            .get(b"Annots")
            .ok()
            .and_then(|o| doc.dereference(o).ok())
            .map(|(_, o)| o)
        else {
            return;
        };
        let form = Form::of(doc);
        for annot in annots.iter().take(10_000) {
            let Some(annot) = deref_dict(doc, annot) else {
                continue;
            };
            let flags = annot.get(b"F").ok().and_then(num).unwrap_or(0.0) as i64;
            // Hidden (2) and NoView (32).
            if flags & (2 | 32) != 0 {
                continue;
            }
            let Some(rect) = annot
                .get(b"Rect")
                .ok()
                .and_then(|o| doc.dereference(o).ok())
                .and_then(|(_, o)| o.as_array().ok())
                .and_then(|a| nums::<4>(a))
            else {
                continue;
            };
            let ap = annot.get(b"AP").ok().and_then(|o| deref_dict(doc, o));
            let (rx0, ry0) = (rect[0].min(rect[2]), rect[1].min(rect[3]));
            let (w, h) = ((rect[2] - rect[0]).abs(), (rect[3] - rect[1]).abs());
            if let Some(form) = &form {
                if let Some(drawn) = fields::generated(doc, form, annot, ap.is_some(), w, h) {
                    if self.chars.len() >= self.max_chars {
                        self.truncated = true;
                        return;
                    }
                    self.draw_field(&drawn, form.resources, [1.0, 0.0, 0.0, 1.0, rx0, ry0]);
                    continue;
                }
            }
            let Some(ap) = ap else { continue };
            let Ok(normal) = ap.get(b"N") else { continue };
            // A dictionary of states: the one /AS names.
            let stream_ref = match doc.dereference(normal) {
                Ok((_, Object::Dictionary(states))) => {
                    let Some(state) = annot.get(b"AS").ok().and_then(|o| o.as_name().ok()) else {
                        continue;
                    };
                    match states.get(state) {
                        Ok(o) => o,
                        Err(_) => continue,
                    }
                }
                _ => normal,
            };
            let Ok((_, Object::Stream(stream))) = doc.dereference(stream_ref) else {
                continue;
            };
            let matrix = stream_matrix(doc, &stream.dict);
            let bbox = match stream
                .dict
                .get(b"BBox")
                .ok()
                .and_then(|o| doc.dereference(o).ok())
            {
                Some((_, Object::Array(a))) => nums::<4>(a),
                _ => None,
            };
            let Some(bbox) = bbox else { continue };
            // The form's box, transformed by its matrix, fitted to the rectangle.
            let corners = [
                (bbox[0], bbox[1]),
                (bbox[2], bbox[1]),
                (bbox[0], bbox[3]),
                (bbox[2], bbox[3]),
            ]
            .map(|(x, y)| apply(&matrix, x, y));
            let (bx0, bx1) = corners
                .iter()
                .fold((f64::MAX, f64::MIN), |a, c| (a.0.min(c.0), a.1.max(c.0)));
            let (by0, by1) = corners
                .iter()
                .fold((f64::MAX, f64::MIN), |a, c| (a.0.min(c.1), a.1.max(c.1)));
            let (rx0, rx1) = (rect[0].min(rect[2]), rect[0].max(rect[2]));
            let (ry0, ry1) = (rect[1].min(rect[3]), rect[1].max(rect[3]));
            let sx = if bx1 > bx0 {
                (rx1 - rx0) / (bx1 - bx0)
            } else {
                1.0
            };
            let sy = if by1 > by0 {
                (ry1 - ry0) / (by1 - by0)
            } else {
                1.0
            };
            let fit = [sx, 0.0, 0.0, sy, rx0 - bx0 * sx, ry0 - by0 * sy];
            if self.chars.len() >= self.max_chars {
                self.truncated = true;
                return;
            }
            self.draw_form(stream, resources, &fit, 0);
        }
    }

    /// Draws a form field as the viewer builds it (see [`fields`]): codes
    /// through the field's font, text through the font where it encodes
    /// every character, else glyph by glyph at half an em each.
    fn draw_field(&mut self, drawn: &Drawn, resources: Option<&Dictionary>, ctm: Matrix) {
        let doc = self.doc;
        let font = resources
            .and_then(|r| r.get(b"Font").ok())
            .and_then(|o| deref_dict(doc, o))
            .and_then(|fonts| fonts.get(&drawn.font).ok())
            .and_then(|o| self.fonts.get(doc, o, self.stream_limit))
            .unwrap_or_else(|| {
                // Not in the form's resources: the standard font its name stands for.
                let base: &[u8] = if drawn.font.starts_with(b"ZaD") {
                    b"ZapfDingbats"
                } else {
                    b"Helvetica"
                };
                let mut d = Dictionary::new();
                d.set("Type", Object::Name(b"Font".to_vec()));
                d.set("Subtype", Object::Name(b"Type1".to_vec()));
                d.set("BaseFont", Object::Name(base.to_vec()));
                Rc::new(Font::load(doc, &d, self.stream_limit))
            });
        let gs = GState {
            ctm,
            text: TextState {
                font: Some(font.clone()),
                size: drawn.size,
                char_space: 0.0,
                word_space: 0.0,
                scale: 1.0,
                leading: 0.0,
                rise: 0.0,
            },
        };
        for run in &drawn.runs {
            let mut tm = [1.0, 0.0, 0.0, 1.0, run.x, run.y];
            let codes = match &run.shown {
                Shown::Codes(codes) => Some(codes.clone()),
                Shown::Text(text) => text
                    .chars()
                    .map(|c| {
                        let b = u8::try_from(u32::from(c)).ok()?;
                        let g = font.decode(&[b]);
                        (g.first()?.text.chars().eq(std::iter::once(c))).then_some(b)
                    })
                    .collect(),
            };
            match (codes, &run.shown) {
                (Some(codes), _) => self.show(&codes, &gs, &mut tm),
                (None, Shown::Text(text)) => {
                    let m = mul(&ctm, &self.page.matrix);
                    for (i, ch) in text.chars().enumerate() {
                        let (x, y) = apply(&m, run.x + 0.5 * drawn.size * i as f64, run.y);
                        let (dx, dy) = apply_linear(&m, 0.5 * drawn.size, 0.0);
                        let (ux, uy) = apply_linear(&m, 0.0, drawn.size);
                        self.chars.push(Char {
                            ch,
                            x,
                            y,
                            dx,
                            dy,
                            size: (ux * ux + uy * uy).sqrt(),
                            rot: 0,
                            bold: false,
                        });
                    }
                }
                (None, Shown::Codes(_)) => {}
            }
            if self.chars.len() >= self.max_chars {
                self.truncated = true;
                return;
            }
        }
    }

    fn form(
        &mut self,
        xobjects: &Dictionary,
        name: &[u8],
        parent: Option<&Dictionary>,
        ctm: &Matrix,
        depth: usize,
    ) {
        let doc = self.doc;
        let Ok(obj) = xobjects.get(name) else { return };
        let Ok((_, Object::Stream(stream))) = doc.dereference(obj) else {
            return;
        };
        if stream
            .dict
            .get(b"Subtype")
            .ok()
            .and_then(|o| o.as_name().ok())
            != Some(b"Form")
        {
            return;
        }
        self.draw_form(stream, parent, ctm, depth);
    }

    /// Runs a form XObject's content under `ctm` (its own matrix applied).
    fn draw_form(
        &mut self,
        stream: &lopdf::Stream,
        parent: Option<&Dictionary>,
        ctm: &Matrix,
        depth: usize,
    ) {
        let doc = self.doc;
        let matrix = stream_matrix(doc, &stream.dict);
        let resources = stream
            .dict
            .get(b"Resources")
            .ok()
            .and_then(|o| deref_dict(doc, o))
            .or(parent);
        let data = match stream.decompressed_content_with_limit(self.stream_limit) {
            Ok(d) => d,
            Err(_)
                if stream.content.len() <= self.stream_limit
                    && stream.dict.get(b"Filter").is_err() =>
            {
                stream.content.clone()
            }
            Err(_) => return,
        };
        self.run(&data, resources, mul(&matrix, ctm), depth + 1);
    }

    fn show(&mut self, bytes: &[u8], gs: &GState, tm: &mut Matrix) {
        let Some(font) = gs.text.font.clone() else {
            return;
        };
        let t = &gs.text;
        let vertical = font.wmode == 1;
        let bold = font.bold;
        // User space to page space is fixed for the whole string.
        let user_to_page = mul(&gs.ctm, &self.page.matrix);
        for glyph in font.decode(bytes) {
            let m = mul(tm, &user_to_page);
            let (x, y) = apply(&m, 0.0, t.rise);
            let w = glyph.width * t.size;
            let (dx, dy) = if vertical {
                apply_linear(&m, 0.0, -w)
            } else {
                apply_linear(&m, w * t.scale, 0.0)
            };
            let (ux, uy) = apply_linear(&m, 0.0, t.size);
            let size = (ux * ux + uy * uy).sqrt() * font.size_scale;
            let spacing = t.char_space + if glyph.word_space { t.word_space } else { 0.0 };
            if vertical {
                *tm = mul(&[1.0, 0.0, 0.0, 1.0, 0.0, -w + spacing], tm);
            } else {
                *tm = mul(&[1.0, 0.0, 0.0, 1.0, (w + spacing) * t.scale, 0.0], tm);
            }
            if glyph.text.is_empty() || !size.is_finite() || size <= 0.0 {
                continue;
            }
            let (pw, ph) = (self.page.width, self.page.height);
            if x.max(x + dx) < 0.0
                || x.min(x + dx) > pw
                || y.max(y + dy) < 0.0
                || y.min(y + dy) > ph
            {
                continue;
            }
            let rot = if vertical {
                1
            } else {
                let (a, b, c, d) = (m[0] * t.scale, m[1] * t.scale, m[2], m[3]);
                if (a * d).abs() > (b * c).abs() {
                    if a > 0.0 || d < 0.0 {
                        0
                    } else {
                        2
                    }
                } else if c > 0.0 {
                    1
                } else {
                    3
                }
            };
            let text = plain_letters(&glyph.text);
            let n = text.chars().count() as f64;
            // The layout reads right-to-left runs backwards (they are drawn
            // right to left); a glyph standing for several such letters (a
            // ligature) is laid out backwards too, so it reads forwards.
            let mut letters: Vec<char> = text.chars().collect();
            if letters.len() > 1 && letters.iter().any(|&c| is_rtl(c)) {
                letters.reverse();
            }
            for (k, ch) in letters.into_iter().enumerate() {
                let k = k as f64;
                self.chars.push(Char {
                    ch,
                    x: x + dx * k / n,
                    y: y + dy * k / n,
                    dx: dx / n,
                    dy: dy / n,
                    size,
                    rot,
                    bold,
                });
            }
        }
    }
}

/// Presentation forms (Latin and Armenian ligatures, Hebrew and Arabic
/// contextual and ligature forms, U+FB00–U+FDFF and U+FE70–U+FEFF) as
/// the letters they stand for, so that the text can be searched: `ﬁ` is
/// `fi`, `ﻧﻤﺎﯾﻪ` is `نمایه`.
fn plain_letters(text: &str) -> std::borrow::Cow<'_, str> {
    use unicode_normalization::UnicodeNormalization;
    let form = |c: char| matches!(c as u32, 0xFB00..=0xFDFF | 0xFE70..=0xFEFF);
    if !text.chars().any(form) {
        return text.into();
    }
    text.chars()
        .flat_map(|c| {
            let one = std::iter::once(c);
            if form(c) {
                // The isolated forms of the vowel marks decompose to a
                // space and the mark: the mark alone.
                let mut plain: Vec<char> = one.nfkc().collect();
                if plain.len() > 1 && plain[0] == ' ' {
                    plain.remove(0);
                }
                plain
            } else {
                one.collect()
            }
        })
        .collect::<String>()
        .into()
}

fn stream_matrix(doc: &Document, dict: &Dictionary) -> Matrix {
    match dict
        .get(b"Matrix")
        .ok()
        .and_then(|o| doc.dereference(o).ok())
    {
        Some((_, Object::Array(a))) => nums::<6>(a).unwrap_or(IDENTITY),
        _ => IDENTITY,
    }
}

fn set(args: &[Object], slot: &mut f64) {
    if let Some([v]) = nums::<1>(args) {
        *slot = v;
    }
}

fn deref_dict<'d>(doc: &'d Document, o: &'d Object) -> Option<&'d Dictionary> {
    match doc.dereference(o).ok()?.1 {
        Object::Dictionary(d) => Some(d),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::plain_letters;

    #[test]
    fn presentation_forms_become_plain_letters() {
        assert_eq!(plain_letters("\u{FB01}nd"), "find");
        assert_eq!(
            plain_letters("\u{FEE7}\u{FEE4}\u{FE8E}\u{FBFE}\u{FEEA}"),
            "\u{646}\u{645}\u{627}\u{6CC}\u{647}"
        );
        assert_eq!(plain_letters("\u{FEFB}"), "\u{644}\u{627}");
        assert_eq!(
            plain_letters("plain ﷲ"),
            "plain \u{627}\u{644}\u{644}\u{647}"
        );
        assert_eq!(plain_letters("\u{FE7C}"), "\u{651}");
        assert_eq!(plain_letters("no forms"), "no forms");
    }
}
