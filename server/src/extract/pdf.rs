//! PDF extraction with lopdf: metadata, text per page, outline.
//!
//! Output (`docproc.pdf`, version 1):
//! ```json
//! { "schema": "docproc.pdf", "version": 1,
//!   "metadata": { "title": "Report", "author": "Ann", "subject": null, "keywords": null,
//!                 "creator": null, "producer": null, "created": "2024-03-01T12:00:00Z",
//!                 "modified": null, "pages": 2, "encrypted": false, "pdf_version": "1.7" },
//!   "pages": [ { "number": 1, "text": "…" }, { "number": 2, "text": "…", "error": "…" } ],
//!   "outline": [ { "level": 1, "title": "Intro", "page": 1 } ] }
//! ```
//! Encrypted files are refused (their text cannot be read without the
//! password); a page whose content cannot be decoded carries an `error`
//! instead of failing the whole document.

use std::path::Path;

use lopdf::{Document, LoadOptions};
use serde_json::{json, Value};

use super::{ExtractError, Limits, Progress};

/// Schema name of PDF results.
pub const SCHEMA: &str = "docproc.pdf";

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
    if doc.is_encrypted() {
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
    for &number in pages.keys() {
        let page = match doc.extract_text_with_limit(&[number], limits.max_stream_bytes) {
            Ok(t) => json!({ "number": number, "text": cut(tidy(&t), limits.max_page_text) }),
            Err(e) => json!({ "number": number, "text": "", "error": e.to_string() }),
        };
        out.push(page);
        progress(out.len(), pages.len(), "pages");
    }
    let outline = doc
        .get_toc()
        .map(|toc| {
            toc.toc
                .into_iter()
                .map(|t| json!({ "level": t.level, "title": t.title, "page": t.page }))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    Ok(json!({
        "schema": SCHEMA,
        "version": 1,
        "metadata": metadata(&doc, pages.len()),
        "pages": out,
        "outline": outline,
    }))
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
            .map(|s| s.trim().to_string())
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

/// Normalizes line ends and drops trailing spaces per line.
fn tidy(t: &str) -> String {
    t.replace("\r\n", "\n")
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
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
    fn text_is_tidied_and_cut() {
        assert_eq!(tidy("a  \r\nb \n\n"), "a\nb");
        assert_eq!(cut("ééé".into(), 4), "éé…");
    }
}
