//! Analysis jobs (`ai_analysis`): their payload, naming the extraction
//! whose result is analysed, and the handler that runs the built-in
//! analysis ([`crate::analysis`]) off the async threads, asks the LLM
//! endpoint for a summary when one is set, and writes the result files.

use docproc_extract::{html, markdown};
use docproc_queue::{JobId, Lease};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{settle, Jobs};
use crate::analysis;
use crate::durable;
use crate::results::Artifact;

/// What an analysis job carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisPayload {
    /// The extraction whose result is analysed.
    pub source_job: JobId,
}

impl AnalysisPayload {
    /// As the queue stores it.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Runs an `ai_analysis` job over the result of the extraction it names.
pub(super) async fn run(ctx: &Jobs, lease: Lease, payload: AnalysisPayload) {
    let job = lease.job().clone();
    let source = payload.source_job;
    let raw = match ctx.results.read(&source, Artifact::Json).await {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("result of job {source} is not available: {e}");
            settle(None, lease.fail_permanently(&msg).await).await;
            return;
        }
    };
    let Some(out_dir) = ctx.results.dir(&job.job_id) else {
        settle(None, lease.fail_permanently("bad job id").await).await;
        return;
    };
    let src = source.clone();
    let analysed = tokio::task::spawn_blocking(move || -> Result<(Value, String), String> {
        let input: Value = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
        Ok(analysis::analyze_with_text(&src, &input))
    })
    .await;
    let (mut result, text) = match analysed {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            settle(None, lease.fail(&format!("analysis failed: {e}")).await).await;
            return;
        }
        Err(e) => {
            settle(None, lease.fail(&format!("analysis panicked: {e}")).await).await;
            return;
        }
    };
    if let Some(llm) = &ctx.summarizer {
        let language = result["language"].as_str().unwrap_or("unknown").to_string();
        analysis::apply_llm_summary(
            &mut result,
            llm.model(),
            llm.summarize(&language, &text).await,
        );
    }
    let src = source.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        durable::create_private_dir_all(&out_dir).map_err(|e| e.to_string())?;
        let page = html::render(&format!("Analysis of job {src}"), &result);
        let md = markdown::render(&result);
        let bytes = serde_json::to_vec(&result).map_err(|e| e.to_string())?;
        durable::write_files(
            &out_dir,
            &[("result.html", page.as_bytes()), ("result.md", md.as_bytes()), ("result.json", &bytes)],
        )
        .map_err(|e| e.to_string())?;
        Ok(json!({
            "language": result["language"],
            "summary_source": result["summary_source"],
            "keywords": result["keywords"].as_array().map(|k| k.iter().take(5).map(|w| w["word"].clone()).collect::<Vec<_>>()),
            "source_job": src,
        }))
    })
    .await;
    match work {
        Ok(Ok(summary)) => {
            if let Err(e) = lease.complete(super::completed(&job.job_id, summary)).await {
                tracing::warn!(error = %e, "could not complete the analysis");
            }
        }
        Ok(Err(e)) => settle(None, lease.fail(&format!("analysis failed: {e}")).await).await,
        Err(e) => settle(None, lease.fail(&format!("analysis panicked: {e}")).await).await,
    }
}
