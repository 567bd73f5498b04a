//! The job types the server publishes and its pools consume.

/// Spreadsheets: xlsx, xlsm, xlsb, xls, ods, CSV.
pub const EXCEL: &str = "excel_processing";
/// PDF documents.
pub const PDF: &str = "pdf_processing";
/// Analysis of an extracted result.
pub const AI: &str = "ai_analysis";
/// One signed webhook POST (with its retries).
pub const WEBHOOK: &str = "webhook_delivery";
/// One completion mail.
pub const EMAIL: &str = "email_delivery";
