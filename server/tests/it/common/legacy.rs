//! Writers of the binary spreadsheet formats no Rust crate writes: a BIFF8
//! `.xls` (records in a compound file) and an `.xlsb` (BIFF12 records in a
//! zip), each holding one sheet with text, numbers, a boolean, an error, a
//! date (xls) and a merged range (xls), plus hostile variants.

use std::io::{Cursor, Write};

/// One sheet of test content: `(row, column, value)`.
pub enum Cell {
    Text(&'static str),
    Number(f64),
    Bool(bool),
    /// `#DIV/0!`.
    DivZero,
    /// A date serial shown with a date format.
    Date(f64),
}

/// The cells both writers store: a header row, two data rows.
pub fn cells() -> Vec<(u32, u16, Cell)> {
    vec![
        (0, 0, Cell::Text("Region")),
        (0, 1, Cell::Text("Total")),
        (0, 2, Cell::Text("Open")),
        (1, 0, Cell::Text("North")),
        (1, 1, Cell::Number(12.5)),
        (1, 2, Cell::Bool(true)),
        (2, 0, Cell::Text("South")),
        (2, 1, Cell::Number(-3.0)),
        (2, 2, Cell::Bool(false)),
        (3, 0, Cell::DivZero),
        (3, 1, Cell::Date(45352.0)), // 2024-03-01
    ]
}

/// The text cells of [`cells`] in order: the shared-string table.
fn texts() -> Vec<&'static str> {
    cells()
        .iter()
        .filter_map(|(_, _, c)| match c {
            Cell::Text(t) => Some(*t),
            _ => None,
        })
        .collect()
}

fn biff(out: &mut Vec<u8>, typ: u16, data: &[u8]) {
    out.extend_from_slice(&typ.to_le_bytes());
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(data);
}

fn bof(dt: u16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x0600u16.to_le_bytes()); // BIFF8
    b.extend_from_slice(&dt.to_le_bytes());
    b.extend_from_slice(&0x0DBBu16.to_le_bytes());
    b.extend_from_slice(&0x07CCu16.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&6u32.to_le_bytes());
    b
}

/// A BIFF8 workbook with one sheet "Sales" holding [`cells`] and the merged
/// range A6:B6; `rows_claimed` overrides the row count its Dimensions
/// record declares (a hostile file claims four billion).
pub fn xls(rows_claimed: Option<u32>) -> Vec<u8> {
    let strings = texts();
    // Workbook globals; the sheet's stream offset is patched in below.
    let mut g = Vec::new();
    biff(&mut g, 0x0809, &bof(0x0005));
    biff(&mut g, 0x0042, &1200u16.to_le_bytes()); // CodePage: UTF-16
    for ifmt in [0u16, 14] {
        // XF 0: General; XF 1: builtin date format 14.
        let mut xf = vec![0u8; 20];
        xf[2..4].copy_from_slice(&ifmt.to_le_bytes());
        biff(&mut g, 0x00E0, &xf);
    }
    let name = b"Sales";
    let mut bs = vec![0u8; 4];
    bs.extend_from_slice(&[0, 0, name.len() as u8, 0]);
    bs.extend_from_slice(name);
    let patch_at = g.len() + 4;
    biff(&mut g, 0x0085, &bs);
    let mut sst = Vec::new();
    sst.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    sst.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    for s in &strings {
        sst.extend_from_slice(&(s.len() as u16).to_le_bytes());
        sst.push(0); // compressed (Latin-1) characters
        sst.extend_from_slice(s.as_bytes());
    }
    biff(&mut g, 0x00FC, &sst);
    biff(&mut g, 0x000A, &[]);
    let sheet_pos = g.len() as u32;
    g[patch_at..patch_at + 4].copy_from_slice(&sheet_pos.to_le_bytes());

    // The sheet.
    biff(&mut g, 0x0809, &bof(0x0010));
    let mut dim = Vec::new();
    dim.extend_from_slice(&0u32.to_le_bytes());
    dim.extend_from_slice(&rows_claimed.unwrap_or(6).to_le_bytes());
    dim.extend_from_slice(&0u16.to_le_bytes());
    dim.extend_from_slice(&3u16.to_le_bytes());
    dim.extend_from_slice(&0u16.to_le_bytes());
    biff(&mut g, 0x0200, &dim);
    let mut isst = 0u32;
    for (r, c, v) in cells() {
        let mut rec = Vec::new();
        rec.extend_from_slice(&(r as u16).to_le_bytes());
        rec.extend_from_slice(&c.to_le_bytes());
        match v {
            Cell::Text(_) => {
                rec.extend_from_slice(&0u16.to_le_bytes());
                rec.extend_from_slice(&isst.to_le_bytes());
                isst += 1;
                biff(&mut g, 0x00FD, &rec);
            }
            Cell::Number(n) | Cell::Date(n) => {
                let xf: u16 = if matches!(v, Cell::Date(_)) { 1 } else { 0 };
                rec.extend_from_slice(&xf.to_le_bytes());
                rec.extend_from_slice(&n.to_le_bytes());
                biff(&mut g, 0x0203, &rec);
            }
            Cell::Bool(b) => {
                rec.extend_from_slice(&0u16.to_le_bytes());
                rec.extend_from_slice(&[b as u8, 0]);
                biff(&mut g, 0x0205, &rec);
            }
            Cell::DivZero => {
                rec.extend_from_slice(&0u16.to_le_bytes());
                rec.extend_from_slice(&[0x07, 1]);
                biff(&mut g, 0x0205, &rec);
            }
        }
    }
    // LabelSst at A6 ("Region" again), the merged range's anchor.
    let mut label = Vec::new();
    for v in [5u16, 0, 0] {
        label.extend_from_slice(&v.to_le_bytes());
    }
    label.extend_from_slice(&0u32.to_le_bytes());
    biff(&mut g, 0x00FD, &label);
    let mut merge = Vec::new();
    merge.extend_from_slice(&1u16.to_le_bytes());
    for v in [5u16, 5, 0, 1] {
        merge.extend_from_slice(&v.to_le_bytes());
    }
    biff(&mut g, 0x00E5, &merge);
    biff(&mut g, 0x000A, &[]);

    let mut file = cfb::CompoundFile::create(Cursor::new(Vec::new())).expect("cfb");
    let mut stream = file.create_stream("/Workbook").expect("stream");
    stream.write_all(&g).expect("write");
    drop(stream);
    file.flush().expect("flush");
    file.into_inner().into_inner()
}

/// BIFF12 record: type and size as 7-bit varints, then the payload.
fn rec(out: &mut Vec<u8>, typ: u16, data: &[u8]) {
    if typ < 0x80 {
        out.push(typ as u8);
    } else {
        out.push((typ & 0x7F) as u8 | 0x80);
        out.push((typ >> 7) as u8);
    }
    let mut len = data.len();
    loop {
        let b = (len & 0x7F) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(data);
}

/// XLWideString: character count, then UTF-16LE.
fn wide(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().collect();
    out.extend_from_slice(&(units.len() as u32).to_le_bytes());
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

/// An xlsb workbook with one sheet "Sales" holding [`cells`] (the date as
/// a plain number: no styles part); `far_cell` adds a cell at XFD1048576,
/// which makes the sheet's extent 17 billion cells.
pub fn xlsb(far_cell: bool) -> Vec<u8> {
    let mut wb = Vec::new();
    let mut sh = Vec::new();
    sh.extend_from_slice(&0u32.to_le_bytes()); // visible
    sh.extend_from_slice(&1u32.to_le_bytes()); // tab id
    wide(&mut sh, "rId1");
    wide(&mut sh, "Sales");
    rec(&mut wb, 0x009C, &sh); // BrtBundleSh
    rec(&mut wb, 0x0090, &[]); // BrtEndBundleShs
    rec(&mut wb, 0x009D, &[0u8; 8]); // BrtCalcProp ends the defined names

    let strings = texts();
    let mut sst = Vec::new();
    let mut head = Vec::new();
    head.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    head.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    rec(&mut sst, 0x009F, &head); // BrtBeginSst
    for s in &strings {
        let mut item = vec![0u8];
        wide(&mut item, s);
        rec(&mut sst, 0x0013, &item); // BrtSSTItem
    }
    rec(&mut sst, 0x00A0, &[]); // BrtEndSst

    let mut ws = Vec::new();
    rec(&mut ws, 0x0081, &[]); // BrtBeginSheet
    let mut dim = Vec::new();
    let (rl, cl) = if far_cell {
        (1_048_575u32, 16_383u32)
    } else {
        (3, 2)
    };
    for v in [0u32, rl, 0, cl] {
        dim.extend_from_slice(&v.to_le_bytes());
    }
    rec(&mut ws, 0x0094, &dim); // BrtWsDim
    rec(&mut ws, 0x0091, &[]); // BrtBeginSheetData
    let mut row = u32::MAX;
    let mut isst = 0u32;
    let mut all: Vec<(u32, u32, Cell)> = cells()
        .into_iter()
        .map(|(r, c, v)| (r, c as u32, v))
        .collect();
    if far_cell {
        all.push((1_048_575, 16_383, Cell::Number(1.0)));
    }
    for (r, c, v) in all {
        if r != row {
            let mut h = r.to_le_bytes().to_vec();
            h.extend_from_slice(&[0u8; 13]);
            rec(&mut ws, 0x0000, &h); // BrtRowHdr
            row = r;
        }
        let mut cell = c.to_le_bytes().to_vec();
        cell.extend_from_slice(&0u32.to_le_bytes()); // style
        match v {
            Cell::Text(_) => {
                cell.extend_from_slice(&isst.to_le_bytes());
                isst += 1;
                rec(&mut ws, 0x0007, &cell); // BrtCellIsst
            }
            Cell::Number(n) | Cell::Date(n) => {
                cell.extend_from_slice(&n.to_le_bytes());
                rec(&mut ws, 0x0005, &cell); // BrtCellReal
            }
            Cell::Bool(b) => {
                cell.push(b as u8);
                rec(&mut ws, 0x0004, &cell); // BrtCellBool
            }
            Cell::DivZero => {
                cell.push(0x07);
                rec(&mut ws, 0x0003, &cell); // BrtCellError
            }
        }
    }
    rec(&mut ws, 0x0092, &[]); // BrtEndSheetData
    rec(&mut ws, 0x0082, &[]); // BrtEndSheet

    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    let parts: [(&str, &[u8]); 6] = [
        ("[Content_Types].xml", br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="bin" ContentType="application/vnd.ms-excel.sheet.binary.macroEnabled.main"/><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Override PartName="/xl/workbook.bin" ContentType="application/vnd.ms-excel.sheet.binary.macroEnabled.main"/><Override PartName="/xl/worksheets/sheet1.bin" ContentType="application/vnd.ms-excel.worksheet"/><Override PartName="/xl/sharedStrings.bin" ContentType="application/vnd.ms-excel.sharedStrings"/></Types>"#),
        ("_rels/.rels", br#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.bin"/></Relationships>"#),
        ("xl/_rels/workbook.bin.rels", br#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.bin"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.bin"/></Relationships>"#),
        ("xl/workbook.bin", &wb),
        ("xl/sharedStrings.bin", &sst),
        ("xl/worksheets/sheet1.bin", &ws),
    ];
    for (name, data) in parts {
        zip.start_file(name, opts).expect("zip entry");
        zip.write_all(data).expect("zip write");
    }
    zip.finish().expect("zip").into_inner()
}
