//! Markdown of a result, the form RAG pipelines and LLMs take. A PDF
//! becomes headings, paragraphs and list items — headings from font size
//! and weight against the body text — with each page opened by a
//! `<!-- page N -->` comment; a spreadsheet becomes one GitHub-flavoured
//! table per block of rows under its sheet's heading. Text from the
//! document is escaped so that it reads as text, never as markup or HTML.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::html::cell_text;

/// A run of lines whose font is at least this much larger than the body
/// text's is a heading.
const HEADING_SIZE_RATIO: f64 = 1.15;
/// A heading has at most this many lines and characters.
const MAX_HEADING_LINES: usize = 3;
const MAX_HEADING_CHARS: usize = 200;
/// A one-line bold run of body size with at most this many words, not
/// ending a sentence, is a heading one level below the size headings.
const MAX_BOLD_HEADING_WORDS: usize = 12;
/// Markdown has six heading levels.
const MAX_LEVEL: usize = 6;
/// Font sizes are compared rounded to this step (points).
const SIZE_STEP: f64 = 0.5;

/// The Markdown of a result (`docproc.pdf`, `docproc.spreadsheet`; any
/// other result as a fenced JSON block).
pub fn render(result: &Value) -> String {
    match result["schema"].as_str() {
        Some(super::pdf::SCHEMA) => pdf(result),
        Some(super::sheet::SCHEMA) => sheets(result),
        _ => format!(
            "```json\n{}\n```\n",
            serde_json::to_string_pretty(result)
                .unwrap_or_default()
                .replace("```", "`\u{200b}``")
        ),
    }
}

/// A line of a PDF page as the result gives it.
struct Line<'a> {
    text: &'a str,
    size: f64,
    bold: bool,
}

fn lines_of(block: &Value) -> Vec<Line<'_>> {
    block["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let text = l["text"].as_str()?.trim();
            (!text.is_empty()).then(|| Line {
                text,
                size: round_size(l["size"].as_f64().unwrap_or(0.0)),
                bold: l["bold"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

fn round_size(size: f64) -> f64 {
    if size.is_finite() && size > 0.0 {
        (size / SIZE_STEP).round() * SIZE_STEP
    } else {
        0.0
    }
}

/// Consecutive lines of one block in the same size and weight: a heading
/// run inside a block of body text stays a heading.
fn runs<'a, 'b>(lines: &'b [Line<'a>]) -> Vec<&'b [Line<'a>]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=lines.len() {
        if i == lines.len()
            || lines[i].size != lines[i - 1].size
            || lines[i].bold != lines[i - 1].bold
        {
            if start < i {
                out.push(&lines[start..i]);
            }
            start = i;
        }
    }
    out
}

/// How the body text is set and which sizes make headings of which level.
struct Styles {
    body: f64,
    /// Heading sizes, largest first (level = position + 1).
    sizes: Vec<f64>,
}

impl Styles {
    fn of(pages: &[Value]) -> Styles {
        let mut chars: HashMap<u64, usize> = HashMap::new();
        let blocks = || {
            pages
                .iter()
                .flat_map(|p| p["blocks"].as_array().into_iter().flatten())
        };
        for b in blocks() {
            for l in lines_of(b) {
                *chars.entry(l.size.to_bits()).or_default() += l.text.chars().count();
            }
        }
        let body = chars
            .iter()
            .max_by(|a, b| {
                a.1.cmp(b.1)
                    .then(f64::from_bits(*b.0).total_cmp(&f64::from_bits(*a.0)))
            })
            .map_or(0.0, |(s, _)| f64::from_bits(*s));
        let mut sizes: Vec<f64> = Vec::new();
        for b in blocks() {
            let lines = lines_of(b);
            for run in runs(&lines) {
                let size = run[0].size;
                if Self::heading_shape(run)
                    && size >= body * HEADING_SIZE_RATIO
                    && !sizes.contains(&size)
                {
                    sizes.push(size);
                }
            }
        }
        sizes.sort_by(|a, b| b.total_cmp(a));
        Styles { body, sizes }
    }

    fn heading_shape(run: &[Line<'_>]) -> bool {
        run.len() <= MAX_HEADING_LINES
            && run.iter().map(|l| l.text.chars().count()).sum::<usize>() <= MAX_HEADING_CHARS
            && run.iter().any(|l| l.text.chars().any(char::is_alphabetic))
    }

    /// The heading level of a run, or `None` for body text.
    fn level(&self, run: &[Line<'_>]) -> Option<usize> {
        if !Self::heading_shape(run) {
            return None;
        }
        let size = run[0].size;
        if let Some(i) = self.sizes.iter().position(|&s| s == size) {
            return Some((i + 1).min(MAX_LEVEL));
        }
        let text = run[0].text;
        let bold_heading = run.len() == 1
            && run[0].bold
            && size >= self.body
            && text.split_whitespace().count() <= MAX_BOLD_HEADING_WORDS
            && !text.ends_with(['.', ',', ';', ':', '!', '?']);
        bold_heading.then(|| (self.sizes.len() + 1).min(MAX_LEVEL))
    }
}

fn pdf(result: &Value) -> String {
    let pages = result["pages"].as_array().map_or(&[][..], Vec::as_slice);
    let styles = Styles::of(pages);
    let mut out = String::new();
    for p in pages {
        let _ = write!(
            out,
            "<!-- page {} -->\n\n",
            p["number"].as_u64().unwrap_or(0)
        );
        let blocks = p["blocks"].as_array().map_or(&[][..], Vec::as_slice);
        if blocks.is_empty() {
            // A result without blocks (docproc.pdf v1): paragraphs from the text.
            for para in p["text"].as_str().unwrap_or("").split("\n\n") {
                let lines: Vec<&str> = para
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                paragraph(&mut out, &lines);
            }
            continue;
        }
        for b in blocks {
            let lines = lines_of(b);
            for run in runs(&lines) {
                match styles.level(run) {
                    Some(level) => {
                        let texts: Vec<&str> = run.iter().map(|l| l.text).collect();
                        let _ = write!(
                            out,
                            "{} {}\n\n",
                            "#".repeat(level),
                            heading_text(&join(&texts))
                        );
                    }
                    None => body(&mut out, run),
                }
            }
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// Body lines: list items where a line starts with a bullet or a number,
/// paragraphs elsewhere.
fn body(out: &mut String, run: &[Line<'_>]) {
    let mut para: Vec<&str> = Vec::new();
    let mut item: Option<(String, Vec<&str>)> = None;
    let flush_item = |out: &mut String, item: &mut Option<(String, Vec<&str>)>| {
        if let Some((marker, lines)) = item.take() {
            let _ = writeln!(
                out,
                "{marker} {}",
                escape_line_start(&escape(&join(&lines)))
            );
        }
    };
    for l in run {
        if let Some((marker, rest)) = list_marker(l.text) {
            if !para.is_empty() {
                paragraph(out, &para);
                para.clear();
            }
            flush_item(out, &mut item);
            item = Some((marker, vec![rest]));
        } else if let Some((_, lines)) = item.as_mut() {
            lines.push(l.text);
        } else {
            para.push(l.text);
        }
    }
    if item.is_some() {
        flush_item(out, &mut item);
        out.push('\n');
    }
    paragraph(out, &para);
}

fn paragraph(out: &mut String, lines: &[&str]) {
    if lines.is_empty() {
        return;
    }
    let text = escape(&join(lines));
    out.push_str(&escape_line_start(&text));
    out.push_str("\n\n");
}

/// A leading bullet (`•`, `◦`, `▪`, `-`, `*`, `–`, …) or number (`1.`,
/// `2)`, `(a)`, `iv.`) with the rest of the line: the Markdown marker
/// (`-` or `N.`) and the item's text (a letter or roman marker is kept in
/// the text).
fn list_marker(line: &str) -> Option<(String, &str)> {
    let mut chars = line.chars();
    let first = chars.next()?;
    let rest = chars.as_str();
    const BULLETS: &[char] = &[
        '•', '◦', '▪', '▫', '‣', '●', '○', '■', '□', '◆', '◇', '➢', '➤', '►', '▶', '▸', '✓', '✔',
        '∙', '⁃', '·',
    ];
    if BULLETS.contains(&first) && !rest.trim().is_empty() {
        return Some(("-".into(), rest.trim_start()));
    }
    if matches!(first, '-' | '*' | '–' | '—' | '+')
        && rest.starts_with(' ')
        && !rest.trim().is_empty()
    {
        return Some(("-".into(), rest.trim_start()));
    }
    let (head, tail) = line.split_once(' ')?;
    if tail.trim().is_empty() {
        return None;
    }
    let digits = head.trim_end_matches(['.', ')']);
    if head.len() == digits.len() + 1
        && (1..=3).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Some((format!("{digits}."), tail.trim_start()));
    }
    let inner = head
        .strip_prefix('(')
        .and_then(|h| h.strip_suffix(')'))
        .or_else(|| head.strip_suffix(')'))
        .or_else(|| {
            head.strip_suffix('.')
                .filter(|h| h.len() > 1 || h.chars().all(|c| c.is_ascii_lowercase()))
        });
    let lettered = inner.is_some_and(|m| {
        (m.len() == 1 && m.chars().all(|c| c.is_ascii_alphabetic()))
            || (!m.is_empty() && m.len() <= 5 && m.chars().all(|c| "ivxlc".contains(c)))
    });
    lettered.then(|| ("-".into(), line))
}

/// Lines of one paragraph as one line: a hyphen at a line end before a
/// lower-case letter is dropped, CJK lines are joined without a space.
fn join(lines: &[&str]) -> String {
    let mut out = String::new();
    for l in lines {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        let next = l.chars().next();
        let last = out.chars().last();
        if let Some(last) = last {
            if last == '-' && out.len() > 1 && next.is_some_and(char::is_lowercase) {
                out.pop();
            } else if !(last == '-' || is_cjk(last) && next.is_some_and(is_cjk)) {
                out.push(' ');
            }
        }
        out.push_str(l);
    }
    out
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF | 0x20000..=0x3FFFF)
}

/// Escapes what Markdown would read as markup inside a line: emphasis,
/// code, links, strikethrough, HTML and entity references.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for (i, c) in s.char_indices() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '&' if is_entity(&s[i + 1..]) => out.push_str("\\&"),
            c => out.push(c),
        }
    }
    out
}

/// A heading's text, escaped, with a trailing `#` run escaped too (it
/// would otherwise be read as the heading's closing sequence).
fn heading_text(s: &str) -> String {
    let mut text = escape(s);
    let hashes = text.len() - text.trim_end_matches('#').len();
    if hashes > 0 {
        text.insert(text.len() - hashes, '\\');
    }
    text
}

fn is_entity(after: &str) -> bool {
    let name: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '#')
        .take(33)
        .collect();
    !name.is_empty() && name.len() <= 32 && after[name.len()..].starts_with(';')
}

/// Escapes a paragraph's start that Markdown would read as a heading,
/// quote, list item, rule or table.
fn escape_line_start(s: &str) -> String {
    let first = s.chars().next();
    let numbered = s.find(['.', ')']).is_some_and(|i| {
        (1..=9).contains(&i)
            && s[..i].bytes().all(|b| b.is_ascii_digit())
            && s[i + 1..].chars().next().is_none_or(char::is_whitespace)
    });
    if numbered {
        let i = s.find(['.', ')']).unwrap_or(0);
        return format!("{}\\{}", &s[..i], &s[i..]);
    }
    match first {
        Some('#' | '>' | '-' | '+' | '=' | '|') => format!("\\{s}"),
        _ => s.to_string(),
    }
}

fn sheets(result: &Value) -> String {
    let mut out = String::new();
    for s in result["sheets"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("");
        let _ = write!(out, "# {}\n\n", escape_line_start(&escape(name)));
        let rows = s["cells"].as_array().map_or(&[][..], Vec::as_slice);
        let numeric: HashMap<u64, Vec<u64>> = s["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let cols = t["columns"]
                    .as_array()?
                    .iter()
                    .filter(|c| c["type"] == "number")
                    .filter_map(|c| c["index"].as_u64())
                    .collect();
                Some((t["header_row"].as_u64()?, cols))
            })
            .collect();
        let origin = s["origin"]["column"].as_u64().unwrap_or(0) as usize;
        let blank = |r: &Value| r.as_array().is_none_or(|c| c.iter().all(Value::is_null));
        let blocks = super::sheet::row_blocks(rows, blank);
        for range in &blocks {
            let table = numeric.get(&(range.start as u64));
            block(&mut out, &rows[range.clone()], table, origin);
        }
        if blocks.is_empty() {
            out.push_str("*(empty sheet)*\n\n");
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// One block of rows between blank rows: a table under its header row when
/// the sheet's table detection found one there (numeric columns
/// right-aligned), a paragraph for a single row, else a table under the
/// sheet's column letters.
fn block(out: &mut String, rows: &[Value], table: Option<&Vec<u64>>, origin: usize) {
    let cells = |r: &Value| r.as_array().map_or(&[][..], Vec::as_slice).to_vec();
    let used = |r: &[Value]| r.iter().rposition(|v| !v.is_null()).map_or(0, |p| p + 1);
    let first = rows
        .iter()
        .map(|r| {
            cells(r)
                .iter()
                .position(|v| !v.is_null())
                .unwrap_or(usize::MAX)
        })
        .min()
        .unwrap_or(0);
    let last = rows.iter().map(|r| used(&cells(r))).max().unwrap_or(0);
    if last <= first {
        return;
    }
    if rows.len() == 1 && table.is_none() {
        let texts: Vec<String> = cells(&rows[0])
            .iter()
            .filter(|v| !v.is_null())
            .map(cell_text)
            .collect();
        paragraph(out, &texts.iter().map(String::as_str).collect::<Vec<_>>());
        return;
    }
    let row_line = |out: &mut String, r: &[Value]| {
        out.push('|');
        for c in first..last {
            let _ = write!(
                out,
                " {} |",
                table_cell(&r.get(c).map(cell_text).unwrap_or_default())
            );
        }
        out.push('\n');
    };
    let body = match table {
        Some(_) => {
            row_line(out, &cells(&rows[0]));
            &rows[1..]
        }
        None => {
            out.push('|');
            for c in first..last {
                let _ = write!(out, " {} |", column_letters(origin + c));
            }
            out.push('\n');
            rows
        }
    };
    out.push('|');
    for c in first..last {
        let right = table.is_some_and(|n| n.contains(&(c as u64)));
        out.push_str(if right { " ---: |" } else { " --- |" });
    }
    out.push('\n');
    for r in body {
        row_line(out, &cells(r));
    }
    out.push('\n');
}

/// A cell's text in a table: escaped, pipes escaped, line breaks as `<br>`.
fn table_cell(s: &str) -> String {
    escape(s.trim())
        .replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace(['\n', '\r'], "<br>")
}

/// `A`, `B`, …, `Z`, `AA`, … for a 0-based column.
fn column_letters(mut c: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (c % 26) as u8);
        if c < 26 {
            break;
        }
        c = c / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(text: &str, size: f64, bold: bool) -> Value {
        json!({ "text": text, "bbox": [0, 0, 1, 1], "size": size, "bold": bold })
    }

    #[test]
    fn pdf_headings_paragraphs_lists_and_pages() {
        let result = json!({
            "schema": "docproc.pdf",
            "pages": [
                { "number": 1, "blocks": [
                    { "lines": [line("Annual Report", 24.0, true)] },
                    { "lines": [line("1 Introduction", 14.0, true), line("This report co-", 10.0, false),
                                line("vers the year.", 10.0, false)] },
                    { "lines": [line("Method", 10.0, true)] },
                    { "lines": [line("• first point", 10.0, false), line("continued here", 10.0, false),
                                line("• second", 10.0, false)] },
                    { "lines": [line("1. one", 10.0, false), line("2) two", 10.0, false)] },
                ] },
                { "number": 2, "blocks": [
                    { "lines": [line("A bold sentence that is a paragraph.", 10.0, true)] },
                    { "lines": [line("Use *args and <b>_x_</b> &amp; a|b", 10.0, false)] },
                ] },
            ],
        });
        let md = render(&result);
        assert_eq!(
            md,
            "<!-- page 1 -->\n\n# Annual Report\n\n## 1 Introduction\n\nThis report covers the year.\n\n\
### Method\n\n- first point continued here\n- second\n\n1. one\n2. two\n\n\
<!-- page 2 -->\n\nA bold sentence that is a paragraph.\n\n\
Use \\*args and \\<b>\\_x\\_\\</b> \\&amp; a|b\n"
        );
    }

    #[test]
    fn pdf_body_text_never_reads_as_markup() {
        let result = json!({ "schema": "docproc.pdf", "pages": [ { "number": 1, "blocks": [
            { "lines": [line("# not a heading", 10.0, false)] },
            { "lines": [line("2024. A year", 10.0, false)] },
            { "lines": [line("= also text", 10.0, false)] },
        ] } ] });
        assert_eq!(
            render(&result),
            "<!-- page 1 -->\n\n\\# not a heading\n\n2024\\. A year\n\n\\= also text\n"
        );
    }

    #[test]
    fn cjk_lines_join_without_spaces_and_letters_stay_in_items() {
        assert_eq!(join(&["打包", "教程"]), "打包教程");
        assert_eq!(join(&["Jean-", "Pierre"]), "Jean-Pierre");
        assert_eq!(list_marker("(a) first"), Some(("-".into(), "(a) first")));
        assert_eq!(list_marker("iv. fourth"), Some(("-".into(), "iv. fourth")));
        assert_eq!(list_marker("12) twelfth"), Some(("12.".into(), "twelfth")));
        assert_eq!(list_marker("e.g. this"), None);
        assert_eq!(list_marker("-5 degrees"), None);
    }

    #[test]
    fn v1_pdf_results_become_paragraphs() {
        let result = json!({ "schema": "docproc.pdf", "pages": [ { "number": 1, "text": "One\nline\n\nTwo" } ] });
        assert_eq!(render(&result), "<!-- page 1 -->\n\nOne line\n\nTwo\n");
    }

    #[test]
    fn sheets_become_tables_under_their_names() {
        let result = json!({
            "schema": "docproc.spreadsheet",
            "sheets": [
                { "name": "Sales", "origin": { "row": 0, "column": 1 },
                  "cells": [["Quarterly report", null], [null, null],
                            ["Region", "Total"], ["North|East", 12.5], ["South", { "date": "2024-03-01" }],
                            [null, null], [1, 2], [3, "line\nbreak"]],
                  "tables": [ { "header_row": 2, "first_row": 3, "last_row": 4,
                                "columns": [ { "index": 0, "type": "text" }, { "index": 1, "type": "number" } ] } ] },
                { "name": "Empty", "cells": [], "tables": [] },
            ],
        });
        assert_eq!(
            render(&result),
            "# Sales\n\nQuarterly report\n\n| Region | Total |\n| --- | ---: |\n| North\\|East | 12.5 |\n\
| South | 2024-03-01 |\n\n| B | C |\n| --- | --- |\n| 1 | 2 |\n| 3 | line<br>break |\n\n\
# Empty\n\n*(empty sheet)*\n"
        );
    }

    /// What a CommonMark reader (with GitHub tables and strikethrough)
    /// makes of `md`: the text of each paragraph, heading, item and cell,
    /// and every other element it saw.
    fn parse(md: &str) -> (Vec<String>, Vec<String>) {
        use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
        let mut texts = Vec::new();
        let mut others = Vec::new();
        let mut cur = String::new();
        for ev in Parser::new_ext(md, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH) {
            match ev {
                Event::Text(t) => cur.push_str(&t),
                Event::Start(Tag::Paragraph | Tag::Heading { .. } | Tag::Item | Tag::TableCell) => {
                }
                Event::Start(Tag::List(_) | Tag::Table(_) | Tag::TableHead | Tag::TableRow) => {}
                Event::End(
                    TagEnd::Paragraph | TagEnd::Heading(_) | TagEnd::Item | TagEnd::TableCell,
                ) => {
                    texts.push(std::mem::take(&mut cur));
                }
                Event::End(
                    TagEnd::List(_) | TagEnd::Table | TagEnd::TableHead | TagEnd::TableRow,
                ) => {}
                Event::Start(Tag::HtmlBlock) | Event::End(TagEnd::HtmlBlock) => {}
                Event::Html(h) if h.starts_with("<!-- page ") && h.trim_end().ends_with("-->") => {}
                Event::InlineHtml(h) if &*h == "<br>" => cur.push('\n'),
                other => others.push(format!("{other:?}")),
            }
        }
        (texts, others)
    }

    const HOSTILE: &[&str] = &[
        "[click](http://evil.example) and ![img](x.png)",
        "<script>alert(1)</script> <b>bold</b>",
        "**strong** *em* _em_ __strong__ `code` ~~gone~~",
        "# not a heading",
        "> not a quote",
        "- not an item",
        "+ not an item",
        "1. not a list",
        "12) not a list",
        "=== not a rule",
        "| a | b |",
        "&amp; &#60; &copy; stay as typed",
        "C:\\path\\to\\file and \\*",
        "<http://autolink.example>",
        "a_b_c and 2*3*4",
    ];

    #[test]
    fn document_text_reads_back_as_text_not_markup() {
        // Lines that start like list items are list items in a PDF (their
        // markers checked elsewhere); in a table cell they are text.
        let prose: Vec<&str> = HOSTILE
            .iter()
            .copied()
            .filter(|t| list_marker(t).is_none())
            .collect();
        assert_eq!(prose.len(), HOSTILE.len() - 4);
        let heading = "Notes on C # and [x](y) ##";
        let blocks: Vec<Value> = std::iter::once(json!({ "lines": [line(heading, 20.0, false)] }))
            .chain(
                prose
                    .iter()
                    .map(|t| json!({ "lines": [line(t, 10.0, false)] })),
            )
            .collect();
        let md = render(
            &json!({ "schema": "docproc.pdf", "pages": [ { "number": 1, "blocks": blocks } ] }),
        );
        assert!(md.starts_with("<!-- page 1 -->\n\n# Notes"), "{md}");
        let (texts, others) = parse(&md);
        assert_eq!(others, Vec::<String>::new(), "{md}");
        assert_eq!(texts[0], heading, "{md}");
        assert_eq!(texts[1..], prose[..], "{md}");

        let row: Vec<Value> = HOSTILE.iter().map(|t| json!(t)).collect();
        let sheet = json!({ "schema": "docproc.spreadsheet", "sheets": [
            { "name": "<b>*Sheet*</b> | [x](y)", "cells": [row.clone(), row, [json!("multi\nline"), json!(1)]], "tables": [] } ] });
        let md = render(&sheet);
        let (texts, others) = parse(&md);
        assert_eq!(others, Vec::<String>::new(), "{md}");
        assert_eq!(texts[0], "<b>*Sheet*</b> | [x](y)");
        let cells: Vec<&str> = HOSTILE
            .iter()
            .copied()
            .chain(HOSTILE.iter().copied())
            .collect();
        assert_eq!(
            &texts[1 + HOSTILE.len()..1 + 3 * HOSTILE.len()],
            &cells[..],
            "{md}"
        );
        assert_eq!(texts[1 + 3 * HOSTILE.len()], "multi\nline");
    }

    #[test]
    fn other_results_are_fenced_json() {
        let md = render(&json!({ "schema": "docproc.analysis", "summary": ["```x"] }));
        assert!(md.starts_with("```json\n") && md.ends_with("\n```\n"));
        assert_eq!(md.matches("```").count(), 2);
    }
}
