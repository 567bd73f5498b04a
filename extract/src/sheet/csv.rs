//! Delimited text as one sheet: the encoding (a UTF-8 or UTF-16 byte order
//! mark, else UTF-8, else Windows-1252 as spreadsheet programs fall back),
//! the separator (`,` `;` tab or `|`: the one that splits the first lines
//! into the same number of fields), quoted fields with newlines, and cells
//! typed as numbers and booleans where their text says so.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use super::value::{number, text};
use crate::{ExtractError, Limits};

/// Records looked at to choose the separator.
const SNIFF_RECORDS: usize = 20;

/// The rows of the delimited text file at `path`.
pub(super) fn rows(path: &Path, limits: &Limits) -> Result<Vec<Vec<Value>>, ExtractError> {
    let mut raw = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut raw)?;
    let text = decode(&raw);
    let delimiter = separator(&text);
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    let mut cells = 0usize;
    for record in reader.records() {
        let record =
            record.map_err(|e| ExtractError::Invalid(format!("cannot read the CSV file: {e}")))?;
        cells += record.len();
        if cells > limits.max_cells {
            return Err(ExtractError::Limit(format!(
                "the CSV file has more than {} cells",
                limits.max_cells
            )));
        }
        rows.push(record.iter().map(|f| cell(f, limits)).collect());
    }
    Ok(rows)
}

/// The file's text: by its byte order mark, else UTF-8, else Windows-1252.
pub(crate) fn decode(raw: &[u8]) -> Cow<'_, str> {
    if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(raw) {
        return enc.decode_without_bom_handling(&raw[bom..]).0;
    }
    match std::str::from_utf8(raw) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => encoding_rs::WINDOWS_1252.decode_without_bom_handling(raw).0,
    }
}

/// The separator that splits the first records most consistently into
/// more than one field: for each candidate, the share of records with the
/// most common field count, then that count; `,` when none splits.
fn separator(text: &str) -> u8 {
    let mut best = (b',', 0usize, 0usize);
    for d in [b',', b'\t', b';', b'|'] {
        let mut r = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(d)
            .from_reader(text.as_bytes());
        let counts: Vec<usize> = r
            .records()
            .take(SNIFF_RECORDS)
            .map_while(Result::ok)
            .map(|rec| rec.len())
            .filter(|&n| n > 0)
            .collect();
        let mut modes: Vec<(usize, usize)> = Vec::new();
        for &n in &counts {
            match modes.iter_mut().find(|(k, _)| *k == n) {
                Some((_, c)) => *c += 1,
                None => modes.push((n, 1)),
            }
        }
        let Some(&(fields, agree)) = modes.iter().max_by_key(|(k, c)| (*c, *k)) else {
            continue;
        };
        if fields < 2 {
            continue;
        }
        // Scored per mille so that a share and a field count compare as integers.
        let share = agree * 1000 / counts.len();
        if (share, fields) > (best.1, best.2) {
            best = (d, share, fields);
        }
    }
    best.0
}

/// A field's value: whole and decimal numbers (not those with a leading
/// zero, which are identifiers), `true`/`false`, else the text.
pub(super) fn cell(s: &str, limits: &Limits) -> Value {
    let t = s.trim();
    if t.is_empty() {
        return Value::Null;
    }
    let leading_zero = t.len() > 1 && t.starts_with('0') && !t.starts_with("0.");
    if !leading_zero {
        if let Ok(i) = t.parse::<i64>() {
            return json!(i);
        }
        if let Ok(f) = t.parse::<f64>() {
            if f.is_finite() && t.chars().any(|c| c.is_ascii_digit()) {
                return number(f);
            }
        }
    }
    match t.to_ascii_lowercase().as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => text(s, limits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_typed() {
        let l = Limits::default();
        assert_eq!(cell("42", &l), json!(42));
        assert_eq!(cell("-1.5", &l), json!(-1.5));
        assert_eq!(cell("00123", &l), json!("00123"));
        assert_eq!(cell("TRUE", &l), json!(true));
        assert_eq!(cell("", &l), Value::Null);
        assert_eq!(cell("inf", &l), json!("inf"));
        assert_eq!(cell("Malmö", &l), json!("Malmö"));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let l = Limits {
            max_cell_text: 4,
            ..Limits::default()
        };
        assert_eq!(text("ééé", &l), json!("éé…"));
    }

    #[test]
    fn encodings_by_bom_then_utf8_then_windows_1252() {
        let utf16le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a;b\nÅsa;1\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(decode(&utf16le), "a;b\nÅsa;1\n");
        let utf16be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("x,y".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(decode(&utf16be), "x,y");
        assert_eq!(decode(b"\xEF\xBB\xBFname,city"), "name,city");
        assert_eq!(decode("Malmö,€".as_bytes()), "Malmö,€");
        // Not UTF-8: the bytes of Windows-1252.
        assert_eq!(decode(b"Malm\xF6,\x80 5"), "Malmö,€ 5");
    }

    #[test]
    fn the_separator_splits_records_consistently() {
        assert_eq!(separator("a,b,c\n1,2,3\n"), b',');
        assert_eq!(separator("a;b;c\n1,5;2,5;3\n"), b';');
        assert_eq!(separator("a\tb\n1\t2\n"), b'\t');
        assert_eq!(separator("id|name\n1|Ann, Bob\n2|Cy\n"), b'|');
        assert_eq!(separator("\"x;y\",z\n\"1;2\",3\n"), b',');
        assert_eq!(separator("just one field\n"), b',');
    }

    #[test]
    fn quoted_fields_keep_their_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.csv");
        std::fs::write(&path, "name;note\nAnn;\"two\nlines\"\n").unwrap();
        let rows = rows(&path, &Limits::default()).unwrap();
        assert_eq!(rows[1], vec![json!("Ann"), json!("two\nlines")]);
    }
}
