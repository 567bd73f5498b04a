//! # docproc-extract
//!
//! Content extraction from documents, file in and document out: format
//! detection by content, the spreadsheet and PDF readers with their input
//! limits, and the HTML page and Markdown of a result. Nothing here does
//! I/O beyond reading the one file; the server runs these readers in a
//! sandboxed child process so that a file that crashes or exhausts a parser
//! fails its own job, never the server.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod calendar;
pub mod detect;
#[cfg(test)]
mod fidelity;
pub mod html;
pub mod markdown;
pub mod pdf;
pub mod sheet;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use detect::{detect, Format};

/// Bounds on what one file may make a parser do. See [`Limits::default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Most entries in an xlsx/xlsm/xlsb/ods zip.
    pub max_zip_entries: usize,
    /// Most bytes all entries of a zip may inflate to.
    pub max_zip_uncompressed: u64,
    /// Largest inflate ratio of any zip entry (zip bombs are 1000:1 and up).
    pub max_zip_ratio: u64,
    /// Most cells over all sheets.
    pub max_cells: usize,
    /// Longest text kept per cell, in bytes; longer text is cut with `…`.
    pub max_cell_text: usize,
    /// Most pages of a PDF.
    pub max_pages: usize,
    /// Most bytes one PDF stream may decompress to.
    pub max_stream_bytes: usize,
    /// Longest text kept per PDF page, in bytes.
    pub max_page_text: usize,
    /// Address space of the extractor process, in bytes.
    pub memory_bytes: u64,
    /// Largest file the extractor process may write (each result file).
    pub max_output_bytes: u64,
}

impl Default for Limits {
    /// 10,000 zip entries inflating to at most 1 GiB at a ratio of at most
    /// 200; 5 M cells, 32 KiB per cell; 5,000 PDF pages, 64 MiB per
    /// stream, 1 MiB of text per page; 2 GiB of address space, result
    /// files up to 1 GiB.
    fn default() -> Self {
        Self {
            max_zip_entries: 10_000,
            max_zip_uncompressed: 1 << 30,
            max_zip_ratio: 200,
            max_cells: 5_000_000,
            max_cell_text: 32 * 1024,
            max_pages: 5_000,
            max_stream_bytes: 64 << 20,
            max_page_text: 1 << 20,
            memory_bytes: 2 << 30,
            max_output_bytes: 1 << 30,
        }
    }
}

/// Why a file could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The file is damaged, encrypted or not what it claims to be.
    #[error("{0}")]
    Invalid(String),
    /// The file exceeds an input limit.
    #[error("{0}")]
    Limit(String),
    /// Reading the file failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Told `(done, total, unit)` as sheets or pages are read.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &'static str);

/// Extracts a file of a known format into its JSON result.
pub fn extract(
    path: &Path,
    format: Format,
    limits: &Limits,
    progress: Progress<'_>,
) -> Result<Value, ExtractError> {
    match format {
        Format::Pdf => pdf::extract(path, limits, progress),
        f => sheet::extract(path, f, limits, progress),
    }
}

/// A short summary of a result (counts), stored with the job.
pub fn summary(result: &Value) -> Value {
    match result["schema"].as_str() {
        Some(pdf::SCHEMA) => pdf::summary(result),
        _ => sheet::summary(result),
    }
}

/// Checks a zip's directory before anything is inflated: entry count,
/// total inflated size and per-entry compression ratio.
pub fn check_zip(path: &Path, limits: &Limits) -> Result<(), ExtractError> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| ExtractError::Invalid(format!("not a readable zip container: {e}")))?;
    if zip.len() > limits.max_zip_entries {
        return Err(ExtractError::Limit(format!(
            "the file has {} zip entries; at most {} are allowed",
            zip.len(),
            limits.max_zip_entries
        )));
    }
    let mut total = 0u64;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| ExtractError::Invalid(format!("damaged zip entry {i}: {e}")))?;
        let (size, packed) = (entry.size(), entry.compressed_size().max(1));
        total = total.saturating_add(size);
        if size / packed > limits.max_zip_ratio && size > 1 << 20 {
            return Err(ExtractError::Limit(format!(
                "zip entry {:?} inflates {} bytes to {size} (ratio over {}): refused as a zip bomb",
                entry.name(),
                packed,
                limits.max_zip_ratio
            )));
        }
    }
    if total > limits.max_zip_uncompressed {
        return Err(ExtractError::Limit(format!(
            "the file inflates to {total} bytes; at most {} are allowed",
            limits.max_zip_uncompressed
        )));
    }
    Ok(())
}
