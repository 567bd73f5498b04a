//! What calamine leaves out of an ODS file and the repairs it needs: the
//! merged ranges of each table (`table:number-columns-spanned` and
//! `number-rows-spanned`), and a copy of a zip workbook with the XML that
//! calamine trips over made plain — whitespace text between table
//! elements (KSpread/Calligra writes indented XML) and spaces around an
//! xlsx cell's number (`<v> 41</v>`, which Excel and openpyxl read).

use std::io::{Cursor, Read, Write};
use std::path::Path;

use calamine::Dimensions;
use quick_xml::events::{BytesText, Event};
use quick_xml::{Reader, Writer};

use super::Format;
use crate::{ExtractError, Limits};

/// Most merged ranges kept per file.
const MAX_MERGES: usize = 100_000;

fn bad(e: impl std::fmt::Display) -> ExtractError {
    ExtractError::Invalid(format!("cannot read the file: {e}"))
}

/// Entry `i` of a zip read whole, charged to `budget` (what the whole
/// file may still inflate to: an entry's declared size is not trusted).
fn entry(
    zip: &mut zip::ZipArchive<impl Read + std::io::Seek>,
    i: usize,
    budget: &mut u64,
) -> Result<(String, Vec<u8>), ExtractError> {
    let mut e = zip.by_index(i).map_err(bad)?;
    let name = e.name().map_err(bad)?.into_owned();
    let mut data = Vec::new();
    (&mut e).take(*budget + 1).read_to_end(&mut data)?;
    *budget = budget
        .checked_sub(data.len() as u64)
        .ok_or_else(|| ExtractError::Limit("the file inflates past its limit".into()))?;
    Ok((name, data))
}

fn attr_u32(e: &quick_xml::events::BytesStart<'_>, name: &str) -> u32 {
    e.attributes()
        .flatten()
        .find(|a| a.key.0 == name)
        .and_then(|a| a.value.trim().parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// The merged ranges of each table of the ODS file at `path`, in order.
pub(super) fn merges(path: &Path, limits: &Limits) -> Result<Vec<Vec<Dimensions>>, ExtractError> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut zip = zip::ZipArchive::new(file).map_err(bad)?;
    let Some(i) = zip.index_for_name("content.xml") else {
        return Ok(Vec::new());
    };
    // Streamed: content.xml can be most of the file.
    let content = zip.by_index(i).map_err(bad)?;
    let mut reader = Reader::from_reader(std::io::BufReader::new(
        content.take(limits.max_zip_uncompressed),
    ));
    let (mut out, mut kept): (Vec<Vec<Dimensions>>, usize) = (Vec::new(), 0);
    let (mut row, mut col, mut row_repeat) = (0u32, 0u32, 1u32);
    let mut buf = Vec::new();
    loop {
        let ev = reader.read_event_into(&mut buf).map_err(bad)?;
        let (e, empty) = match &ev {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(e) => {
                if e.name().0 == "table:table-row" {
                    row = row.saturating_add(row_repeat);
                }
                buf.clear();
                continue;
            }
            Event::Eof => break,
            _ => {
                buf.clear();
                continue;
            }
        };
        match e.name().0 {
            "table:table" => {
                out.push(Vec::new());
                row = 0;
            }
            "table:table-row" => {
                col = 0;
                row_repeat = attr_u32(e, "table:number-rows-repeated");
                if empty {
                    row = row.saturating_add(row_repeat);
                }
            }
            name @ ("table:table-cell" | "table:covered-table-cell") => {
                let (cs, rs) = (
                    attr_u32(e, "table:number-columns-spanned"),
                    attr_u32(e, "table:number-rows-spanned"),
                );
                if name == "table:table-cell" && (cs > 1 || rs > 1) && kept < MAX_MERGES {
                    if let Some(list) = out.last_mut() {
                        list.push(Dimensions {
                            start: (row, col),
                            end: (row.saturating_add(rs - 1), col.saturating_add(cs - 1)),
                        });
                        kept += 1;
                    }
                }
                col = col.saturating_add(attr_u32(e, "table:number-columns-repeated"));
            }
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

/// A copy of the zip workbook at `path` with its XML made plain for
/// calamine (see the module header); the zip was checked by `check_zip`.
pub(super) fn repaired(
    path: &Path,
    format: Format,
    limits: &Limits,
) -> Result<Vec<u8>, ExtractError> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut zip = zip::ZipArchive::new(file).map_err(bad)?;
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    let mut budget = limits.max_zip_uncompressed;
    for i in 0..zip.len() {
        let (name, data) = entry(&mut zip, i, &mut budget)?;
        let data = match format {
            Format::Ods if name == "content.xml" => plain(
                &data,
                |parents| {
                    parents
                        .last()
                        .is_some_and(|p| p.starts_with("table:") || p.starts_with("office:"))
                },
                false,
            )?,
            Format::Xlsx | Format::Xlsm
                if name.starts_with("xl/worksheets/") && name.ends_with(".xml") =>
            {
                plain(
                    &data,
                    |parents| parents.last().is_some_and(|p| p == "v"),
                    true,
                )?
            }
            _ => data,
        };
        out.start_file(name, stored).map_err(bad)?;
        out.write_all(&data)?;
    }
    Ok(out.finish().map_err(bad)?.into_inner())
}

/// Rewrites `xml`, dropping whitespace-only text (or, with `trim`,
/// trimming the text) where `inside(element stack)` says so.
fn plain(
    xml: &[u8],
    inside: impl Fn(&[String]) -> bool,
    trim: bool,
) -> Result<Vec<u8>, ExtractError> {
    let mut reader = Reader::from_reader(xml);
    let mut writer = Writer::new(Vec::with_capacity(xml.len()));
    let mut parents: Vec<String> = Vec::new();
    let mut buf = Vec::new();
    loop {
        let ev = reader.read_event_into(&mut buf).map_err(bad)?;
        match &ev {
            Event::Eof => break,
            Event::Start(e) => parents.push(e.name().0.to_string()),
            Event::End(_) => {
                parents.pop();
            }
            Event::Text(t) if inside(&parents) => {
                let kept = t.trim();
                if !trim && kept.is_empty() {
                    buf.clear();
                    continue;
                }
                if trim {
                    let text = BytesText::from_escaped(kept.to_string());
                    writer.write_event(Event::Text(text)).map_err(bad)?;
                    buf.clear();
                    continue;
                }
            }
            _ => {}
        }
        writer.write_event(ev).map_err(bad)?;
        buf.clear();
    }
    Ok(writer.into_inner())
}
