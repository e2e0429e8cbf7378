//! What `iotstream replay` reads: telemetry in the forms users have it in, each reading
//! validated exactly as ingest validates it.
//!
//! - **JSON**: NDJSON readings (the ingest format, one per line); a JSON array of readings (an
//!   ingest body); pages of `GET /api/devices/{id}/readings` (`{"deviceId": ..., "readings":
//!   [...]}`, one per line as `curl ... >> file` appends them, or pretty-printed). A page holds
//!   stored readings, which keep the ids the live pipeline gave them, so alert ids come out the
//!   same as live.
//! - **CSV** with a header row: *long*, a `value` column plus optional `deviceId` and `metric`
//!   (defaults `replay` and `value`); or *wide*, one column per metric (a blank cell: that metric
//!   is absent from the row; a row without any value is skipped and counted). The time column is
//!   `timestamp`, `ts`, `time`, `_time` or `datetime`; the device column `deviceId`, `device_id`
//!   or `device`. Times: RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` (UTC), epoch milliseconds, or
//!   epoch seconds (numbers below 10^11, which as milliseconds would be before March 1973;
//!   decimals allowed).
//!
//! `-` reads standard input (`curl ... | iotstream replay -`). Errors name the file and line
//! (and the column or item) of the first bad reading.

use super::csv_columns::Columns;
use anyhow::{Context, anyhow, bail};
use iotstream_core::reading::{BodyError, BodyFormat, Limits, parse_body};
use iotstream_core::{Reading, Ts};
use serde_json::Value;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The readings of a file, in file order.
pub struct Input {
    /// The file's name in errors (`stdin` for `-`).
    name: String,
    source: Source,
    ready: VecDeque<Reading>,
    /// CSV rows without any value.
    pub skipped_rows: u64,
}

type Text = Box<dyn BufRead>;

enum Source {
    /// NDJSON; `skipped`: blank lines before the first (for line numbers).
    Lines {
        lines: std::iter::Enumerate<std::io::Lines<Text>>,
        skipped: usize,
    },
    /// A whole text, its values read one at a time from `at`, which is on line `line`.
    Document { text: String, at: usize, line: usize },
    Csv {
        rows: csv::StringRecordsIntoIter<Text>,
        columns: Columns,
        skipped: u64,
    },
}

/// Opens a recording: a file, or standard input for `-` (`curl ... | iotstream replay -`).
pub fn open(path: &Path) -> anyhow::Result<Input> {
    let stdin = path == Path::new("-");
    let name = if stdin {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    };
    let cannot = || format!("cannot read {name}");
    let mut reader: Text = if stdin {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(std::fs::File::open(path).with_context(cannot)?))
    };
    // The first line that is not blank says which format this is.
    let (mut head, mut skipped) = (String::new(), 0);
    loop {
        head.clear();
        if reader.read_line(&mut head).with_context(cannot)? == 0 {
            bail!("{name} is empty: nothing to replay");
        }
        if !head.trim_start_matches('\u{feff}').trim().is_empty() {
            break;
        }
        skipped += 1;
    }
    let first = head.trim_start_matches('\u{feff}').trim();
    let json = first.starts_with('{') || first.starts_with('[');
    let source = match serde_json::from_str::<serde::de::IgnoredAny>(first) {
        // A document spread over lines: read it whole.
        Err(e) if json && e.is_eof() => {
            let mut text = "\n".repeat(skipped) + &head;
            reader.read_to_string(&mut text).with_context(cannot)?;
            Source::Document { text, at: 0, line: 1 }
        }
        // One document per line (a bad one is reported with its line).
        _ if json => Source::Lines {
            lines: again(head, reader).lines().enumerate(),
            skipped,
        },
        _ => {
            let mut rows = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_reader(again(head, reader));
            let header = format!("{name}:{}", skipped + 1);
            let columns = Columns::of(rows.headers().with_context(cannot)?).context(header)?;
            Source::Csv {
                rows: rows.into_records(),
                columns,
                skipped: skipped as u64,
            }
        }
    };
    Ok(Input {
        name,
        source,
        ready: VecDeque::new(),
        skipped_rows: 0,
    })
}

/// The text from the first line read on.
fn again(head: String, rest: Text) -> Text {
    Box::new(std::io::Cursor::new(head.into_bytes()).chain(rest))
}

impl Iterator for Input {
    type Item = anyhow::Result<Reading>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(Ok(r));
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Input {
    /// Reads the next line, document or row into `ready`; false at the end.
    fn fill(&mut self) -> anyhow::Result<bool> {
        let path = &self.name;
        match &mut self.source {
            Source::Lines { lines, skipped } => {
                let Some((n, line)) = lines.next() else {
                    return Ok(false);
                };
                let line = line.with_context(|| format!("cannot read {path}"))?;
                let line = if n == 0 {
                    line.trim_start_matches('\u{feff}')
                } else {
                    &line
                };
                if !line.trim().is_empty() {
                    let at = *skipped + n + 1;
                    json_line(line, &mut self.ready).with_context(|| format!("{path}:{at}"))?;
                }
            }
            Source::Document { text, at, line } => {
                let rest = &text[*at..];
                let start =
                    *at + (rest.len() - rest.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']).len());
                if start == text.len() {
                    return Ok(false);
                }
                *line += text[*at..start].matches('\n').count();
                let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
                let value = match values.next() {
                    Some(Ok(v)) => v,
                    Some(Err(e)) => bail!("{path}:{}: not JSON: {e}", *line + e.line() - 1),
                    None => return Ok(false),
                };
                let first_line = *line;
                *line += text[start..start + values.byte_offset()].matches('\n').count();
                *at = start + values.byte_offset();
                json_value(value, &mut self.ready).with_context(|| format!("{path}:{first_line}"))?;
            }
            Source::Csv {
                rows,
                columns,
                skipped,
            } => {
                let Some(row) = rows.next() else {
                    return Ok(false);
                };
                let row = row.map_err(|e| anyhow!("{path}: {e}"))?;
                let line = *skipped + row.position().map_or(0, |p| p.line());
                match columns.reading(&row).with_context(|| format!("{path}:{line}"))? {
                    Some(r) => self.ready.push_back(r),
                    None => self.skipped_rows += 1,
                }
            }
        }
        Ok(true)
    }
}

/// One NDJSON line: usually a reading, parsed straight from its bytes; else any JSON values
/// (pages, arrays, or documents `curl >> file` appended without a newline between them).
fn json_line(line: &str, out: &mut VecDeque<Reading>) -> anyhow::Result<()> {
    if !line.trim_start().starts_with('[')
        && let Ok(r) = parse_one(line.as_bytes())
    {
        out.push_back(r);
        return Ok(());
    }
    for value in serde_json::Deserializer::from_str(line).into_iter::<Value>() {
        json_value(value.map_err(|e| anyhow!("not JSON: {e}"))?, out)?;
    }
    Ok(())
}

fn json_value(value: Value, out: &mut VecDeque<Reading>) -> anyhow::Result<()> {
    match value {
        Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                json_value(item, out).with_context(|| format!("item {i}"))?;
            }
        }
        Value::Object(mut page) if page.get("readings").is_some_and(Value::is_array) => {
            let Some(Value::Array(items)) = page.remove("readings") else {
                unreachable!("checked above")
            };
            for (i, item) in items.iter().enumerate() {
                out.push_back(stored(item).with_context(|| format!("readings[{i}]"))?);
            }
        }
        v => out.push_back(parse_one(v.to_string().as_bytes())?),
    }
    Ok(())
}

/// A reading as the telemetry store returned it: validated as ingest would, keeping the id
/// ingest gave it (and the client's message id) instead of deriving a new one from it.
fn stored(item: &Value) -> anyhow::Result<Reading> {
    let mut r = parse_one(item.to_string().as_bytes())?;
    if let Some(id) = item["id"].as_str().filter(|id| is_reading_key(id)) {
        r.id = id.to_owned();
        r.message_id = item["messageId"].as_str().map(str::to_owned);
    }
    Ok(r)
}

/// 32 lowercase hex digits: an id ingest derived (`reading_key`).
fn is_reading_key(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One reading through ingest's own validation (no future-time limit: recordings are old).
pub fn parse_one(json: &[u8]) -> anyhow::Result<Reading> {
    let limits = Limits {
        max_readings: 1,
        max_future_ms: i64::MAX / 2,
        ..Limits::default()
    };
    match parse_body(json, BodyFormat::Json, Ts(0), &limits) {
        Ok(mut r) if r.len() == 1 => Ok(r.remove(0)),
        Ok(_) => bail!("expected one reading"),
        Err(BodyError::Invalid(errors)) => {
            let why: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            bail!("invalid reading: {}", why.join("; "))
        }
        Err(BodyError::Malformed(why)) => bail!("not JSON: {why}"),
        Err(BodyError::Empty | BodyError::TooMany { .. }) => bail!("expected one reading"),
    }
}
