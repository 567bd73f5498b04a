//! The fidelity test: our cells against the reference readers' (openpyxl,
//! xlrd, odfpy, pyxlsb, Python's csv; `scripts/sheet-oracle.py` run by
//! `DOCPROC_SHEET_ORACLE`, the Python of the virtualenv `make test` makes)
//! on the real files of `tests/corpus/sheet.txt`, fetched by
//! `scripts/fetch-corpus.sh sheet` into `DOCPROC_SHEET_CORPUS`. Every
//! cell must be equal and the sheets named and ordered alike.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{detect, fidelity, ExtractError, Format, Limits};

/// The share of cells that must be equal in every file (issue 15: all).
const MIN_FILE_ACCURACY: f64 = 1.0;

/// The reference reader's view of a file (see the script's header).
fn oracle(python: &Path, format: Format, path: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/sheet-oracle.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format.as_str())
        .arg(path)
        .output()
        .expect("the oracle's Python runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the oracle printed no JSON for {}: {e}\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Fraction of a day of `HH:MM:SS[.mmm]`.
fn day_fraction(t: &str) -> Option<f64> {
    let mut p = t.splitn(3, ':');
    let h: f64 = p.next()?.parse().ok()?;
    let m: f64 = p.next()?.parse().ok()?;
    let s: f64 = p.next()?.parse().ok()?;
    Some((h * 3600.0 + m * 60.0 + s) / 86_400.0)
}

/// The serials (1900 and 1904 systems) of one of our dates, times or
/// durations: pyxlsb does not read number formats and gives serials.
fn serials(ours: &Value) -> Vec<f64> {
    let Some(o) = ours.as_object() else {
        return Vec::new();
    };
    if let Some(t) = o.get("time").and_then(Value::as_str) {
        return day_fraction(t).into_iter().collect();
    }
    if let Some(s) = o.get("duration").and_then(Value::as_f64) {
        return vec![s / 86_400.0];
    }
    let Some(d) = o.get("date").and_then(Value::as_str) else {
        return Vec::new();
    };
    let (date, time) = d.split_once('T').unwrap_or((d, "00:00:00"));
    let mut ymd = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(dd))) = (ymd.next(), ymd.next(), ymd.next())
    else {
        return Vec::new();
    };
    let days = crate::calendar::days_from_civil(y, m, dd);
    let frac = day_fraction(time).unwrap_or(0.0);
    let s1900 = (days + 25_569) as f64 - if days + 25_569 <= 60 { 1.0 } else { 0.0 };
    vec![s1900 + frac, (days + 24_107) as f64 + frac]
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    a == b || (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1.0)
}

/// Whether our value is the reference's, by the rules of the header.
fn same(ours: &Value, theirs: &Value, format: Format) -> bool {
    match (ours, theirs) {
        (Value::Number(a), Value::Number(b)) => close(
            a.as_f64().unwrap_or(f64::NAN),
            b.as_f64().unwrap_or(0.0),
            1e-9,
        ),
        // Python's csv gives text; ours is typed from the same text.
        (Value::Number(a), Value::String(b)) if format == Format::Csv => b
            .trim()
            .parse::<f64>()
            .is_ok_and(|b| close(a.as_f64().unwrap_or(f64::NAN), b, 1e-9)),
        (Value::Bool(a), Value::String(b)) if format == Format::Csv => b
            .trim()
            .eq_ignore_ascii_case(if *a { "true" } else { "false" }),
        // openpyxl's text with `_xHHHH_` in it, as read and as Excel shows it.
        (Value::String(_), Value::Object(b)) if b.contains_key("xstring") => b["xstring"]
            .as_array()
            .is_some_and(|readings| readings.contains(ours)),
        (Value::Object(_), Value::Number(b)) if format == Format::Xlsb => {
            let b = b.as_f64().unwrap_or(f64::NAN);
            serials(ours).iter().any(|&s| close(s, b, 1e-9))
        }
        (Value::Object(a), Value::Object(b)) => match (a.get("duration"), b.get("duration")) {
            (Some(x), Some(y)) => close(
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(0.0),
                1e-6,
            ),
            _ => a == b,
        },
        _ => ours == theirs,
    }
}

/// Our cells by absolute `(row, column)`, empty ones left out.
fn our_cells(sheet: &Value) -> BTreeMap<(u64, u64), Value> {
    let (r0, c0) = (
        sheet["origin"]["row"].as_u64().unwrap_or(0),
        sheet["origin"]["column"].as_u64().unwrap_or(0),
    );
    let mut out = BTreeMap::new();
    for (r, row) in sheet["cells"].as_array().into_iter().flatten().enumerate() {
        for (c, v) in row.as_array().into_iter().flatten().enumerate() {
            if !v.is_null() {
                out.insert((r0 + r as u64, c0 + c as u64), v.clone());
            }
        }
    }
    out
}

fn their_cells(sheet: &Value) -> BTreeMap<(u64, u64), Value> {
    sheet["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some(((t[0].as_u64()?, t[1].as_u64()?), t[2].clone())))
        .collect()
}

fn merges(list: &Value, ours: bool) -> BTreeSet<[u64; 4]> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(if ours {
                [
                    m["first_row"].as_u64()?,
                    m["first_column"].as_u64()?,
                    m["last_row"].as_u64()?,
                    m["last_column"].as_u64()?,
                ]
            } else {
                [
                    m[0].as_u64()?,
                    m[1].as_u64()?,
                    m[2].as_u64()?,
                    m[3].as_u64()?,
                ]
            })
        })
        .collect()
}

/// Compares one file; `(equal cells, cells, what differs)`.
fn compare(ours: &Value, theirs: &Value, format: Format) -> (usize, usize, Vec<String>) {
    let (ours_s, theirs_s) = (
        ours["sheets"].as_array().cloned().unwrap_or_default(),
        theirs["sheets"].as_array().cloned().unwrap_or_default(),
    );
    let mut diffs = Vec::new();
    let names = |s: &[Value]| -> Vec<String> {
        s.iter()
            .map(|x| x["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    if names(&ours_s) != names(&theirs_s) {
        diffs.push(format!(
            "sheets {:?} != reference {:?}",
            names(&ours_s),
            names(&theirs_s)
        ));
    }
    let (mut equal, mut total) = (0, 0);
    for (o, t) in ours_s.iter().zip(&theirs_s) {
        let (a, b) = (our_cells(o), their_cells(t));
        let keys: BTreeSet<_> = a.keys().chain(b.keys()).copied().collect();
        for k in keys {
            total += 1;
            match (a.get(&k), b.get(&k)) {
                (Some(x), Some(y)) if same(x, y, format) => equal += 1,
                (x, y) => diffs.push(format!(
                    "{}!R{}C{}: ours {} reference {}",
                    t["name"].as_str().unwrap_or(""),
                    k.0 + 1,
                    k.1 + 1,
                    x.map_or("(empty)".into(), Value::to_string),
                    y.map_or("(empty)".into(), Value::to_string),
                )),
            }
        }
        if !t["merged"].is_null() && merges(&o["merged"], true) != merges(&t["merged"], false) {
            diffs.push(format!(
                "{}: merged {:?} != reference {:?}",
                t["name"].as_str().unwrap_or(""),
                merges(&o["merged"], true),
                merges(&t["merged"], false)
            ));
        }
    }
    (equal, total, diffs)
}

#[test]
fn serials_of_our_dates() {
    use serde_json::json;
    assert_eq!(serials(&json!({"date": "1900-01-01"}))[0], 1.0);
    assert_eq!(serials(&json!({"date": "1900-03-01"}))[0], 61.0);
    assert_eq!(serials(&json!({"date": "2024-03-01T12:00:00"}))[0], 45352.5);
    assert_eq!(serials(&json!({"date": "1904-01-02"}))[1], 1.0);
    assert_eq!(serials(&json!({"time": "06:00:00"})), vec![0.25]);
    assert!(same(&json!(1.0000000000001), &json!(1.0), Format::Xlsx));
    assert!(!same(&json!("1"), &json!(1.0), Format::Xlsx));
    assert!(same(&json!(42), &json!(" 42"), Format::Csv));
    assert!(!same(&json!(42), &json!("42"), Format::Xlsx));
}

#[test]
fn corpus_matches_the_reference_readers() {
    let (Some(dir), Some(python)) = (
        fidelity::env_path("DOCPROC_SHEET_CORPUS"),
        fidelity::env_path("DOCPROC_SHEET_ORACLE"),
    ) else {
        eprintln!("skipped: DOCPROC_SHEET_CORPUS / DOCPROC_SHEET_ORACLE not set (not CI)");
        return;
    };
    let files = fidelity::files(&dir, |_| true, 30);
    let only = std::env::var("DOCPROC_SHEET_ONLY").ok();
    let limits = Limits::default();
    let (mut failures, mut refused_by_reference) = (Vec::new(), 0);
    let (mut all_equal, mut all_cells) = (0, 0);
    println!(
        "{:<46} {:<15} {:>7} {:>9}",
        "file", "reader", "cells", "equal"
    );
    for path in &files {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let detected = detect(path).ok().flatten();
        // A file we do not take is given to the reader its name suggests.
        let by_name = match path.extension().and_then(|e| e.to_str()) {
            Some("xls") => Format::Xls,
            Some("xlsb") => Format::Xlsb,
            Some("ods") => Format::Ods,
            Some("csv") => Format::Csv,
            _ => Format::Xlsx,
        };
        let format = detected.unwrap_or(by_name);
        let theirs = oracle(&python, format, path);
        let reader = theirs["reader"].as_str().unwrap_or("").to_string();
        let ours = match detected {
            Some(f) => super::extract(path, f, &limits, &mut |_, _, _| {}),
            None => Err(ExtractError::Invalid("not a spreadsheet we detect".into())),
        };
        let ours = match (ours, theirs.get("error")) {
            (Err(e), Some(t)) => {
                println!("{name:<46} {reader:<15}       -         -  both refuse ({e}; {t})");
                continue;
            }
            (Ok(o), Some(t)) => {
                refused_by_reference += 1;
                let cells: usize = o["sheets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| our_cells(s).len())
                    .sum();
                println!(
                    "{name:<46} {reader:<15} {cells:>7}         -  the reference refuses it: {t}"
                );
                continue;
            }
            (Err(e), None) => {
                failures.push(format!("{name}: the reference reads it, we refuse: {e}"));
                continue;
            }
            (Ok(o), None) => o,
        };
        let (equal, total, diffs) = compare(&ours, &theirs, format);
        let accuracy = if total == 0 {
            1.0
        } else {
            equal as f64 / total as f64
        };
        println!(
            "{name:<46} {reader:<15} {total:>7} {:>8.3}%  {}",
            accuracy * 100.0,
            diffs.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        );
        all_equal += equal;
        all_cells += total;
        if accuracy < MIN_FILE_ACCURACY || !diffs.is_empty() {
            failures.push(format!(
                "{name}: {equal} of {total} cells equal; {}",
                diffs.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
    }
    println!(
        "{all_equal} of {all_cells} cells equal ({:.4}%); {refused_by_reference} files the reference cannot read",
        all_equal as f64 * 100.0 / all_cells.max(1) as f64
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
