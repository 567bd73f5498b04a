//! One cell as the result writes it: numbers, text, booleans, dates, times
//! of day, durations and errors, decided the way the reference readers
//! (openpyxl, xlrd, odfpy) decide them.
//!
//! - A date-formatted serial in `[0, 1)` is a time of day: `{"time":
//!   "06:34:00"}` (a serial 0 is `00:00:00`, not 1899-12-31).
//! - An elapsed-time format (`[h]:mm:ss`) is a duration in seconds:
//!   `{"duration": 95400.0}`.
//! - Any other date format is a date, `{"date": "2024-03-01"}`, with the
//!   time when it is not midnight (`2024-03-01T12:30:00`, milliseconds when
//!   there are any), in the 1900 system (serials below 61 are shifted past
//!   Excel's phantom 1900-02-29 as the readers do) or the 1904 system.
//! - ODS dates and times come as ISO 8601 text and are written the same way.

use calamine::{Data, ExcelDateTime, ExcelDateTimeType};
use serde_json::{json, Value};

use crate::Limits;

const MS_PER_DAY: i64 = 86_400_000;

/// The JSON value of one cell. Empty text (a formula's `""`) is an empty
/// cell, as the reference readers have it. (calamine already decodes
/// OOXML's `_xHHHH_` escapes in xlsx text.)
pub(crate) fn cell(c: &Data, limits: &Limits) -> Value {
    match c {
        Data::Empty => Value::Null,
        Data::Int(i) => json!(i),
        Data::Float(f) => number(*f),
        Data::String(s) if s.is_empty() => Value::Null,
        Data::String(s) => text(s, limits),
        Data::Bool(b) => json!(b),
        Data::DateTime(dt) => {
            // calamine keeps the date system private; equality tells it.
            let is_1904 = *dt == ExcelDateTime::new(dt.as_f64(), kind_of(dt), true);
            serial(dt.as_f64(), is_1904, dt.is_duration())
        }
        Data::DateTimeIso(s) => iso_datetime(s).unwrap_or_else(|| json!({ "date": s })),
        Data::DurationIso(s) => iso_duration(s).map_or_else(|| json!({ "duration": s }), clock),
        Data::Error(e) => json!({ "error": e.to_string() }),
    }
}

fn kind_of(dt: &ExcelDateTime) -> ExcelDateTimeType {
    if dt.is_duration() {
        ExcelDateTimeType::TimeDelta
    } else {
        ExcelDateTimeType::DateTime
    }
}

/// A date-formatted serial: a duration, a time of day or a date (above).
pub(crate) fn serial(value: f64, is_1904: bool, duration: bool) -> Value {
    if !value.is_finite() {
        return Value::Null;
    }
    let ms = (value * MS_PER_DAY as f64).round() as i64;
    if duration {
        return json!({ "duration": ms as f64 / 1000.0 });
    }
    if (0..MS_PER_DAY).contains(&ms) {
        return json!({ "time": time_of_day(ms) });
    }
    let (days, ms) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    // Days from 1970-01-01 of each system's day 0.
    let epoch = match (is_1904, days < 60) {
        (true, _) => -24_107,      // 1904-01-01
        (false, true) => -25_568,  // 1899-12-31: serial 1 is 1900-01-01
        (false, false) => -25_569, // 1899-12-30: past the phantom 1900-02-29
    };
    let (y, m, d) = crate::calendar::civil_from_days(epoch + days);
    let date = format!("{y:04}-{m:02}-{d:02}");
    if ms == 0 {
        json!({ "date": date })
    } else {
        json!({ "date": format!("{date}T{}", time_of_day(ms)) })
    }
}

/// `HH:MM:SS`, with `.mmm` when there are milliseconds.
fn time_of_day(ms: i64) -> String {
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if milli == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}.{milli:03}")
    }
}

/// An ODS `office:date-value` (`2024-03-01`, `2024-03-01T12:30:00.5`)
/// in the shape of [`serial`]'s dates.
fn iso_datetime(s: &str) -> Option<Value> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let ok = date.len() >= 10 && date.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    if !ok {
        return None;
    }
    let ms = match time {
        None => 0,
        Some(t) => {
            let t = t.trim_end_matches('Z');
            let mut parts = t.splitn(3, ':');
            let h: i64 = parts.next()?.parse().ok()?;
            let m: i64 = parts.next()?.parse().ok()?;
            let sec: f64 = parts.next()?.parse().ok()?;
            (h * 3600 + m * 60) * 1000 + (sec * 1000.0).round() as i64
        }
    };
    if ms == 0 {
        Some(json!({ "date": date }))
    } else if ms < MS_PER_DAY {
        Some(json!({ "date": format!("{date}T{}", time_of_day(ms)) }))
    } else {
        None
    }
}

/// Milliseconds of an ISO 8601 duration as ODF writes `office:time-value`
/// (`PT12H30M00S`, `P1DT2H`, `-PT1H`, `PT1.5S`).
pub(crate) fn iso_duration(s: &str) -> Option<i64> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let rest = rest.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut ms = 0f64;
    if !days.is_empty() {
        ms += days.strip_suffix('D')?.parse::<f64>().ok()? * MS_PER_DAY as f64;
    }
    let mut num = String::new();
    for ch in time.chars() {
        let unit = match ch {
            'H' => 3_600_000.0,
            'M' => 60_000.0,
            'S' => 1000.0,
            c if c.is_ascii_digit() || c == '.' => {
                num.push(c);
                continue;
            }
            _ => return None,
        };
        ms += num.parse::<f64>().ok()? * unit;
        num.clear();
    }
    if !num.is_empty() || !ms.is_finite() {
        return None;
    }
    let ms = ms.round() as i64;
    Some(if negative { -ms } else { ms })
}

/// An ODS time value: a time of day when it lies within one day, else a
/// duration in seconds.
fn clock(ms: i64) -> Value {
    if (0..MS_PER_DAY).contains(&ms) {
        json!({ "time": time_of_day(ms) })
    } else {
        json!({ "duration": ms as f64 / 1000.0 })
    }
}

/// Text, cut at [`Limits::max_cell_text`] on a character boundary.
pub(crate) fn text(s: &str, limits: &Limits) -> Value {
    if s.len() <= limits.max_cell_text {
        return Value::String(s.to_string());
    }
    let mut end = limits.max_cell_text;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Value::String(format!("{}…", &s[..end]))
}

/// A finite number, or `null`.
pub(crate) fn number(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(v: f64, is_1904: bool, ty: ExcelDateTimeType) -> Value {
        cell(
            &Data::DateTime(ExcelDateTime::new(v, ty, is_1904)),
            &Limits::default(),
        )
    }

    #[test]
    fn times_of_day_are_times_in_both_date_systems() {
        let t = ExcelDateTimeType::DateTime;
        assert_eq!(
            dt(0.2736111111111111, false, t),
            json!({"time": "06:34:00"})
        );
        assert_eq!(dt(0.2736111111111111, true, t), json!({"time": "06:34:00"}));
        assert_eq!(dt(0.0, false, t), json!({"time": "00:00:00"}));
        assert_eq!(
            dt(0.5000057870370371, false, t),
            json!({"time": "12:00:00.500"})
        );
    }

    #[test]
    fn dates_follow_the_readers_in_the_1900_and_1904_systems() {
        let t = ExcelDateTimeType::DateTime;
        assert_eq!(dt(1.0, false, t), json!({"date": "1900-01-01"}));
        assert_eq!(dt(59.0, false, t), json!({"date": "1900-02-28"}));
        // Excel's phantom 1900-02-29 reads as the 28th, as openpyxl and xlrd read it.
        assert_eq!(dt(60.0, false, t), json!({"date": "1900-02-28"}));
        assert_eq!(dt(61.0, false, t), json!({"date": "1900-03-01"}));
        assert_eq!(
            dt(45352.5, false, t),
            json!({"date": "2024-03-01T12:00:00"})
        );
        assert_eq!(dt(0.0 + 1.0, true, t), json!({"date": "1904-01-02"}));
        assert_eq!(dt(43890.0, true, t), json!({"date": "2024-03-01"}));
        assert_eq!(dt(2958465.0, false, t), json!({"date": "9999-12-31"}));
    }

    #[test]
    fn elapsed_formats_are_durations_in_seconds() {
        let d = ExcelDateTimeType::TimeDelta;
        assert_eq!(dt(1.5, false, d), json!({"duration": 129600.0}));
        assert_eq!(dt(0.25, true, d), json!({"duration": 21600.0}));
    }

    #[test]
    fn ods_dates_and_times_are_written_alike() {
        let l = Limits::default();
        let c = |d: Data| cell(&d, &l);
        assert_eq!(
            c(Data::DateTimeIso("2024-03-01".into())),
            json!({"date": "2024-03-01"})
        );
        assert_eq!(
            c(Data::DateTimeIso("2024-03-01T00:00:00".into())),
            json!({"date": "2024-03-01"})
        );
        assert_eq!(
            c(Data::DateTimeIso("2024-03-01T12:30:00.250".into())),
            json!({"date": "2024-03-01T12:30:00.250"})
        );
        assert_eq!(
            c(Data::DurationIso("PT06H34M00S".into())),
            json!({"time": "06:34:00"})
        );
        assert_eq!(
            c(Data::DurationIso("PT288H00M00S".into())),
            json!({"duration": 1036800.0})
        );
        assert_eq!(
            c(Data::DurationIso("P1DT2H".into())),
            json!({"duration": 93600.0})
        );
        assert_eq!(
            c(Data::DurationIso("-PT1H".into())),
            json!({"duration": -3600.0})
        );
        assert_eq!(
            c(Data::DurationIso("nonsense".into())),
            json!({"duration": "nonsense"})
        );
    }
}
