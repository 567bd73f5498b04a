//! Spreadsheet extraction: xlsx, xlsm, xlsb, xls and ods with calamine, and
//! CSV. Every sheet with its typed cells, merged ranges and detected tables.
//!
//! Output (`docproc.spreadsheet`, version 1):
//! ```json
//! { "schema": "docproc.spreadsheet", "version": 1, "format": "xlsx",
//!   "sheets": [ { "name": "Sales", "index": 0, "rows": 3, "columns": 2,
//!                 "origin": { "row": 0, "column": 0 },
//!                 "cells": [["Region", "Total"], ["North", 12.5], ["South", null]],
//!                 "merged": [ { "first_row": 0, "first_column": 0, "last_row": 0, "last_column": 1 } ],
//!                 "tables": [ { "header_row": 0, "first_row": 1, "last_row": 2,
//!                               "columns": [ { "index": 0, "name": "Region", "type": "text", "values": 2 } ] } ] } ] }
//! ```
//! Cells are JSON numbers, strings, booleans or `null` (empty); dates are
//! `{"date": "2024-03-01"}` or `{"date": "2024-03-01T12:30:00"}` (ISO 8601),
//! durations `{"duration": seconds}` (or an ISO 8601 string), cell errors
//! `{"error": "#DIV/0!"}`. Rows and columns are 0-based from `origin`.
//! A table is a block of rows between blank rows whose first row is all
//! text (the header) followed by at least one data row; a column's type is
//! the one kind its values share, or `mixed`.

use std::io::{BufReader, Read};
use std::path::Path;

use calamine::{Data, Dimensions, Reader, Sheets};
use serde_json::{json, Map, Value};

use super::detect::Format;
use super::{ExtractError, Limits, Progress};

/// Schema name of spreadsheet results.
pub const SCHEMA: &str = "docproc.spreadsheet";

/// Reads every sheet of the spreadsheet at `path`.
pub fn extract(
    path: &Path,
    format: Format,
    limits: &Limits,
    progress: Progress<'_>,
) -> Result<Value, ExtractError> {
    let sheets = match format {
        Format::Csv => {
            let sheet = csv_sheet(path, limits)?;
            progress(1, 1, "sheets");
            vec![sheet]
        }
        Format::Pdf => return Err(ExtractError::Invalid("not a spreadsheet".into())),
        _ => workbook(path, format, limits, progress)?,
    };
    Ok(json!({
        "schema": SCHEMA,
        "version": 1,
        "format": format.as_str(),
        "sheets": sheets,
    }))
}

fn workbook(
    path: &Path,
    format: Format,
    limits: &Limits,
    progress: Progress<'_>,
) -> Result<Vec<Value>, ExtractError> {
    if format != Format::Xls {
        super::check_zip(path, limits)?;
    }
    let bad = |e: &dyn std::fmt::Display| {
        ExtractError::Invalid(format!("cannot read the {} file: {e}", format.as_str()))
    };
    let file = || -> Result<BufReader<std::fs::File>, ExtractError> {
        Ok(BufReader::new(std::fs::File::open(path)?))
    };
    let mut wb: Sheets<_> = match format {
        Format::Xls => Sheets::Xls(calamine::open_workbook_from_rs(file()?).map_err(|e| bad(&e))?),
        Format::Xlsb => {
            Sheets::Xlsb(calamine::open_workbook_from_rs(file()?).map_err(|e| bad(&e))?)
        }
        Format::Ods => Sheets::Ods(calamine::open_workbook_from_rs(file()?).map_err(|e| bad(&e))?),
        _ => Sheets::Xlsx(calamine::open_workbook_from_rs(file()?).map_err(|e| bad(&e))?),
    };
    let mut budget = limits.max_cells;
    let mut out = Vec::new();
    let names = wb.sheet_names();
    for (index, name) in names.iter().cloned().enumerate() {
        let (origin, rows) = match &mut wb {
            // Streamed, so a sheet's extent is checked before any grid exists.
            Sheets::Xlsx(x) => {
                let mut r = x.worksheet_cells_reader(&name).map_err(|e| bad(&e))?;
                streamed(&name, &mut budget, limits, || {
                    let c = r.next_cell().map_err(|e| bad(&e))?;
                    Ok(c.map(|c| (c.get_position(), Data::from(c.get_value().clone()))))
                })?
            }
            Sheets::Xlsb(x) => {
                let mut r = x.worksheet_cells_reader(&name).map_err(|e| bad(&e))?;
                streamed(&name, &mut budget, limits, || {
                    let c = r.next_cell().map_err(|e| bad(&e))?;
                    Ok(c.map(|c| (c.get_position(), Data::from(c.get_value().clone()))))
                })?
            }
            _ => {
                let range = wb.worksheet_range(&name).map_err(|e| bad(&e))?;
                let (h, w) = range.get_size();
                take_budget(&mut budget, &name, h, w, limits)?;
                let rows = range
                    .rows()
                    .map(|r| r.iter().map(|c| cell(c, limits)).collect())
                    .collect();
                (range.start().unwrap_or((0, 0)), rows)
            }
        };
        let merged = match &mut wb {
            Sheets::Xlsx(x) => x.merge_cells_by_sheet_name(&name).unwrap_or_default(),
            Sheets::Xls(x) => x.merge_cells_by_sheet_name(&name).unwrap_or_default(),
            _ => Vec::new(),
        };
        out.push(sheet(&name, index, origin, rows, &merged));
        progress(index + 1, names.len(), "sheets");
    }
    Ok(out)
}

/// `(row, column)` of a sheet's first used cell.
type Origin = (u32, u32);

/// Charges a sheet's `h × w` cells to what the file may still hold.
fn take_budget(
    budget: &mut usize,
    name: &str,
    h: usize,
    w: usize,
    limits: &Limits,
) -> Result<(), ExtractError> {
    let cells = h.saturating_mul(w);
    if cells > *budget {
        return Err(ExtractError::Limit(format!(
            "sheet {name:?} spans {h} × {w} cells; the file may hold {} in all",
            limits.max_cells
        )));
    }
    *budget -= cells;
    Ok(())
}

/// Reads an xlsx or xlsb sheet cell by cell: the used cells are counted and
/// their extent checked against the budget before the grid is built, so two
/// cells at A1 and XFD1048576 are refused instead of allocating 17 billion.
/// `next` yields `((row, column), value)` until the sheet ends.
fn streamed(
    name: &str,
    budget: &mut usize,
    limits: &Limits,
    mut next: impl FnMut() -> Result<Option<(Origin, Data)>, ExtractError>,
) -> Result<(Origin, Vec<Vec<Value>>), ExtractError> {
    let mut cells = Vec::new();
    let (mut lo, mut hi) = ((u32::MAX, u32::MAX), (0u32, 0u32));
    while let Some(((r, col), data)) = next()? {
        let value = cell(&data, limits);
        if value.is_null() {
            continue;
        }
        lo = (lo.0.min(r), lo.1.min(col));
        hi = (hi.0.max(r), hi.1.max(col));
        cells.push((r, col, value));
        if cells.len() > *budget {
            return Err(ExtractError::Limit(format!(
                "sheet {name:?} has more than {} cells",
                limits.max_cells
            )));
        }
    }
    if cells.is_empty() {
        return Ok(((0, 0), Vec::new()));
    }
    let (h, w) = ((hi.0 - lo.0) as usize + 1, (hi.1 - lo.1) as usize + 1);
    take_budget(budget, name, h, w, limits)?;
    let mut rows = vec![vec![Value::Null; w]; h];
    for (r, c, v) in cells {
        rows[(r - lo.0) as usize][(c - lo.1) as usize] = v;
    }
    Ok((lo, rows))
}

fn sheet(
    name: &str,
    index: usize,
    origin: (u32, u32),
    rows: Vec<Vec<Value>>,
    merged: &[Dimensions],
) -> Value {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let tables = tables(&rows);
    json!({
        "name": name,
        "index": index,
        "rows": rows.len(),
        "columns": columns,
        "origin": { "row": origin.0, "column": origin.1 },
        "cells": rows,
        "merged": merged.iter().map(|d| json!({
            "first_row": d.start.0, "first_column": d.start.1,
            "last_row": d.end.0, "last_column": d.end.1,
        })).collect::<Vec<_>>(),
        "tables": tables,
    })
}

fn text(s: &str, limits: &Limits) -> Value {
    if s.len() <= limits.max_cell_text {
        return Value::String(s.to_string());
    }
    let mut end = limits.max_cell_text;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Value::String(format!("{}…", &s[..end]))
}

fn number(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn cell(c: &Data, limits: &Limits) -> Value {
    match c {
        Data::Empty => Value::Null,
        Data::Int(i) => json!(i),
        Data::Float(f) => number(*f),
        Data::String(s) => text(s, limits),
        Data::Bool(b) => json!(b),
        Data::DateTime(dt) if dt.is_duration() => json!({ "duration": dt.as_f64() * 86_400.0 }),
        Data::DateTime(dt) => {
            let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
            let date = if dt.as_f64().fract() == 0.0 {
                format!("{y:04}-{mo:02}-{d:02}")
            } else if ms > 0 {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}")
            } else {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
            };
            json!({ "date": date })
        }
        Data::DateTimeIso(s) => json!({ "date": s }),
        Data::DurationIso(s) => json!({ "duration": s }),
        Data::Error(e) => json!({ "error": e.to_string() }),
    }
}

/// The kind of a cell value, as column types name it.
fn kind(v: &Value) -> Option<&'static str> {
    match v {
        Value::Null => None,
        Value::Number(_) => Some("number"),
        Value::String(_) => Some("text"),
        Value::Bool(_) => Some("bool"),
        Value::Object(o) if o.contains_key("date") => Some("date"),
        Value::Object(o) if o.contains_key("duration") => Some("duration"),
        _ => Some("error"),
    }
}

/// Blocks of rows between blank rows with a text header and data below.
/// The runs of rows between blank rows, as index ranges.
pub(crate) fn row_blocks<T>(rows: &[T], blank: impl Fn(&T) -> bool) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        if blank(&rows[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < rows.len() && !blank(&rows[i]) {
            i += 1;
        }
        out.push(start..i);
    }
    out
}

fn tables(rows: &[Vec<Value>]) -> Vec<Value> {
    let mut out = Vec::new();
    for range in row_blocks(rows, |r| r.iter().all(Value::is_null)) {
        let (start, i) = (range.start, range.end);
        let (header, data) = (&rows[start], &rows[start + 1..i]);
        let header_ok = header.iter().all(|v| v.is_null() || v.is_string())
            && header.iter().filter(|v| v.is_string()).count() >= 1;
        if !header_ok || data.is_empty() {
            continue;
        }
        let columns: Vec<Value> = header
            .iter()
            .enumerate()
            .filter_map(|(c, h)| {
                let name = h.as_str()?;
                let mut kinds: Vec<&str> = data
                    .iter()
                    .filter_map(|r| r.get(c).and_then(kind))
                    .collect();
                let values = kinds.len();
                kinds.sort_unstable();
                kinds.dedup();
                let ty = match kinds.as_slice() {
                    [] => "empty",
                    [one] => *one,
                    _ => "mixed",
                };
                Some(json!({ "index": c, "name": name, "type": ty, "values": values }))
            })
            .collect();
        out.push(json!({
            "header_row": start,
            "first_row": start + 1,
            "last_row": i - 1,
            "columns": columns,
        }));
    }
    out
}

/// One sheet from delimited text; the separator is the most frequent of
/// `,` `;` and tab in the first line. Numbers and booleans are typed.
fn csv_sheet(path: &Path, limits: &Limits) -> Result<Value, ExtractError> {
    let mut first = Vec::new();
    std::fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut first)?;
    let line = first.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| line.iter().filter(|&&b| b == *d).count())
        .unwrap_or(b',');
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_path(path)
        .map_err(|e| ExtractError::Invalid(format!("cannot read the CSV file: {e}")))?;
    let mut rows = Vec::new();
    let mut cells = 0usize;
    for record in reader.byte_records() {
        let record =
            record.map_err(|e| ExtractError::Invalid(format!("cannot read the CSV file: {e}")))?;
        cells += record.len();
        if cells > limits.max_cells {
            return Err(ExtractError::Limit(format!(
                "the CSV file has more than {} cells",
                limits.max_cells
            )));
        }
        let row: Vec<Value> = record
            .iter()
            .map(|field| {
                let s = String::from_utf8_lossy(field);
                let s = s.trim_start_matches('\u{feff}');
                csv_cell(s, limits)
            })
            .collect();
        rows.push(row);
    }
    Ok(sheet("Sheet1", 0, (0, 0), rows, &[]))
}

fn csv_cell(s: &str, limits: &Limits) -> Value {
    let t = s.trim();
    if t.is_empty() {
        return Value::Null;
    }
    // Leading zeros are identifiers (zip codes, account numbers), not numbers.
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

/// Counts of a spreadsheet result, for job summaries.
pub fn summary(result: &Value) -> Value {
    let sheets = result["sheets"].as_array().map_or(&[][..], Vec::as_slice);
    let mut m = Map::new();
    m.insert("sheets".into(), json!(sheets.len()));
    m.insert(
        "cells".into(),
        json!(sheets
            .iter()
            .map(|s| s["rows"].as_u64().unwrap_or(0) * s["columns"].as_u64().unwrap_or(0))
            .sum::<u64>()),
    );
    m.insert(
        "tables".into(),
        json!(sheets
            .iter()
            .map(|s| s["tables"].as_array().map_or(0, Vec::len))
            .sum::<usize>()),
    );
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_typed() {
        let l = Limits::default();
        assert_eq!(csv_cell("42", &l), json!(42));
        assert_eq!(csv_cell("-1.5", &l), json!(-1.5));
        assert_eq!(csv_cell("00123", &l), json!("00123"));
        assert_eq!(csv_cell("TRUE", &l), json!(true));
        assert_eq!(csv_cell("", &l), Value::Null);
        assert_eq!(csv_cell("inf", &l), json!("inf"));
        assert_eq!(csv_cell("Malmö", &l), json!("Malmö"));
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
    fn tables_are_found_between_blank_rows() {
        let rows = vec![
            vec![json!("Name"), json!("Age"), Value::Null],
            vec![json!("Ann"), json!(31), Value::Null],
            vec![json!("Bob"), json!("n/a"), Value::Null],
            vec![Value::Null, Value::Null, Value::Null],
            vec![json!(1), json!(2), json!(3)],
            vec![json!(4), json!(5), json!(6)],
        ];
        let t = tables(&rows);
        assert_eq!(t.len(), 1, "the numeric block has no header");
        assert_eq!(
            (t[0]["header_row"].clone(), t[0]["last_row"].clone()),
            (json!(0), json!(2))
        );
        let cols = t[0]["columns"].as_array().unwrap();
        assert_eq!(cols[0]["type"], "text");
        assert_eq!(cols[1]["type"], "mixed");
        assert_eq!(cols[1]["values"], 2);
    }
}
