//! File type detection from content (magic bytes and container entries),
//! never from the client's file name.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A document format the server can extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Office Open XML workbook.
    Xlsx,
    /// Office Open XML workbook with macros.
    Xlsm,
    /// Excel binary workbook.
    Xlsb,
    /// Excel 97–2003 workbook (OLE compound file).
    Xls,
    /// OpenDocument spreadsheet.
    Ods,
    /// Comma-, semicolon- or tab-separated text.
    Csv,
    /// Portable Document Format.
    Pdf,
}

impl Format {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Xlsx => "xlsx",
            Format::Xlsm => "xlsm",
            Format::Xlsb => "xlsb",
            Format::Xls => "xls",
            Format::Ods => "ods",
            Format::Csv => "csv",
            Format::Pdf => "pdf",
        }
    }

    /// Whether the spreadsheet extractor reads it.
    pub fn is_spreadsheet(self) -> bool {
        !matches!(self, Format::Pdf)
    }
}

/// Bytes of the file looked at for text detection.
const HEAD: usize = 8192;

/// Decides the format of the file at `path`; `None` when unsupported.
pub fn detect(path: &Path) -> std::io::Result<Option<Format>> {
    let mut head = Vec::with_capacity(HEAD);
    std::fs::File::open(path)?
        .take(HEAD as u64)
        .read_to_end(&mut head)?;
    Ok(match sniff(&head) {
        Some(Sniffed::Zip) => {
            check_directory(path)?;
            zip_format(path)
        }
        Some(Sniffed::Format(f)) => Some(f),
        None => None,
    })
}

enum Sniffed {
    Format(Format),
    Zip,
}

fn sniff(head: &[u8]) -> Option<Sniffed> {
    const OLE: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    if head.starts_with(b"PK\x03\x04") {
        return Some(Sniffed::Zip);
    }
    if head.starts_with(OLE) || super::sheet::biff::is_bare_biff(head) {
        return Some(Sniffed::Format(Format::Xls));
    }
    // PDF readers accept the header anywhere in the first KiB.
    let first_kib = &head[..head.len().min(1024)];
    if first_kib.windows(5).any(|w| w == b"%PDF-") {
        return Some(Sniffed::Format(Format::Pdf));
    }
    looks_like_csv(head).then_some(Sniffed::Format(Format::Csv))
}

/// Text whose first lines contain a separator (`,` `;` tab `|`): UTF-8,
/// UTF-16 or UTF-8 with a byte order mark, or single-byte text read as
/// Windows-1252 — without control characters in any case.
fn looks_like_csv(head: &[u8]) -> bool {
    if head.is_empty() {
        return false;
    }
    let bom = encoding_rs::Encoding::for_bom(head).is_some();
    if !bom && head.contains(&0) {
        return false;
    }
    let text = match std::str::from_utf8(head) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        // A multi-byte character cut at the end of the sample is fine.
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => return false,
        },
        Err(_) => super::sheet::csv::decode(head),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return false;
    }
    text.lines()
        .take(5)
        .any(|l| l.contains(',') || l.contains(';') || l.contains('\t') || l.contains('|'))
}

/// The largest central directory detection reads, in bytes.
const MAX_DIRECTORY_BYTES: u64 = 16 << 20;

/// Refuses (`InvalidData`) a zip whose end record declares more entries
/// than extraction reads or a central directory over
/// [`MAX_DIRECTORY_BYTES`], before any of it is read: opening the
/// archive reads its whole directory, in the server's own process.
fn check_directory(path: &Path) -> std::io::Result<()> {
    let max = super::Limits::default().max_zip_entries as u64;
    match zip_directory(path)? {
        Some((entries, _)) if entries > max => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file has {entries} zip entries; at most {max} are read"),
        )),
        Some((_, bytes)) if bytes > MAX_DIRECTORY_BYTES => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the file's zip directory is {bytes} bytes; at most {MAX_DIRECTORY_BYTES} are read"
            ),
        )),
        _ => Ok(()),
    }
}

/// The entry count and central directory size a zip's end record
/// declares (zip64 when the classic record says so); `None` when there
/// is no end record (a damaged file, left to the zip reader to refuse).
fn zip_directory(path: &Path) -> std::io::Result<Option<(u64, u64)>> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    // The end record (22 bytes) ends the file, after a comment of at most 64 KiB.
    let tail_len = len.min(22 + 0xFFFF);
    f.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail)?;
    let Some(at) = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == *b"PK\x05\x06")
    else {
        return Ok(None);
    };
    let le16 = |b: &[u8]| u64::from(u16::from_le_bytes([b[0], b[1]]));
    let le32 = |b: &[u8]| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let le64 = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        u64::from_le_bytes(a)
    };
    let end = &tail[at..];
    let (entries, size) = (le16(&end[10..]), le32(&end[12..]));
    if entries != 0xFFFF && size != 0xFFFF_FFFF {
        return Ok(Some((entries, size)));
    }
    // Zip64: a locator 20 bytes before the end record points at the zip64 end record.
    let Some(loc) = at.checked_sub(20).map(|l| &tail[l..at]) else {
        return Ok(Some((entries, size)));
    };
    if loc[..4] != *b"PK\x06\x07" {
        return Ok(Some((entries, size)));
    }
    let offset = le64(&loc[8..]);
    if offset.saturating_add(56) > len {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut rec = [0u8; 56];
    f.read_exact(&mut rec)?;
    if rec[..4] != *b"PK\x06\x06" {
        return Ok(None);
    }
    Ok(Some((le64(&rec[32..]), le64(&rec[40..]))))
}

/// Office documents are zip files told apart by their entries.
fn zip_format(path: &Path) -> Option<Format> {
    let file = std::fs::File::open(path).ok()?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).ok()?;
    let has = |zip: &zip::ZipArchive<_>, name: &str| zip.index_for_name(name).is_some();
    if has(&zip, "xl/workbook.bin") {
        return Some(Format::Xlsb);
    }
    if has(&zip, "xl/workbook.xml") {
        return Some(if has(&zip, "xl/vbaProject.bin") {
            Format::Xlsm
        } else {
            Format::Xlsx
        });
    }
    let mut mimetype = String::new();
    zip.by_name("mimetype")
        .ok()?
        .take(100)
        .read_to_string(&mut mimetype)
        .ok()?;
    (mimetype.trim() == "application/vnd.oasis.opendocument.spreadsheet").then_some(Format::Ods)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniffed(b: &[u8]) -> Option<Format> {
        match sniff(b) {
            Some(Sniffed::Format(f)) => Some(f),
            Some(Sniffed::Zip) => Some(Format::Xlsx),
            None => None,
        }
    }

    #[test]
    fn sniffs_by_content() {
        assert_eq!(sniffed(b"%PDF-1.7\n..."), Some(Format::Pdf));
        assert_eq!(sniffed(b"\n\n%PDF-1.4"), Some(Format::Pdf));
        assert_eq!(
            sniffed(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0]),
            Some(Format::Xls)
        );
        assert_eq!(sniffed(b"a,b,c\n1,2,3\n"), Some(Format::Csv));
        assert_eq!(
            sniffed("\u{feff}name;city\nÅsa;Malmö\n".as_bytes()),
            Some(Format::Csv)
        );
        assert_eq!(sniffed(b"x\ty\n1\t2"), Some(Format::Csv));
        assert_eq!(sniffed(b"just words without separators"), None);
        assert_eq!(sniffed(b"\x7fELF\x02\x01\x01\0\0\0"), None);
        assert_eq!(
            sniffed(b"GIF89a\x01\x02,,,"),
            None,
            "control bytes are not text"
        );
        assert_eq!(sniffed(b""), None);
        assert_eq!(sniffed(&[0xff, 0xfe, 0x01, 0x00, b',', 0x00]), None);
        // UTF-16 with its byte order mark, and Windows-1252 text.
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a,b\n1,2\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(sniffed(&utf16), Some(Format::Csv));
        assert_eq!(
            sniffed(b"name;city\nK\xf6ln;M\xfcnchen\n"),
            Some(Format::Csv)
        );
        assert_eq!(sniffed(b"a|b\n1|2\n"), Some(Format::Csv));
        // A cut multi-byte character at the end of the sample is still text.
        assert_eq!(sniffed(&"a,é".as_bytes()[..4]), Some(Format::Csv));
    }

    #[test]
    fn a_zip_declaring_too_many_entries_is_refused_before_it_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        // A local header, then an end record claiming 60,000 entries.
        let mut bytes = b"PK\x03\x04".to_vec();
        bytes.extend_from_slice(&[0u8; 26]);
        bytes.extend_from_slice(b"PK\x05\x06\0\0\0\0");
        bytes.extend_from_slice(&60_000u16.to_le_bytes());
        bytes.extend_from_slice(&60_000u16.to_le_bytes());
        bytes.extend_from_slice(&(60_000u32 * 46).to_le_bytes());
        bytes.extend_from_slice(&30u32.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        let path = dir.path().join("many.zip");
        std::fs::write(&path, &bytes).unwrap();
        let err = super::detect(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("60000 zip entries"), "{err}");
        assert_eq!(
            super::zip_directory(&path).unwrap(),
            Some((60_000, 60_000 * 46))
        );
    }
}
