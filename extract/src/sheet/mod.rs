//! Spreadsheet extraction: xlsx, xlsm, xlsb, xls (BIFF5 and 8) and ods with
//! calamine, Excel 2.x–4.0 with [`biff`], CSV with [`csv`]. Every sheet
//! with its typed cells, merged ranges and detected tables.
//!
//! Output (`docproc.spreadsheet`, version 2):
//! ```json
//! { "schema": "docproc.spreadsheet", "version": 2, "format": "xlsx",
//!   "sheets": [ { "name": "Sales", "index": 0, "rows": 3, "columns": 2,
//!                 "origin": { "row": 0, "column": 0 },
//!                 "cells": [["Region", "Total"], ["North", 12.5], ["South", null]],
//!                 "merged": [ { "first_row": 0, "first_column": 0, "last_row": 0, "last_column": 1 } ],
//!                 "tables": [ { "header_row": 0, "first_row": 1, "last_row": 2,
//!                               "columns": [ { "index": 0, "name": "Region", "type": "text", "values": 2 } ] } ] } ] }
//! ```
//! Cells are JSON numbers, strings, booleans or `null` (empty); dates are
//! `{"date": "2024-03-01"}` or `{"date": "2024-03-01T12:30:00"}` (ISO 8601),
//! times of day `{"time": "06:34:00"}`, durations `{"duration": seconds}`,
//! cell errors `{"error": "#DIV/0!"}` (see [`value`]). Version 2 brought
//! times (version 1 wrote them as dates on 1899-12-31) and durations always
//! in seconds. Rows and columns are 0-based from `origin`.
//! A table is a block of rows between blank rows whose first row is all
//! text (the header) followed by at least one data row; a column's type is
//! the one kind its values share, or `mixed`.

pub(crate) mod biff;
#[cfg(test)]
mod corpus;
pub(crate) mod csv;
mod gaps;
mod value;

use std::io::{BufReader, Cursor, Read, Seek};
use std::path::Path;

use calamine::{Data, Dimensions, Reader, Sheets};
use serde_json::{json, Map, Value};

use super::detect::Format;
use super::{ExtractError, Limits, Progress};
use value::cell;

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
            let rows = csv::rows(path, limits)?;
            let sheet = sheet("Sheet1", 0, (0, 0), rows, &[]);
            progress(1, 1, "sheets");
            vec![sheet]
        }
        Format::Pdf => return Err(ExtractError::Invalid("not a spreadsheet".into())),
        _ => workbook(path, format, limits, progress)?,
    };
    Ok(json!({
        "schema": SCHEMA,
        "version": 2,
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
    if format == Format::Xls {
        let mut head = [0u8; 8];
        let n = std::fs::File::open(path)?.read(&mut head)?;
        if biff::is_bare_biff(&head[..n]) {
            return old_excel(path, limits, progress);
        }
    } else {
        super::check_zip(path, limits)?;
    }
    let file = BufReader::new(std::fs::File::open(path)?);
    let merges = match format {
        Format::Ods => gaps::merges(path, limits)?,
        _ => Vec::new(),
    };
    match read_workbook(file, format, limits, &mut *progress, &merges) {
        // calamine trips over XML that Excel, LibreOffice and the reference
        // readers take (see `gaps`): read a plain copy before refusing.
        Err(ExtractError::Invalid(why))
            if matches!(format, Format::Ods | Format::Xlsx | Format::Xlsm) =>
        {
            let retry = gaps::repaired(path, format, limits).and_then(|copy| {
                read_workbook(Cursor::new(copy), format, limits, progress, &merges)
            });
            match retry {
                Err(ExtractError::Invalid(_)) => Err(ExtractError::Invalid(why)),
                other => other,
            }
        }
        other => other,
    }
}

/// Reads every worksheet of a workbook calamine opens from `rs`;
/// `ods_merges` are an ODS file's merged ranges per table.
fn read_workbook<RS: Read + Seek>(
    rs: RS,
    format: Format,
    limits: &Limits,
    progress: Progress<'_>,
    ods_merges: &[Vec<Dimensions>],
) -> Result<Vec<Value>, ExtractError> {
    let bad = |e: &dyn std::fmt::Display| {
        ExtractError::Invalid(format!("cannot read the {} file: {e}", format.as_str()))
    };
    let mut wb: Sheets<RS> = match format {
        Format::Xls => Sheets::Xls(calamine::open_workbook_from_rs(rs).map_err(|e| bad(&e))?),
        Format::Xlsb => Sheets::Xlsb(calamine::open_workbook_from_rs(rs).map_err(|e| bad(&e))?),
        Format::Ods => Sheets::Ods(calamine::open_workbook_from_rs(rs).map_err(|e| bad(&e))?),
        _ => Sheets::Xlsx(calamine::open_workbook_from_rs(rs).map_err(|e| bad(&e))?),
    };
    let mut budget = limits.max_cells;
    let mut out = Vec::new();
    // Chart sheets hold no cells; openpyxl and xlrd leave them out too.
    let names: Vec<String> = wb
        .sheets_metadata()
        .iter()
        .filter(|s| s.typ != calamine::SheetType::ChartSheet)
        .map(|s| s.name.clone())
        .collect();
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
            Sheets::Ods(_) => ods_merges.get(index).cloned().unwrap_or_default(),
            Sheets::Xlsb(_) => Vec::new(),
        };
        out.push(sheet(&name, index, origin, rows, &merged));
        progress(index + 1, names.len(), "sheets");
    }
    Ok(out)
}

/// An Excel 2.x–4.0 file (a bare BIFF2–4 stream), read by [`biff`]; its
/// cells are charged to the same budget as every other workbook's.
fn old_excel(
    path: &Path,
    limits: &Limits,
    progress: Progress<'_>,
) -> Result<Vec<Value>, ExtractError> {
    let data = std::fs::read(path)?;
    let sheets = biff::read(&data, limits)?;
    let (mut budget, total) = (limits.max_cells, sheets.len());
    let mut out = Vec::new();
    for (index, s) in sheets.into_iter().enumerate() {
        let mut cells = s.cells.into_iter();
        let (origin, rows) = streamed(&s.name, &mut budget, limits, || Ok(cells.next()))?;
        out.push(sheet(&s.name, index, origin, rows, &[]));
        progress(index + 1, total, "sheets");
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

/// The kind of a cell value, as column types name it.
fn kind(v: &Value) -> Option<&'static str> {
    match v {
        Value::Null => None,
        Value::Number(_) => Some("number"),
        Value::String(_) => Some("text"),
        Value::Bool(_) => Some("bool"),
        Value::Object(o) if o.contains_key("date") => Some("date"),
        Value::Object(o) if o.contains_key("time") => Some("time"),
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

    fn read(path: &Path, format: Format) -> Value {
        extract(path, format, &Limits::default(), &mut |_, _, _| {}).unwrap()
    }

    /// Times of day, elapsed durations, dates and OOXML character escapes,
    /// in an xlsx the test writes.
    #[test]
    fn xlsx_times_durations_dates_and_escapes() {
        use rust_xlsxwriter::{Format as F, Workbook};
        let dir = tempfile::tempdir().unwrap();
        // rust_xlsxwriter writes the 1900 system only; the 1904 one is
        // checked in `value` and on the corpus (Test1904.xls and its BIFF5 twin).
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        let hms = F::new().set_num_format("hh:mm:ss");
        let elapsed = F::new().set_num_format("[h]:mm:ss");
        let date = F::new().set_num_format("yyyy-mm-dd");
        ws.write_number_with_format(0, 0, 0.2736111111111111, &hms)
            .unwrap();
        ws.write_number_with_format(0, 1, 0.0, &hms).unwrap();
        ws.write_number_with_format(0, 2, 1.5, &elapsed).unwrap();
        ws.write_number_with_format(0, 3, 45352.0, &date).unwrap();
        ws.write_number_with_format(0, 4, 2.25, &date).unwrap();
        ws.write_string(1, 0, "form\u{c}feed").unwrap();
        ws.write_string(1, 1, "_x000D_ stays").unwrap();
        let path = dir.path().join("t.xlsx");
        wb.save(&path).unwrap();
        let res = read(&path, Format::Xlsx);
        let cells = &res["sheets"][0]["cells"];
        assert_eq!(cells[0][0], json!({"time": "06:34:00"}));
        assert_eq!(cells[0][1], json!({"time": "00:00:00"}));
        assert_eq!(cells[0][2], json!({"duration": 129600.0}));
        assert_eq!(cells[0][3], json!({"date": "2024-03-01"}));
        assert_eq!(cells[0][4], json!({"date": "1900-01-02T06:00:00"}));
        assert_eq!(cells[1][0], json!("form\u{c}feed"));
        assert_eq!(cells[1][1], json!("_x000D_ stays"));
    }

    /// ODS as KSpread writes it (indented XML between cells) with a merged
    /// range: read through the plain copy, the merge from `content.xml`.
    #[test]
    fn indented_ods_with_merges() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.ods");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("mimetype", o).unwrap();
        zip.write_all(b"application/vnd.oasis.opendocument.spreadsheet")
            .unwrap();
        zip.start_file("META-INF/manifest.xml", o).unwrap();
        zip.write_all(br#"<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">
 <manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>
 <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
</manifest:manifest>"#).unwrap();
        zip.start_file("content.xml", o).unwrap();
        zip.write_all(
            br#"<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0">
 <office:body>
  <office:spreadsheet>
   <table:table table:name="Sheet1">
    <table:table-row>
     <table:table-cell office:value-type="float" office:value="3" table:number-columns-spanned="2">
      <text:p>3</text:p>
     </table:table-cell>
     <table:covered-table-cell/>
     <table:table-cell office:value-type="string">
      <text:p>a  b</text:p>
     </table:table-cell>
    </table:table-row>
    <table:table-row>
     <table:table-cell office:value-type="time" office:time-value="PT06H34M00S">
      <text:p>06:34</text:p>
     </table:table-cell>
    </table:table-row>
   </table:table>
  </office:spreadsheet>
 </office:body>
</office:document-content>"#,
        )
        .unwrap();
        zip.finish().unwrap();
        let res = read(&path, Format::Ods);
        let sheet = &res["sheets"][0];
        assert_eq!(sheet["cells"][0], json!([3.0, null, "a  b"]));
        assert_eq!(sheet["cells"][1][0], json!({"time": "06:34:00"}));
        assert_eq!(
            sheet["merged"],
            json!([{"first_row": 0, "first_column": 0, "last_row": 0, "last_column": 1}])
        );
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
