//! The built-in analysis of an extraction result (what `ai_analysis` jobs
//! run, [`crate::jobs`]):
//! language, a short extractive summary, keywords, entities (dates,
//! amounts, emails, URLs) and per-column statistics of spreadsheet tables.
//! Deterministic: the same input gives the same output.
//!
//! Output (`docproc.analysis`, version 1):
//! ```json
//! { "schema": "docproc.analysis", "version": 1, "source_job": "41",
//!   "language": "en", "words": 120,
//!   "summary": ["First key sentence.", "Second."], "summary_source": "builtin",
//!   "keywords": [ { "word": "invoice", "count": 4 } ],
//!   "entities": { "emails": [], "urls": [], "dates": ["2024-03-01"], "amounts": ["€ 1,200.00"] },
//!   "tables": [ { "sheet": "Sales", "header_row": 0, "columns": [
//!       { "name": "Total", "type": "number", "count": 2, "min": 1, "max": 3, "mean": 2, "sum": 4 },
//!       { "name": "Region", "type": "text", "count": 2, "distinct": 2, "top": [ { "value": "North", "count": 1 } ] } ] } ] }
//! ```
//!
//! With an OpenAI-compatible endpoint configured ([`crate::llm`]) the
//! summary is its one-paragraph answer, `summary_source` is `"llm"` and
//! `summary_model` names the model; when the endpoint fails the built-in
//! summary stays and `summary_error` says why.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use docproc_queue::JobId;

use crate::llm::LlmError;

/// Schema name of analysis results.
pub const SCHEMA: &str = "docproc.analysis";
/// Most items of each entity kind kept.
const MAX_ENTITIES: usize = 100;
/// Most characters of text analysed.
const MAX_TEXT: usize = 4 << 20;

/// Puts the endpoint's summary in place of the built-in one, or records
/// why the built-in one stands.
pub fn apply_llm_summary(result: &mut Value, model: &str, answer: Result<String, LlmError>) {
    match answer {
        Ok(summary) => {
            result["summary"] = json!([summary]);
            result["summary_source"] = json!("llm");
            result["summary_model"] = json!(model);
        }
        Err(e) => {
            tracing::warn!(error = %e, "LLM summary failed; keeping the built-in summary");
            result["summary_error"] = json!(e.to_string());
        }
    }
}

/// Analyses an extraction result.
pub fn analyze(source: &JobId, input: &Value) -> Value {
    analyze_with_text(source, input).0
}

/// The analysis and the document text it read.
pub fn analyze_with_text(source: &JobId, input: &Value) -> (Value, String) {
    let mut text = String::new();
    let mut dates = Vec::new();
    gather(input, &mut text, &mut dates);
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    let words = words(&text);
    let language = language(&words);
    let stop = stopwords(language);
    let mut freq: HashMap<&str, usize> = HashMap::new();
    for w in &words {
        if w.chars().count() >= 3
            && !stop.contains(&w.as_str())
            && !w.chars().all(|c| c.is_ascii_digit())
        {
            *freq.entry(w.as_str()).or_default() += 1;
        }
    }
    let mut keywords: Vec<(&str, usize)> = freq.iter().map(|(w, n)| (*w, *n)).collect();
    keywords.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    keywords.truncate(10);
    let mut entities = entities(&text);
    for d in dates {
        push_unique(&mut entities.dates, d);
    }
    let result = json!({
        "schema": SCHEMA,
        "version": 1,
        "source_job": source,
        "language": language,
        "words": words.len(),
        "summary": summary(&text, &freq),
        "summary_source": "builtin",
        "keywords": keywords.iter().map(|(w, n)| json!({ "word": w, "count": n })).collect::<Vec<_>>(),
        "entities": {
            "emails": entities.emails,
            "urls": entities.urls,
            "dates": entities.dates,
            "amounts": entities.amounts,
        },
        "tables": tables(input),
    });
    (result, text)
}

/// Text of every page or text cell; spreadsheet date cells go to `dates`.
fn gather(v: &Value, text: &mut String, dates: &mut Vec<String>) {
    match v["schema"].as_str() {
        Some(docproc_extract::pdf::SCHEMA) => {
            for p in v["pages"].as_array().into_iter().flatten() {
                text.push_str(p["text"].as_str().unwrap_or(""));
                text.push('\n');
            }
        }
        _ => {
            for s in v["sheets"].as_array().into_iter().flatten() {
                for row in s["cells"].as_array().into_iter().flatten() {
                    for c in row.as_array().into_iter().flatten() {
                        match c {
                            Value::String(t) => {
                                text.push_str(t);
                                text.push_str(if t.ends_with('.') { " " } else { ". " });
                            }
                            Value::Object(o) => {
                                if let Some(d) = o.get("date").and_then(Value::as_str) {
                                    dates.push(d.to_string());
                                }
                            }
                            _ => {}
                        }
                    }
                    text.push('\n');
                }
            }
        }
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

const LANGUAGES: [(&str, &[&str]); 8] = [
    (
        "en",
        &[
            "the", "and", "of", "to", "in", "is", "that", "for", "with", "this", "are", "was",
            "on", "be", "by",
        ],
    ),
    (
        "de",
        &[
            "der", "die", "und", "das", "ist", "nicht", "mit", "den", "von", "zu", "ein", "eine",
            "auf", "für", "sich",
        ],
    ),
    (
        "fr",
        &[
            "le", "la", "les", "et", "des", "est", "une", "un", "du", "pour", "dans", "que", "qui",
            "pas", "sur",
        ],
    ),
    (
        "es",
        &[
            "el", "la", "los", "las", "y", "de", "que", "en", "es", "por", "una", "con", "para",
            "del", "se",
        ],
    ),
    (
        "it",
        &[
            "il", "la", "che", "di", "e", "un", "una", "per", "non", "sono", "della", "con", "del",
            "gli", "nel",
        ],
    ),
    (
        "nl",
        &[
            "de", "het", "een", "en", "van", "is", "dat", "niet", "op", "te", "met", "voor",
            "zijn", "ook", "aan",
        ],
    ),
    (
        "pt",
        &[
            "o", "a", "os", "as", "e", "de", "que", "em", "um", "uma", "para", "com", "não", "do",
            "da",
        ],
    ),
    (
        "sv",
        &[
            "och", "att", "det", "som", "en", "är", "av", "för", "med", "till", "den", "inte",
            "på", "har", "om",
        ],
    ),
];

/// The language whose common words occur most; `und` (undetermined) when
/// too few are found.
fn language(words: &[String]) -> &'static str {
    let mut best = ("und", 0usize);
    for (lang, stop) in LANGUAGES {
        let hits = words.iter().filter(|w| stop.contains(&w.as_str())).count();
        if hits > best.1 {
            best = (lang, hits);
        }
    }
    if best.1 >= 3 && best.1 * 50 >= words.len() {
        best.0
    } else {
        "und"
    }
}

fn stopwords(lang: &str) -> &'static [&'static str] {
    LANGUAGES
        .iter()
        .find(|(l, _)| *l == lang)
        .map_or(LANGUAGES[0].1, |(_, s)| s)
}

/// Up to three sentences with the most frequent content words, in text order.
fn summary(text: &str, freq: &HashMap<&str, usize>) -> Vec<String> {
    let sentences: Vec<&str> = text
        .split_inclusive(['.', '!', '?', '\n'])
        .map(str::trim)
        .filter(|s| s.split_whitespace().count() >= 4)
        .take(5000)
        .collect();
    let mut scored: Vec<(usize, f64)> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ws = words(s);
            let score: usize = ws
                .iter()
                .map(|w| freq.get(w.as_str()).copied().unwrap_or(0))
                .sum();
            (i, score as f64 / (ws.len() as f64).sqrt())
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut pick: Vec<usize> = scored.iter().take(3).map(|(i, _)| *i).collect();
    pick.sort_unstable();
    pick.into_iter()
        .map(|i| sentences[i].chars().take(500).collect())
        .collect()
}

#[derive(Default)]
struct Entities {
    emails: Vec<String>,
    urls: Vec<String>,
    dates: Vec<String>,
    amounts: Vec<String>,
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if v.len() < MAX_ENTITIES && !v.contains(&s) {
        v.push(s);
    }
}

const CURRENCY_CODES: [&str; 8] = ["USD", "EUR", "GBP", "CHF", "SEK", "JPY", "NOK", "DKK"];

fn entities(text: &str) -> Entities {
    let mut e = Entities::default();
    let tokens: Vec<&str> = text.split_whitespace().collect();
    for (i, raw) in tokens.iter().enumerate() {
        let t = raw.trim_matches(|c: char| {
            matches!(
                c,
                '(' | ')' | ',' | ';' | ':' | '"' | '\'' | '<' | '>' | '[' | ']'
            )
        });
        let t_end = t.trim_end_matches(['.', '!', '?']);
        if t.starts_with("http://") || t.starts_with("https://") {
            push_unique(&mut e.urls, t_end.to_string());
        } else if is_email(t_end) {
            push_unique(&mut e.emails, t_end.to_string());
        } else if is_date(t_end) {
            push_unique(&mut e.dates, t_end.to_string());
        } else if let Some(a) = amount(
            t_end,
            tokens.get(i + 1),
            i.checked_sub(1).and_then(|j| tokens.get(j)),
        ) {
            push_unique(&mut e.amounts, a);
        }
    }
    e
}

fn is_email(t: &str) -> bool {
    let Some((local, domain)) = t.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "._%+-".contains(c))
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
}

/// `YYYY-MM-DD`, `DD.MM.YYYY`, `DD/MM/YYYY` or `MM/DD/YYYY`.
fn is_date(t: &str) -> bool {
    let parts: Vec<&str> = t.split(['-', '.', '/']).collect();
    if parts.len() != 3
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    let n = |p: &str| p.parse::<u32>().unwrap_or(0);
    let (a, b, c) = (parts[0], parts[1], parts[2]);
    if a.len() == 4 && t.contains('-') {
        (1..=12).contains(&n(b)) && (1..=31).contains(&n(c))
    } else {
        c.len() == 4
            && a.len() <= 2
            && b.len() <= 2
            && (1..=31).contains(&n(a))
            && (1..=31).contains(&n(b))
    }
}

fn is_number(t: &str) -> bool {
    let digits = t.chars().filter(char::is_ascii_digit).count();
    digits > 0
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ',' | '.' | '\'' | '-'))
}

/// `$12`, `12€`, `€ 12` (symbol as its own token), `12 EUR`, `EUR 12`.
fn amount(t: &str, next: Option<&&str>, prev: Option<&&str>) -> Option<String> {
    const SYMBOLS: [char; 4] = ['$', '€', '£', '¥'];
    if let Some(rest) = t.strip_prefix(SYMBOLS) {
        return is_number(rest).then(|| t.to_string());
    }
    if let Some(rest) = t.strip_suffix(SYMBOLS) {
        return is_number(rest).then(|| t.to_string());
    }
    if !is_number(t) {
        return None;
    }
    let clean = |s: &str| {
        s.trim_matches(|c: char| !c.is_alphanumeric() && !SYMBOLS.contains(&c))
            .to_string()
    };
    let currency = |s: &str| {
        CURRENCY_CODES.contains(&s) || (!s.is_empty() && s.chars().all(|c| SYMBOLS.contains(&c)))
    };
    if let Some(n) = next.copied().map(clean).filter(|n| currency(n)) {
        return Some(format!("{t} {n}"));
    }
    if let Some(p) = prev.copied().map(clean).filter(|p| currency(p)) {
        return Some(format!("{p} {t}"));
    }
    None
}

/// Statistics of every column of every detected table.
fn tables(input: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for s in input["sheets"].as_array().into_iter().flatten() {
        let cells = s["cells"].as_array().map_or(&[][..], Vec::as_slice);
        for t in s["tables"].as_array().into_iter().flatten() {
            let (first, last) = (
                t["first_row"].as_u64().unwrap_or(0) as usize,
                t["last_row"].as_u64().unwrap_or(0) as usize,
            );
            let rows = cells
                .get(first..=last.min(cells.len().saturating_sub(1)))
                .unwrap_or(&[]);
            let columns: Vec<Value> = t["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let idx = c["index"].as_u64().unwrap_or(0) as usize;
                    let values: Vec<&Value> = rows
                        .iter()
                        .filter_map(|r| r.get(idx))
                        .filter(|v| !v.is_null())
                        .collect();
                    column_stats(c["name"].as_str().unwrap_or(""), &values)
                })
                .collect();
            out.push(
                json!({ "sheet": s["name"], "header_row": t["header_row"], "columns": columns }),
            );
        }
    }
    out
}

fn column_stats(name: &str, values: &[&Value]) -> Value {
    let nums: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
    if !nums.is_empty() && nums.len() == values.len() {
        let sum: f64 = nums.iter().sum();
        let min = nums.iter().copied().fold(f64::INFINITY, f64::min);
        let max = nums.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        return json!({
            "name": name, "type": "number", "count": nums.len(),
            "min": min, "max": max, "mean": sum / nums.len() as f64, "sum": sum,
        });
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in values {
        let key = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut top: Vec<(&String, &usize)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    json!({
        "name": name, "type": if values.iter().all(|v| v.is_string()) { "text" } else { "mixed" },
        "count": values.len(), "distinct": counts.len(),
        "top": top.iter().take(5).map(|(v, n)| json!({ "value": v, "count": n })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_language_keywords_and_entities() {
        let pdf = json!({
            "schema": "docproc.pdf",
            "pages": [{ "text": "The invoice for the project is due on 2024-03-01. \
                Please pay the invoice of €1,200.00 or 1200 EUR to billing@example.com. \
                Details are at https://example.com/invoice. The invoice number is 7." }],
        });
        let a = analyze(&"1".into(), &pdf);
        assert_eq!(a["language"], "en");
        assert_eq!(a["keywords"][0]["word"], "invoice");
        assert_eq!(a["entities"]["emails"], json!(["billing@example.com"]));
        assert_eq!(
            a["entities"]["urls"],
            json!(["https://example.com/invoice"])
        );
        assert_eq!(a["entities"]["dates"], json!(["2024-03-01"]));
        assert_eq!(a["entities"]["amounts"], json!(["€1,200.00", "1200 EUR"]));
        assert!(!a["summary"].as_array().unwrap().is_empty());
        assert_eq!(analyze(&"1".into(), &pdf), a, "deterministic");
    }

    #[test]
    fn spreadsheet_columns_get_statistics() {
        let sheet = json!({
            "schema": "docproc.spreadsheet",
            "sheets": [{ "name": "S", "cells": [["Region", "Total"], ["North", 1], ["South", 3], ["North", 2]],
                "tables": [{ "header_row": 0, "first_row": 1, "last_row": 3,
                    "columns": [{ "index": 0, "name": "Region" }, { "index": 1, "name": "Total" }] }] }],
        });
        let a = analyze(&"2".into(), &sheet);
        let cols = &a["tables"][0]["columns"];
        assert_eq!(cols[1]["type"], "number");
        assert_eq!(
            (
                cols[1]["min"].clone(),
                cols[1]["max"].clone(),
                cols[1]["sum"].clone()
            ),
            (json!(1.0), json!(3.0), json!(6.0))
        );
        assert_eq!(cols[0]["distinct"], 2);
        assert_eq!(cols[0]["top"][0], json!({ "value": "North", "count": 2 }));
    }

    #[test]
    fn dates_and_emails_are_strict() {
        for d in ["2024-03-01", "01.03.2024", "3/1/2024"] {
            assert!(is_date(d), "{d}");
        }
        for d in ["2024-13-01", "1.2.3", "12-12", "2024/03/01x"] {
            assert!(!is_date(d), "{d}");
        }
        assert!(is_email("a.b+c@x.example"));
        assert!(!is_email("@x.com") && !is_email("a@b") && !is_email("a@.com"));
    }
}
