//! Submitting a document: the rules of the upload form's fields, the
//! spooled file that is removed unless its job was published, and the
//! submit itself (checks, type detection from content, publish).

use std::path::PathBuf;

use docproc_extract::{detect, Format};
use docproc_queue::{NewJob, Priority};

use super::{App, AppError, Submitted};
use crate::jobs::types as job_types;
use crate::jobs::ExtractPayload;

/// Longest accepted text field (priority, callback_url, email, analyze, correlation_id).
pub const MAX_FIELD: usize = 4096;
/// Longest correlation id.
const MAX_CORRELATION_ID: usize = 128;

/// The text fields of an upload, as their rules accept them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// `priority`: low, normal (default), high or urgent.
    pub priority: Priority,
    /// `callback_url`: the webhook's receiver.
    pub callback_url: Option<String>,
    /// `email`: who gets the completion mail.
    pub email: Option<String>,
    /// `correlation_id`: the client's id for the job.
    pub correlation_id: Option<String>,
    /// `analyze`: an analysis job follows the extraction.
    pub analyze: bool,
}

impl Fields {
    /// Takes the form field `name` with its raw value (at most
    /// [`MAX_FIELD`] bytes, trimmed); an empty optional field is left out.
    pub fn set(&mut self, name: &str, raw: &[u8]) -> Result<(), AppError> {
        let bad = |m: String| AppError::InvalidArgument(m);
        if raw.len() > MAX_FIELD {
            return Err(bad(format!("field {name:?} is too long")));
        }
        let value = std::str::from_utf8(raw)
            .map_err(|_| bad(format!("field {name:?} is not UTF-8")))?
            .trim();
        let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
        match name {
            "priority" => {
                self.priority = value
                    .parse()
                    .map_err(|e: docproc_queue::QueueError| bad(e.to_string()))?
            }
            "callback_url" => self.callback_url = some(value),
            "email" => self.email = some(value),
            "correlation_id" => {
                if value.len() > MAX_CORRELATION_ID || value.chars().any(char::is_control) {
                    return Err(bad(format!(
                        "correlation_id is 1 to {MAX_CORRELATION_ID} printable characters"
                    )));
                }
                self.correlation_id = some(value)
            }
            "analyze" => {
                self.analyze = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" | "" => false,
                    _ => return Err(bad("analyze must be true or false".into())),
                }
            }
            _ => return Err(bad(format!("unknown field {name:?}"))),
        }
        Ok(())
    }
}

/// Only letters, digits and `.-_ ` of the client's file name are kept,
/// for display.
pub fn display_name(name: Option<&str>) -> String {
    let cleaned: String = name
        .unwrap_or("upload")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("upload")
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
        .take(120)
        .collect();
    if cleaned.trim().is_empty() {
        "upload".into()
    } else {
        cleaned
    }
}

/// An uploaded file on disk (written and synced, name included, under
/// the uploads directory): removed when dropped unless its job was
/// published.
#[derive(Debug)]
pub struct Spooled {
    path: PathBuf,
    keep: bool,
}

impl Spooled {
    /// Takes charge of the file at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }

    /// Where the file is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A document to process: the spooled file, the client's name for it, and
/// the form's fields.
#[derive(Debug)]
pub struct Submission {
    /// The file.
    pub file: Spooled,
    /// The client's file name (see [`display_name`]).
    pub title: String,
    /// The fields.
    pub fields: Fields,
}

impl App {
    /// Checks a submission (the webhook's receiver, the mail address, the
    /// type from the content), publishes its extraction job for `owner`
    /// (the submitting key's name) and answers at once. The file stays
    /// once the job is published; on any refusal it is removed.
    pub async fn submit(
        &self,
        owner: Option<String>,
        sub: Submission,
    ) -> Result<Submitted, AppError> {
        let Submission {
            file: mut spooled,
            title,
            fields,
        } = sub;
        if let Some(url) = &fields.callback_url {
            self.notifier
                .webhooks
                .guard()
                .check(url)
                .await
                .map_err(|e| AppError::InvalidCallbackUrl(e.to_string()))?;
        }
        if let Some(to) = &fields.email {
            if self.notifier.mailer.is_none() {
                return Err(AppError::EmailNotConfigured);
            }
            crate::notify::email::validate_address(to).map_err(AppError::InvalidArgument)?;
        }
        let path = spooled.path.clone();
        let format = tokio::task::spawn_blocking(move || detect(&path))
            .await
            .map_err(AppError::internal)?
            .map_err(|e| match e.kind() {
                // A container over the limits detection reads.
                std::io::ErrorKind::InvalidData => AppError::TooManyEntries(e.to_string()),
                _ => AppError::internal(e),
            })?
            .ok_or(AppError::UnsupportedType)?;
        let job_type = match format {
            Format::Pdf => job_types::PDF,
            _ => job_types::EXCEL,
        };
        let payload = ExtractPayload {
            // Only the name: workers resolve it under their own uploads
            // directory (and take nothing else).
            file: spooled
                .path
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_default(),
            format,
            title,
            analyze: fields.analyze,
            callback_url: fields.callback_url,
            email: fields.email,
        };
        let correlation_id = fields
            .correlation_id
            .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        let job = NewJob::new(job_type, payload.to_value())
            .priority(fields.priority)
            .max_retries(self.max_retries)
            .timeout(self.job_timeout)
            .correlation_id(correlation_id.clone());
        let job = match &owner {
            Some(o) => job.owner(o.clone()),
            None => job,
        };
        // From here the job may exist even if the caller goes away while
        // the publish is in flight: the file stays unless the publish fails.
        spooled.keep = true;
        let id = match self.queue.publish_one(job).await {
            Ok(id) => id,
            Err(e) => {
                let _ = tokio::fs::remove_file(&spooled.path).await;
                return Err(e.into());
            }
        };
        self.hub
            .remember(&id, Some(&correlation_id), owner.as_deref());
        Ok(Submitted {
            polling_url: format!("/api/job/{id}/status"),
            ws_url: format!("/api/ws?job_id={id}"),
            job_id: id,
            status: "queued",
            job_type,
            format,
            message: format!("{} file queued for processing", format.as_str()),
            correlation_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_are_only_for_display() {
        assert_eq!(display_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(
            display_name(Some("C:\\x\\report <1>.xlsx")),
            "report 1.xlsx"
        );
        assert_eq!(display_name(Some("<>")), "upload");
        assert_eq!(display_name(None), "upload");
    }

    #[test]
    fn fields_take_what_their_rules_accept() {
        let mut f = Fields::default();
        f.set("priority", b" high ").unwrap();
        f.set("analyze", b"Yes").unwrap();
        f.set("callback_url", b"").unwrap();
        f.set("correlation_id", b"order-7").unwrap();
        assert_eq!(
            f,
            Fields {
                priority: Priority::High,
                analyze: true,
                correlation_id: Some("order-7".into()),
                ..Fields::default()
            }
        );
        let refused = |name: &str, raw: &[u8]| {
            let mut f = Fields::default();
            match f.set(name, raw) {
                Err(AppError::InvalidArgument(m)) => m,
                other => panic!("{name}={raw:?}: {other:?}"),
            }
        };
        assert!(refused("priority", b"asap").contains("priority"));
        assert!(refused("analyze", b"maybe").contains("analyze"));
        assert!(refused("correlation_id", b"a\nb").contains("printable"));
        assert!(refused("correlation_id", &[b'x'; 129]).contains("128"));
        assert!(refused("email", &[0xff, 0xfe]).contains("UTF-8"));
        assert!(refused("owner", b"me").contains("unknown field"));
        assert!(refused("email", &[b'a'; MAX_FIELD + 1]).contains("too long"));
    }
}
