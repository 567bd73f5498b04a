//! Excel 2.x, 3.0 and 4.0 files (BIFF2, BIFF3, BIFF4): a bare record
//! stream with no OLE container, which calamine does not read. A worksheet
//! file holds one sheet; a BIFF4 workbook (`BIFF4W`) holds several, each
//! in its own substream named by a BOUNDSHEET record.
//!
//! Records read: BOF, EOF, CODEPAGE (the text encoding), DATEMODE (1904),
//! FORMAT and XF (which cells are dates), NUMBER, INTEGER, RK, LABEL,
//! BOOLERR, FORMULA with its cached result (and the STRING after it), and
//! IXFE. Every other record is skipped by its length.

use calamine::{CellErrorType, Data, ExcelDateTime, ExcelDateTimeType};
use encoding_rs::Encoding;

use crate::{ExtractError, Limits};

/// One worksheet: its name and its non-empty cells as `((row, column), value)`.
pub(super) struct Sheet {
    pub name: String,
    pub cells: Vec<((u32, u32), Data)>,
}

/// Whether `head` starts a bare BIFF2–4 stream: a BOF record of those
/// versions for a worksheet or a BIFF4 workbook.
pub(crate) fn is_bare_biff(head: &[u8]) -> bool {
    if head.len() < 8 {
        return false;
    }
    let u = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
    matches!(u(0), 0x0009 | 0x0209 | 0x0409)
        && (4..=16).contains(&u(2))
        && matches!(u(6), 0x0010 | 0x0100)
}

/// What a cell's number format makes of a number.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Number,
    Date,
    Duration,
}

/// Classifies an Excel number format: a date or time when it has date or
/// time letters outside quotes, escapes and brackets; a duration when it
/// has an elapsed-time bracket (`[h]`, `[mm]`, `[ss]`).
fn kind(format: &str) -> Kind {
    let (mut date, mut elapsed) = (false, false);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                for q in chars.by_ref() {
                    if q == '"' {
                        break;
                    }
                }
            }
            '\\' | '_' | '*' => {
                chars.next();
            }
            '[' => {
                let mut inner = String::new();
                for q in chars.by_ref() {
                    if q == ']' {
                        break;
                    }
                    inner.push(q.to_ascii_lowercase());
                }
                if !inner.is_empty() && inner.chars().all(|q| matches!(q, 'h' | 'm' | 's')) {
                    elapsed = true;
                }
            }
            // A section for negative numbers, zero or text does not decide.
            ';' => break,
            c if matches!(c.to_ascii_lowercase(), 'y' | 'm' | 'd' | 'h' | 's') => date = true,
            _ => {}
        }
    }
    match (elapsed, date) {
        (true, _) => Kind::Duration,
        (false, true) => Kind::Date,
        _ => Kind::Number,
    }
}

/// The encoding a CODEPAGE record names; Windows-1252 for those encoding_rs
/// does not have (the DOS code pages) and when there is none.
fn encoding(codepage: u16) -> &'static Encoding {
    let label = match codepage {
        874 => "windows-874",
        932 => "shift_jis",
        936 => "gbk",
        949 => "euc-kr",
        950 => "big5",
        866 => "ibm866",
        1250..=1258 => return windows(codepage),
        10000 | 0x8000 => "macintosh",
        20866 => "koi8-r",
        21866 => "koi8-u",
        _ => "windows-1252",
    };
    Encoding::for_label(label.as_bytes()).unwrap_or(encoding_rs::WINDOWS_1252)
}

fn windows(codepage: u16) -> &'static Encoding {
    Encoding::for_label(format!("windows-{codepage}").as_bytes())
        .unwrap_or(encoding_rs::WINDOWS_1252)
}

fn error(code: u8) -> CellErrorType {
    match code {
        0x00 => CellErrorType::Null,
        0x07 => CellErrorType::Div0,
        0x17 => CellErrorType::Ref,
        0x1D => CellErrorType::Name,
        0x24 => CellErrorType::Num,
        0x2A => CellErrorType::NA,
        _ => CellErrorType::Value,
    }
}

/// An RK number: a 30-bit integer or the high 30 bits of a double, maybe
/// divided by 100.
fn rk(v: u32) -> f64 {
    let n = if v & 2 != 0 {
        f64::from((v as i32) >> 2)
    } else {
        f64::from_bits(u64::from(v & 0xFFFF_FFFC) << 32)
    };
    if v & 1 != 0 {
        n / 100.0
    } else {
        n
    }
}

/// The reading state of one stream.
struct Reader<'a> {
    limits: &'a Limits,
    encoding: &'static Encoding,
    is_1904: bool,
    formats: Vec<Kind>,
    /// Format index of each XF record (BIFF3 and 4).
    xf_formats: Vec<usize>,
    /// The XF index an IXFE record gave the next BIFF2 cell.
    ixfe: Option<usize>,
    names: Vec<String>,
    /// Substreams begun (each sheet of a workbook has one).
    substreams: usize,
    /// Whether the current substream is a worksheet, whose cells are kept.
    in_worksheet: bool,
    sheets: Vec<Sheet>,
    cells: usize,
    /// A formula whose string result follows in a STRING record.
    pending: Option<(u32, u32)>,
}

/// Reads every worksheet of the bare BIFF2–4 stream in `data`.
pub(super) fn read(data: &[u8], limits: &Limits) -> Result<Vec<Sheet>, ExtractError> {
    let mut r = Reader {
        limits,
        encoding: encoding_rs::WINDOWS_1252,
        is_1904: false,
        formats: Vec::new(),
        xf_formats: Vec::new(),
        ixfe: None,
        names: Vec::new(),
        substreams: 0,
        in_worksheet: false,
        sheets: Vec::new(),
        cells: 0,
        pending: None,
    };
    let mut at = 0usize;
    while at + 4 <= data.len() {
        let id = u16::from_le_bytes([data[at], data[at + 1]]);
        let len = usize::from(u16::from_le_bytes([data[at + 2], data[at + 3]]));
        let body = data.get(at + 4..at + 4 + len).ok_or_else(|| {
            ExtractError::Invalid(format!(
                "a BIFF record at byte {at} runs past the end of the file"
            ))
        })?;
        r.record(id, body)?;
        at += 4 + len;
    }
    if r.sheets.is_empty() {
        return Err(ExtractError::Invalid(
            "no worksheet in the BIFF stream".into(),
        ));
    }
    Ok(r.sheets)
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

fn f64_at(b: &[u8], i: usize) -> Option<f64> {
    let bytes: [u8; 8] = b.get(i..i + 8)?.try_into().ok()?;
    Some(f64::from_le_bytes(bytes))
}

impl Reader<'_> {
    fn record(&mut self, id: u16, b: &[u8]) -> Result<(), ExtractError> {
        let short = || ExtractError::Invalid(format!("BIFF record {id:#06x} is too short"));
        match id {
            0x0009 | 0x0209 | 0x0409 => {
                // A BIFF4 workbook's globals, then one substream per
                // BOUNDSHEET, in order: worksheets, charts, macro sheets.
                let ty = u16_at(b, 2).ok_or_else(short)?;
                if ty == 0x0100 {
                    return Ok(());
                }
                self.substreams += 1;
                self.in_worksheet = ty == 0x0010;
                if self.in_worksheet {
                    let n = self.substreams;
                    let name = self
                        .names
                        .get(n - 1)
                        .cloned()
                        .unwrap_or_else(|| format!("Sheet {n}"));
                    self.sheets.push(Sheet {
                        name,
                        cells: Vec::new(),
                    });
                }
            }
            0x0042 => self.encoding = encoding(u16_at(b, 0).ok_or_else(short)?),
            0x0022 => self.is_1904 = u16_at(b, 0).ok_or_else(short)? != 0,
            // BOUNDSHEET of a BIFF4 workbook: only the sheet's name.
            0x008F => {
                let name = self.string(b, 0, 1).ok_or_else(short)?;
                self.names.push(name);
            }
            // FORMAT: BIFF2–3 the string; BIFF4 two bytes first.
            0x001E => {
                let s = self.string(b, 0, 1).ok_or_else(short)?;
                self.formats.push(kind(&s));
            }
            0x041E => {
                let s = self.string(b, 2, 1).ok_or_else(short)?;
                self.formats.push(kind(&s));
            }
            // XF: BIFF3 and BIFF4 keep the format index in their second byte.
            0x0243 | 0x0443 => self
                .xf_formats
                .push(usize::from(*b.get(1).ok_or_else(short)?)),
            0x0044 => self.ixfe = Some(usize::from(u16_at(b, 0).ok_or_else(short)?)),
            _ => return self.cell_record(id, b).ok_or_else(short)?,
        }
        Ok(())
    }

    /// A cell record, or any other record (skipped). `None` when too short.
    fn cell_record(&mut self, id: u16, b: &[u8]) -> Option<Result<(), ExtractError>> {
        // BIFF2 cells carry 3 attribute bytes, later ones a 2-byte XF index.
        let biff2 = matches!(id, 0x0002..=0x0006);
        let value_at = if biff2 { 7 } else { 6 };
        let (row, col) = match id {
            0x0002..=0x0006 | 0x0203 | 0x0204 | 0x0205 | 0x0206 | 0x0406 | 0x027E => {
                (u32::from(u16_at(b, 0)?), u32::from(u16_at(b, 2)?))
            }
            // STRING: the text result of the formula before it.
            0x0007 | 0x0207 => {
                let lenlen = if id == 0x0007 { 1 } else { 2 };
                let s = self.string(b, 0, lenlen)?;
                if let Some(pos) = self.pending.take() {
                    return Some(self.push(pos, Data::String(s)));
                }
                return Some(Ok(()));
            }
            _ => return Some(Ok(())),
        };
        let kind = self.kind_of(b, biff2);
        let number = |v: f64| match kind {
            Kind::Number => Data::Float(v),
            Kind::Date => Data::DateTime(ExcelDateTime::new(
                v,
                ExcelDateTimeType::DateTime,
                self.is_1904,
            )),
            Kind::Duration => Data::DateTime(ExcelDateTime::new(
                v,
                ExcelDateTimeType::TimeDelta,
                self.is_1904,
            )),
        };
        let value = match id {
            0x0002 => number(f64::from(u16_at(b, value_at)?)),
            0x0003 | 0x0203 => number(f64_at(b, value_at)?),
            0x027E => {
                let v = u32::from_le_bytes(b.get(6..10)?.try_into().ok()?);
                number(rk(v))
            }
            0x0004 => Data::String(self.string(b, value_at, 1)?),
            0x0204 => Data::String(self.string(b, value_at, 2)?),
            0x0005 | 0x0205 => {
                let (v, is_error) = (*b.get(value_at)?, *b.get(value_at + 1)? != 0);
                if is_error {
                    Data::Error(error(v))
                } else {
                    Data::Bool(v != 0)
                }
            }
            // FORMULA: the cached result in 8 bytes; a string result
            // comes in the STRING record that follows.
            _ => {
                let res = b.get(value_at..value_at + 8)?;
                if res[6..8] == [0xFF, 0xFF] {
                    match res[0] {
                        0 => {
                            self.pending = Some((row, col));
                            return Some(Ok(()));
                        }
                        1 => Data::Bool(res[2] != 0),
                        2 => Data::Error(error(res[2])),
                        _ => return Some(Ok(())),
                    }
                } else {
                    number(f64_at(b, value_at)?)
                }
            }
        };
        Some(self.push((row, col), value))
    }

    /// The format kind of a cell: BIFF2 names its format in the attribute
    /// bytes, later versions through their XF record.
    fn kind_of(&mut self, b: &[u8], biff2: bool) -> Kind {
        let format = if biff2 {
            self.ixfe.take();
            b.get(5).map(|a| usize::from(a & 0x3F))
        } else {
            u16_at(b, 4).and_then(|xf| self.xf_formats.get(usize::from(xf)).copied())
        };
        format
            .and_then(|f| self.formats.get(f).copied())
            .unwrap_or(Kind::Number)
    }

    fn push(&mut self, pos: (u32, u32), value: Data) -> Result<(), ExtractError> {
        self.cells += 1;
        if self.cells > self.limits.max_cells {
            return Err(ExtractError::Limit(format!(
                "the file has more than {} cells",
                self.limits.max_cells
            )));
        }
        if !self.in_worksheet {
            return Ok(());
        }
        if let Some(sheet) = self.sheets.last_mut() {
            sheet.cells.push((pos, value));
        }
        Ok(())
    }

    /// Text of `lenlen`-byte length at `at`, in the stream's code page.
    fn string(&self, b: &[u8], at: usize, lenlen: usize) -> Option<String> {
        let len = match lenlen {
            1 => usize::from(*b.get(at)?),
            _ => usize::from(u16_at(b, at)?),
        };
        let bytes = b.get(at + lenlen..(at + lenlen + len).min(b.len()))?;
        Some(
            self.encoding
                .decode_without_bom_handling(bytes)
                .0
                .into_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u16, body: &[u8]) -> Vec<u8> {
        let mut v = id.to_le_bytes().to_vec();
        v.extend_from_slice(&(body.len() as u16).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn cell_head(row: u16, col: u16, tail: &[u8]) -> Vec<u8> {
        let mut v = row.to_le_bytes().to_vec();
        v.extend_from_slice(&col.to_le_bytes());
        v.extend_from_slice(tail);
        v
    }

    #[test]
    fn number_formats_are_classified() {
        assert_eq!(kind("General"), Kind::Number);
        assert_eq!(kind("0.00"), Kind::Number);
        assert_eq!(kind("#,##0\\ \"days\""), Kind::Number);
        assert_eq!(kind("[Red]0.0"), Kind::Number);
        assert_eq!(kind("d-mmm-yy"), Kind::Date);
        assert_eq!(kind("h:mm AM/PM"), Kind::Date);
        assert_eq!(kind("[$-409]yyyy-mm-dd"), Kind::Date);
        assert_eq!(kind("[h]:mm:ss"), Kind::Duration);
        assert_eq!(kind("[mm]:ss"), Kind::Duration);
    }

    #[test]
    fn rk_numbers() {
        assert_eq!(rk((1234 << 2) | 2), 1234.0);
        assert_eq!(rk((1234 << 2) | 3), 12.34);
        assert_eq!(rk(((-5i32) << 2) as u32 | 2), -5.0);
        assert_eq!(rk((1.5f64.to_bits() >> 32) as u32), 1.5);
    }

    /// A BIFF2 worksheet: a number, an integer, text in the stream's code
    /// page, a boolean, an error, a date by its format, a formula with a
    /// string result.
    #[test]
    fn reads_a_biff2_worksheet() {
        let mut s = rec(0x0009, &[0x00, 0x02, 0x10, 0x00]);
        s.extend(rec(0x0042, &1251u16.to_le_bytes()));
        s.extend(rec(0x001E, b"\x07General"));
        s.extend(rec(0x001E, b"\x08d-mmm-yy"));
        let mut num = cell_head(0, 0, &[0, 0, 0]);
        num.extend_from_slice(&2.5f64.to_le_bytes());
        s.extend(rec(0x0003, &num));
        s.extend(rec(0x0002, &cell_head(0, 1, &[0, 0, 0, 7, 0])));
        s.extend(rec(
            0x0004,
            &cell_head(1, 0, &[0, 0, 0, 3, 0xCF, 0xF0, 0xE8]),
        ));
        s.extend(rec(0x0005, &cell_head(1, 1, &[0, 0, 0, 1, 0])));
        s.extend(rec(0x0005, &cell_head(1, 2, &[0, 0, 0, 0x2A, 1])));
        let mut date = cell_head(2, 0, &[0, 1, 0]);
        date.extend_from_slice(&45352.0f64.to_le_bytes());
        s.extend(rec(0x0003, &date));
        let mut formula = cell_head(2, 1, &[0, 0, 0]);
        formula.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0]);
        s.extend(rec(0x0006, &formula));
        s.extend(rec(0x0007, b"\x02ok"));
        s.extend(rec(0x000A, &[]));
        assert!(is_bare_biff(&s));
        let sheets = read(&s, &Limits::default()).unwrap();
        assert_eq!(sheets.len(), 1);
        assert_eq!(sheets[0].name, "Sheet 1");
        let cells = &sheets[0].cells;
        assert_eq!(cells[0], ((0, 0), Data::Float(2.5)));
        assert_eq!(cells[1], ((0, 1), Data::Float(7.0)));
        assert_eq!(cells[2], ((1, 0), Data::String("При".into())));
        assert_eq!(cells[3], ((1, 1), Data::Bool(true)));
        assert_eq!(cells[4], ((1, 2), Data::Error(CellErrorType::NA)));
        assert_eq!(
            cells[5],
            (
                (2, 0),
                Data::DateTime(ExcelDateTime::new(
                    45352.0,
                    ExcelDateTimeType::DateTime,
                    false
                ))
            )
        );
        assert_eq!(cells[6], ((2, 1), Data::String("ok".into())));
    }

    /// A BIFF4 workbook of two worksheets and a chart sheet, cells as RK
    /// and LABEL with XF formats, in the 1904 system.
    #[test]
    fn reads_a_biff4_workbook() {
        let mut s = rec(0x0409, &[0x00, 0x04, 0x00, 0x01, 0, 0]);
        s.extend(rec(0x0022, &1u16.to_le_bytes()));
        s.extend(rec(0x041E, b"\0\0\x07General"));
        s.extend(rec(0x041E, b"\0\0\x08hh:mm:ss"));
        s.extend(rec(0x0443, &[0, 0, 0, 0]));
        s.extend(rec(0x0443, &[0, 1, 0, 0]));
        s.extend(rec(0x008F, b"\x05First"));
        s.extend(rec(0x008F, b"\x05Chart"));
        s.extend(rec(0x008F, b"\x06Second"));
        s.extend(rec(0x000A, &[]));
        s.extend(rec(0x0409, &[0x00, 0x04, 0x10, 0x00, 0, 0]));
        s.extend(rec(0x027E, &cell_head(0, 0, &[0, 0, 0x4B, 0x13, 0, 0])));
        s.extend(rec(0x000A, &[]));
        // A chart sheet between them: not a worksheet, its records not cells.
        s.extend(rec(0x0409, &[0x00, 0x04, 0x20, 0x00, 0, 0]));
        s.extend(rec(0x027E, &cell_head(9, 9, &[0, 0, 0x4B, 0x13, 0, 0])));
        s.extend(rec(0x000A, &[]));
        s.extend(rec(0x0409, &[0x00, 0x04, 0x10, 0x00, 0, 0]));
        let mut t = cell_head(3, 2, &[1, 0]);
        t.extend_from_slice(&0.25f64.to_le_bytes());
        s.extend(rec(0x0203, &t));
        s.extend(rec(0x0204, &cell_head(4, 2, &[0, 0, 2, 0, b'h', b'i'])));
        s.extend(rec(0x000A, &[]));
        assert!(is_bare_biff(&s));
        let sheets = read(&s, &Limits::default()).unwrap();
        let names: Vec<&str> = sheets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["First", "Second"]);
        assert_eq!(sheets[0].cells, vec![((0, 0), Data::Float(12.34))]);
        assert_eq!(
            sheets[1].cells,
            vec![
                (
                    (3, 2),
                    Data::DateTime(ExcelDateTime::new(0.25, ExcelDateTimeType::DateTime, true))
                ),
                ((4, 2), Data::String("hi".into())),
            ]
        );
    }

    #[test]
    fn hostile_streams_fail_cleanly() {
        let limits = Limits {
            max_cells: 2,
            ..Limits::default()
        };
        let mut s = rec(0x0209, &[0x00, 0x03, 0x10, 0x00, 0, 0]);
        for c in 0..3u16 {
            s.extend(rec(0x027E, &cell_head(0, c, &[0, 0, 2, 0, 0, 0])));
        }
        assert!(matches!(read(&s, &limits), Err(ExtractError::Limit(_))));
        // A record longer than the file, a record too short for its cell.
        let mut cut = rec(0x0209, &[0x00, 0x03, 0x10, 0x00, 0, 0]);
        cut.extend_from_slice(&[0x03, 0x02, 0xFF, 0x00, 1, 2]);
        assert!(matches!(read(&cut, &limits), Err(ExtractError::Invalid(_))));
        let mut short = rec(0x0209, &[0x00, 0x03, 0x10, 0x00, 0, 0]);
        short.extend(rec(0x0203, &[0, 0, 0]));
        assert!(matches!(
            read(&short, &limits),
            Err(ExtractError::Invalid(_))
        ));
        assert!(matches!(read(&[], &limits), Err(ExtractError::Invalid(_))));
        assert!(!is_bare_biff(b"\x09\x08\x08\x00\x00\x06\x05\x00"));
    }
}
