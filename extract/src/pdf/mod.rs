//! PDF extraction over lopdf: metadata, outline, and per page the text in
//! reading order with its blocks and lines, from our own text engine
//! (`font`, `cmap`, `encoding` → `content` → `layout`), built to read as
//! poppler's `pdftotext` does.
//!
//! Output (`docproc.pdf`, version 2):
//! ```json
//! { "schema": "docproc.pdf", "version": 2,
//!   "metadata": { "title": "Report", "author": "Ann", "subject": null, "keywords": null,
//!                 "creator": null, "producer": null, "created": "2024-03-01T12:00:00Z",
//!                 "modified": null, "pages": 2, "encrypted": false, "pdf_version": "1.7" },
//!   "pages": [ { "number": 1, "width": 612.0, "height": 792.0, "text": "Intro\n\nBody text…",
//!                "blocks": [ { "bbox": [72.0, 60.1, 140.2, 76.3],
//!                              "lines": [ { "text": "Intro", "bbox": [72.0, 60.1, 140.2, 76.3], "size": 16.0 } ] } ] },
//!              { "number": 2, "text": "", "blocks": [], "error": "…" } ],
//!   "outline": [ { "level": 1, "title": "Intro", "page": 1 } ] }
//! ```
//! A line in a bold face has `"bold": true`.
//! Boxes are `[x0, y0, x1, y1]` in points from the top-left corner of the
//! page as displayed (after `/Rotate`). `text` has `\n` between lines and a
//! blank line between blocks; a line ending in `-` is joined to the next.
//! Encrypted files are refused (their text cannot be read without the
//! password); a page whose content cannot be decoded carries an `error`
//! instead of failing the whole document.

mod cmap;
mod content;
mod encoding;
mod fields;
mod font;
mod layout;
#[rustfmt::skip]
mod tables;

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod engine_tests;

use std::path::Path;

use lopdf::{Dictionary, Document, LoadOptions, Object, ObjectId};
use serde_json::{json, Value};

use super::{ExtractError, Limits, Progress};
use content::{FontCache, Interpreter, PageSpace};

/// Schema name of PDF results.
pub const SCHEMA: &str = "docproc.pdf";
/// Version of the PDF result schema.
pub const VERSION: u32 = 2;
/// Longest metadata value or outline title kept (bytes).
const MAX_META: usize = 1024;

/// Reads the PDF at `path`.
pub fn extract(
    path: &Path,
    limits: &Limits,
    progress: Progress<'_>,
) -> Result<Value, ExtractError> {
    let opts = LoadOptions {
        max_decompressed_size: Some(limits.max_stream_bytes),
        ..LoadOptions::default()
    };
    let doc = Document::load_with_options(path, opts).map_err(|e| {
        let msg = e.to_string();
        if msg.to_ascii_lowercase().contains("decrypt") || msg.contains("password") {
            ExtractError::Invalid("the PDF is encrypted".into())
        } else {
            ExtractError::Invalid(format!("damaged or unreadable PDF: {msg}"))
        }
    })?;
    if doc.is_encrypted() || (doc.get_pages().is_empty() && doc.trailer.get(b"Encrypt").is_ok()) {
        return Err(ExtractError::Invalid(
            "the PDF is encrypted; upload it without a password".into(),
        ));
    }
    let pages = doc.get_pages();
    if pages.len() > limits.max_pages {
        return Err(ExtractError::Limit(format!(
            "the PDF has {} pages; at most {} are read",
            pages.len(),
            limits.max_pages
        )));
    }
    if pages.is_empty() {
        return Err(ExtractError::Invalid("the PDF has no pages".into()));
    }
    let mut out = Vec::with_capacity(pages.len());
    let mut fonts = FontCache::default();
    for (&number, &id) in &pages {
        out.push(page(&doc, number, id, &mut fonts, limits));
        progress(out.len(), pages.len(), "pages");
    }
    let outline = doc
        .get_toc()
        .map(|toc| {
            toc.toc
                .into_iter()
                .map(|t| json!({ "level": t.level, "title": cut(t.title, MAX_META), "page": t.page }))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    Ok(json!({
        "schema": SCHEMA,
        "version": VERSION,
        "metadata": metadata(&doc, pages.len()),
        "pages": out,
        "outline": outline,
    }))
}

/// One page: its text, blocks and lines, or the error that stopped it.
fn page(
    doc: &Document,
    number: u32,
    id: ObjectId,
    fonts: &mut FontCache,
    limits: &Limits,
) -> Value {
    let Ok(dict) = doc.get_dictionary(id) else {
        return json!({ "number": number, "text": "", "blocks": [], "error": "the page object is missing" });
    };
    let space = page_space(doc, dict);
    let content = match doc.get_page_content_with_limit(id, limits.max_stream_bytes) {
        Ok(c) => c,
        Err(e) => {
            return json!({ "number": number, "width": space.width, "height": space.height,
                           "text": "", "blocks": [], "error": e.to_string() })
        }
    };
    let resources = inherited(doc, dict, b"Resources").and_then(|o| match o {
        Object::Dictionary(d) => Some(d),
        _ => None,
    });
    let mut interp = Interpreter::new(
        doc,
        fonts,
        &space,
        limits.max_stream_bytes,
        limits.max_page_text,
    );
    interp.run(&content, resources, content::IDENTITY, 0);
    interp.annotations(dict, resources);
    let blocks = layout::layout(&interp.chars);
    let text = cut(layout::text(&blocks), limits.max_page_text);
    let r = |v: f64| (v * 100.0).round() / 100.0;
    let blocks: Vec<Value> = blocks
        .iter()
        .map(|b| {
            let bbox = b
                .lines
                .iter()
                .fold([f64::MAX, f64::MAX, f64::MIN, f64::MIN], |a, l| {
                    [
                        a[0].min(l.bbox[0]),
                        a[1].min(l.bbox[1]),
                        a[2].max(l.bbox[2]),
                        a[3].max(l.bbox[3]),
                    ]
                });
            json!({
                "bbox": bbox,
                "lines": b.lines.iter().map(|l| {
                    let mut line = json!({ "text": l.text, "bbox": l.bbox, "size": r(l.size) });
                    if l.bold {
                        line["bold"] = json!(true);
                    }
                    line
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut page = json!({ "number": number, "width": r(space.width), "height": r(space.height),
                           "text": text, "blocks": blocks });
    if interp.truncated {
        page["truncated"] = json!(true);
    }
    page
}

/// An inheritable page attribute (`/Resources`, `/MediaBox`, `/Rotate`).
fn inherited<'a>(doc: &'a Document, page: &'a Dictionary, key: &[u8]) -> Option<&'a Object> {
    let mut node = page;
    for _ in 0..32 {
        if let Ok(o) = node.get(key) {
            return doc.dereference(o).ok().map(|(_, o)| o);
        }
        node = doc
            .dereference(node.get(b"Parent").ok()?)
            .ok()?
            .1
            .as_dict()
            .ok()?;
    }
    None
}

/// The page's user space to displayed page space: the media box from its
/// top-left corner, `/Rotate` applied, y downwards, `/UserUnit` scaled.
fn page_space(doc: &Document, page: &Dictionary) -> PageSpace {
    let number = |o: &Object| font::number(doc, o);
    let bx = match inherited(doc, page, b"MediaBox") {
        Some(Object::Array(a)) if a.len() == 4 => {
            let v: Vec<f64> = a.iter().filter_map(number).collect();
            if v.len() == 4 && v.iter().all(|x| x.is_finite()) {
                [
                    v[0].min(v[2]),
                    v[1].min(v[3]),
                    v[0].max(v[2]),
                    v[1].max(v[3]),
                ]
            } else {
                [0.0, 0.0, 612.0, 792.0]
            }
        }
        _ => [0.0, 0.0, 612.0, 792.0],
    };
    let rotate = inherited(doc, page, b"Rotate")
        .and_then(number)
        .unwrap_or(0.0) as i64;
    let unit = page
        .get(b"UserUnit")
        .ok()
        .and_then(number)
        .filter(|u| u.is_finite() && *u > 0.0 && *u < 100.0)
        .unwrap_or(1.0);
    let [x0, y0, x1, y1] = bx;
    let (w, h) = (x1 - x0, y1 - y0);
    let (matrix, width, height) = match rotate.rem_euclid(360) {
        90 => ([0.0, 1.0, 1.0, 0.0, -y0, -x0], h, w),
        180 => ([-1.0, 0.0, 0.0, 1.0, x1, -y0], w, h),
        270 => ([0.0, -1.0, -1.0, 0.0, y1, x1], h, w),
        _ => ([1.0, 0.0, 0.0, -1.0, -x0, y1], w, h),
    };
    PageSpace {
        matrix: content::mul(&matrix, &[unit, 0.0, 0.0, unit, 0.0, 0.0]),
        width: width * unit,
        height: height * unit,
    }
}

fn metadata(doc: &Document, pages: usize) -> Value {
    let info = doc
        .trailer
        .get(b"Info")
        .ok()
        .and_then(|o| doc.dereference(o).ok())
        .and_then(|(_, o)| o.as_dict().ok());
    let field = |key: &[u8]| -> Option<String> {
        let o = info?.get(key).ok()?;
        let (_, o) = doc.dereference(o).ok()?;
        lopdf::decode_text_string(o)
            .ok()
            .map(|s| cut(s.trim().to_string(), MAX_META))
            .filter(|s| !s.is_empty())
    };
    let date = |key: &[u8]| field(key).and_then(|d| pdf_date(&d));
    json!({
        "title": field(b"Title"),
        "author": field(b"Author"),
        "subject": field(b"Subject"),
        "keywords": field(b"Keywords"),
        "creator": field(b"Creator"),
        "producer": field(b"Producer"),
        "created": date(b"CreationDate"),
        "modified": date(b"ModDate"),
        "pages": pages,
        "encrypted": false,
        "pdf_version": doc.version,
    })
}

/// `D:YYYYMMDDHHmmSSOHH'mm'` (any tail may be missing) as ISO 8601.
fn pdf_date(s: &str) -> Option<String> {
    let s = s.strip_prefix("D:").unwrap_or(s);
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    if digits.len() < 4 {
        return None;
    }
    let part = |from: usize, default: &str| {
        digits
            .get(from..from + 2)
            .map_or_else(|| default.to_string(), str::to_string)
    };
    let (y, mo, d) = (&digits[..4], part(4, "01"), part(6, "01"));
    let (h, mi, sec) = (part(8, "00"), part(10, "00"), part(12, "00"));
    let rest = &s[digits.len()..];
    let tz = match rest.chars().next() {
        Some('Z') => "Z".to_string(),
        Some(sign @ ('+' | '-')) => {
            let t: String = rest[1..].chars().filter(char::is_ascii_digit).collect();
            match (t.get(..2), t.get(2..4)) {
                (Some(th), Some(tm)) => format!("{sign}{th}:{tm}"),
                (Some(th), None) => format!("{sign}{th}:00"),
                _ => String::new(),
            }
        }
        _ => String::new(),
    };
    Some(format!("{y}-{mo}-{d}T{h}:{mi}:{sec}{tz}"))
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Counts of a PDF result, for job summaries.
pub fn summary(result: &Value) -> Value {
    let pages = result["pages"].as_array().map_or(&[][..], Vec::as_slice);
    json!({
        "pages": pages.len(),
        "characters": pages.iter().map(|p| p["text"].as_str().map_or(0, |t| t.chars().count())).sum::<usize>(),
        "title": result["metadata"]["title"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_dates_become_iso() {
        assert_eq!(
            pdf_date("D:20240301120102Z").as_deref(),
            Some("2024-03-01T12:01:02Z")
        );
        assert_eq!(
            pdf_date("D:20240301120102+02'00'").as_deref(),
            Some("2024-03-01T12:01:02+02:00")
        );
        assert_eq!(pdf_date("D:2024").as_deref(), Some("2024-01-01T00:00:00"));
        assert_eq!(pdf_date("yesterday"), None);
    }

    #[test]
    fn text_is_cut_at_a_char_boundary() {
        assert_eq!(cut("ééé".into(), 4), "éé…");
    }
}
