//! A standalone HTML page for a result: tables for sheets, text per page,
//! the analysis. Everything that came from the document is escaped; the page
//! loads nothing from elsewhere (inline CSS, no scripts).

use std::fmt::Write as _;

use serde_json::Value;

/// Most table rows rendered per sheet; the JSON result has all of them.
const MAX_ROWS: usize = 2_000;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:2px 6px;\
font-size:13px;vertical-align:top}th{background:#f3f3f3}pre{white-space:pre-wrap;\
background:#fafafa;border:1px solid #eee;padding:1rem}.meta td:first-child{font-weight:600}\
.note{color:#777}";

/// The page for a result (spreadsheet, PDF or analysis) titled `title`.
pub fn render(title: &str, result: &Value) -> String {
    let mut body = String::new();
    match result["schema"].as_str() {
        Some(super::pdf::SCHEMA) => pdf(&mut body, result),
        Some(super::sheet::SCHEMA) => sheets(&mut body, result),
        _ => {
            let _ = write!(
                body,
                "<pre>{}</pre>",
                escape(&serde_json::to_string_pretty(result).unwrap_or_default())
            );
        }
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>{body}</body></html>\n",
        escape(title),
        escape(title)
    )
}

pub(crate) fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .values()
            .next()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

fn sheets(out: &mut String, result: &Value) {
    for s in result["sheets"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("");
        let _ = write!(
            out,
            "<h2>{}</h2><p class=\"note\">{} rows × {} columns</p><table>",
            escape(name),
            s["rows"],
            s["columns"]
        );
        let rows = s["cells"].as_array().map_or(&[][..], Vec::as_slice);
        for row in rows.iter().take(MAX_ROWS) {
            out.push_str("<tr>");
            for c in row.as_array().into_iter().flatten() {
                let _ = write!(out, "<td>{}</td>", escape(&cell_text(c)));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
        if rows.len() > MAX_ROWS {
            let _ = write!(
                out,
                "<p class=\"note\">{} more rows are in the JSON result.</p>",
                rows.len() - MAX_ROWS
            );
        }
    }
}

fn pdf(out: &mut String, result: &Value) {
    out.push_str("<table class=\"meta\">");
    if let Some(meta) = result["metadata"].as_object() {
        for (k, v) in meta {
            if !v.is_null() {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    escape(k),
                    escape(&cell_text(v))
                );
            }
        }
    }
    out.push_str("</table>");
    let outline = result["outline"].as_array().map_or(&[][..], Vec::as_slice);
    if !outline.is_empty() {
        out.push_str("<h2>Outline</h2><ul>");
        for o in outline {
            let _ = write!(
                out,
                "<li>{} <span class=\"note\">(page {})</span></li>",
                escape(o["title"].as_str().unwrap_or("")),
                o["page"]
            );
        }
        out.push_str("</ul>");
    }
    for p in result["pages"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "<h2>Page {}</h2><pre>{}</pre>",
            p["number"],
            escape(p["text"].as_str().unwrap_or(""))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn document_content_is_escaped() {
        let hostile = "<script>alert('x')</script>&\"";
        let result = json!({
            "schema": "docproc.spreadsheet",
            "sheets": [{ "name": hostile, "rows": 1, "columns": 1, "cells": [[hostile]] }],
        });
        let page = render(hostile, &result);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
        let pdf = json!({
            "schema": "docproc.pdf",
            "metadata": { "title": hostile },
            "pages": [{ "number": 1, "text": hostile }],
            "outline": [{ "title": hostile, "page": 1 }],
        });
        assert!(!render("t", &pdf).contains("<script>"));
    }
}
