//! The fidelity test: our text against poppler's `pdftotext` on the real
//! PDFs of `tests/corpus/pdf.txt` (fetched by `scripts/fetch-corpus.sh pdf`
//! into `DOCPROC_PDF_CORPUS`), as token F1 per file and per page.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use unicode_normalization::UnicodeNormalization;

use crate::{fidelity, Limits};

/// The goal (issue 14): a mean token F1 of 98 % and 95 % for every file.
const TARGET_MEAN_F1: f64 = 0.98;
const TARGET_FILE_F1: f64 = 0.95;
/// What the engine reaches today (97.9 % mean; the weakest files are form
/// widgets whose appearances poppler regenerates, Arabic where poppler
/// orders separators its own way, and a few table layouts). The test fails
/// below these floors, and they only ever rise towards the target.
const MIN_MEAN_F1: f64 = 0.98;
const MIN_FILE_F1: f64 = 0.70;

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x2E80..=0x2FDF | 0x3000..=0x303F | 0x3040..=0x30FF | 0x3130..=0x318F
        | 0x31F0..=0x31FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xA960..=0xA97F | 0xAC00..=0xD7FF
        | 0xF900..=0xFAFF | 0xFF00..=0xFFEF | 0x20000..=0x3FFFF)
}

/// Whitespace tokens of NFKC-normalised text, each CJK character a token;
/// bidirectional formatting marks (which pdftotext writes around
/// right-to-left runs) are not text and are dropped.
pub(crate) fn tokens(text: &str) -> HashMap<String, usize> {
    let norm: String = text
        .nfkc()
        .filter(|c| !matches!(*c as u32, 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069))
        .collect();
    let mut out: HashMap<String, usize> = HashMap::new();
    for word in norm.split_whitespace() {
        let mut run = String::new();
        for c in word.chars() {
            if is_cjk(c) {
                if !run.is_empty() {
                    *out.entry(std::mem::take(&mut run)).or_default() += 1;
                }
                *out.entry(c.to_string()).or_default() += 1;
            } else {
                run.push(c);
            }
        }
        if !run.is_empty() {
            *out.entry(run).or_default() += 1;
        }
    }
    out
}

/// Token F1 of `ours` against `reference` (1 when both are empty).
pub(crate) fn f1(ours: &str, reference: &str) -> f64 {
    let (a, b) = (tokens(ours), tokens(reference));
    let (na, nb): (usize, usize) = (a.values().sum(), b.values().sum());
    if na == 0 && nb == 0 {
        return 1.0;
    }
    let common: usize = a
        .iter()
        .map(|(t, &n)| n.min(b.get(t).copied().unwrap_or(0)))
        .sum();
    if common == 0 {
        return 0.0;
    }
    let (p, r) = (common as f64 / na as f64, common as f64 / nb as f64);
    2.0 * p * r / (p + r)
}

fn pdftotext(path: &Path) -> Option<Vec<String>> {
    let out = Command::new("pdftotext")
        .args(["-enc", "UTF-8"])
        .arg(path)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) must be installed: make test installs it");
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .split('\u{c}')
            .map(str::to_string)
            .collect()
    })
}

fn pdfinfo_pages(path: &Path) -> Option<usize> {
    let out = Command::new("pdfinfo").arg(path).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Pages:").map(|n| n.trim().parse().ok()))?
}

#[test]
fn token_f1_counts_cjk_characters_and_multisets() {
    assert_eq!(f1("a b c", "a b c"), 1.0);
    assert_eq!(f1("", ""), 1.0);
    assert_eq!(f1("ab", "a b"), 0.0);
    assert!((f1("中文 x", "中 文 x") - 1.0).abs() < 1e-12);
    assert!((f1("a a b", "a b") - 0.8).abs() < 1e-12);
    assert_eq!(f1("ﬁle", "file"), 1.0, "NFKC folds ligatures");
}

#[test]
fn corpus_matches_pdftotext() {
    let Some(dir) = fidelity::env_path("DOCPROC_PDF_CORPUS") else {
        eprintln!("skipped: DOCPROC_PDF_CORPUS not set (not CI)");
        return;
    };
    let files = fidelity::files(&dir, |p| p.extension().is_some_and(|e| e == "pdf"), 40);
    let only = std::env::var("DOCPROC_PDF_ONLY").ok();
    let limits = Limits::default();
    let mut scores = Vec::new();
    let mut failures = Vec::new();
    println!("{:<34} {:>5} {:>8}  worst pages", "file", "pages", "F1");
    for path in &files {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let reference = pdftotext(path);
        let ours = super::extract(path, &limits, &mut |_, _, _| {});
        let (reference, ours) = match (reference, ours) {
            (None, Err(e)) => {
                println!("{name:<34}     -        -  both refuse ({e})");
                continue;
            }
            (None, Ok(_)) => {
                failures.push(format!("{name}: pdftotext refuses it, we read it"));
                continue;
            }
            (Some(_), Err(e)) => {
                failures.push(format!("{name}: pdftotext reads it, we refuse: {e}"));
                scores.push(0.0);
                continue;
            }
            (Some(r), Ok(o)) => (r, o),
        };
        let pages = ours["pages"].as_array().cloned().unwrap_or_default();
        if let Some(n) = pdfinfo_pages(path) {
            if n != pages.len() {
                failures.push(format!("{name}: {} pages, pdfinfo says {n}", pages.len()));
            }
        }
        let ours_all: Vec<&str> = pages
            .iter()
            .map(|p| p["text"].as_str().unwrap_or(""))
            .collect();
        let score = f1(&ours_all.join("\n"), &reference.join("\n"));
        let mut worst: Vec<(f64, usize)> = ours_all
            .iter()
            .enumerate()
            .map(|(i, t)| (f1(t, reference.get(i).map_or("", String::as_str)), i + 1))
            .filter(|(f, _)| *f < 0.98)
            .collect();
        worst.sort_by(|a, b| a.0.total_cmp(&b.0));
        let worst: Vec<String> = worst
            .iter()
            .take(4)
            .map(|(f, p)| format!("p{p} {:.1}%", f * 100.0))
            .collect();
        println!(
            "{name:<34} {:>5} {:>7.2}%  {}",
            pages.len(),
            score * 100.0,
            worst.join(", ")
        );
        if score < MIN_FILE_F1 {
            failures.push(format!(
                "{name}: token F1 {:.2}% < {:.0}%",
                score * 100.0,
                MIN_FILE_F1 * 100.0
            ));
        }
        scores.push(score);
    }
    let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    println!(
        "mean token F1 over {} files: {:.2}% (target {:.0}% mean, {:.0}% each; {} files below that)",
        scores.len(),
        mean * 100.0,
        TARGET_MEAN_F1 * 100.0,
        TARGET_FILE_F1 * 100.0,
        scores.iter().filter(|&&s| s < TARGET_FILE_F1).count()
    );
    if only.is_none() && mean < MIN_MEAN_F1 {
        failures.push(format!(
            "mean token F1 {:.2}% < {:.0}%",
            mean * 100.0,
            MIN_MEAN_F1 * 100.0
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
