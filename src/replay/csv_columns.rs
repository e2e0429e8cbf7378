//! A CSV recording's columns (long or wide; see `input`) and how a row becomes a reading.

use super::input::parse_one;
use anyhow::{Context, bail};
use iotstream_core::{Reading, Ts};
use serde_json::{Map, Value, json};

/// Names of the time column, and of the device column, compared without case.
const TIME: [&str; 5] = ["timestamp", "ts", "time", "_time", "datetime"];
const DEVICE: [&str; 3] = ["deviceId", "device_id", "device"];
/// Epoch numbers below this are seconds; at or above, milliseconds (10^11 ms is March 1973,
/// 10^11 s the year 5138: no recording is in doubt).
const SECONDS_BELOW: f64 = 1e11;

pub struct Columns {
    time: usize,
    device: Option<usize>,
    shape: Shape,
}

enum Shape {
    /// A `value` column, and the metric's name in a `metric` column or `value`.
    Long { value: usize, metric: Option<usize> },
    /// Every other column is a metric.
    Wide(Vec<(usize, String)>),
}

impl Columns {
    pub fn of(header: &csv::StringRecord) -> anyhow::Result<Columns> {
        let find = |names: &[&str]| {
            header
                .iter()
                .position(|c| names.iter().any(|n| c.eq_ignore_ascii_case(n)))
        };
        let time = find(&TIME).with_context(|| {
            format!(
                "the CSV header needs a time column (one of {}); it has {}",
                TIME.join(", "),
                header.iter().collect::<Vec<_>>().join(", ")
            )
        })?;
        let device = find(&DEVICE);
        let shape = match (find(&["value"]), find(&["metric"])) {
            (Some(value), metric) => Shape::Long { value, metric },
            (None, Some(_)) => bail!("the CSV header has a metric column but no value column"),
            (None, None) => {
                let metrics: Vec<(usize, String)> = header
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != time && Some(i) != device)
                    .map(|(i, name)| (i, name.to_owned()))
                    .collect();
                if metrics.is_empty() {
                    bail!("the CSV header needs a value column, or one column per metric");
                }
                Shape::Wide(metrics)
            }
        };
        Ok(Columns { time, device, shape })
    }

    /// The row's reading, or `None` for a wide row without any value.
    pub fn reading(&self, row: &csv::StringRecord) -> anyhow::Result<Option<Reading>> {
        let cell = |i: usize| row.get(i).unwrap_or("");
        let ts = parse_time(cell(self.time))?;
        let device = self.device.map(cell).unwrap_or("replay");
        let mut metrics = Map::new();
        match &self.shape {
            Shape::Long { value, metric } => {
                let name = metric.map(cell).unwrap_or("value");
                metrics.insert(name.to_owned(), number("value", cell(*value))?);
            }
            Shape::Wide(columns) => {
                for (i, name) in columns {
                    if !cell(*i).is_empty() {
                        metrics.insert(name.clone(), number(name, cell(*i))?);
                    }
                }
                if metrics.is_empty() {
                    return Ok(None);
                }
            }
        }
        let json = json!({"deviceId": device, "ts": ts.millis(), "metrics": metrics});
        parse_one(json.to_string().as_bytes()).map(Some)
    }
}

fn number(column: &str, cell: &str) -> anyhow::Result<Value> {
    match cell.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(json!(x)),
        _ => bail!("column {column}: {cell:?} is not a finite number"),
    }
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` or `YYYY-MM-DDTHH:MM:SS[.fff]` (UTC when no offset),
/// epoch milliseconds, or epoch seconds (see [`SECONDS_BELOW`]; decimals allowed).
pub fn parse_time(s: &str) -> anyhow::Result<Ts> {
    let epoch = |x: f64| Ts((if x.abs() < SECONDS_BELOW { x * 1000.0 } else { x }).round() as i64);
    if let Ok(n) = s.parse::<i64>() {
        return Ok(epoch(n as f64));
    }
    if let Ok(x) = s.parse::<f64>()
        && x.is_finite()
    {
        return Ok(epoch(x));
    }
    let t = s.replacen(' ', "T", 1);
    Ts::parse_rfc3339(s)
        .or_else(|| Ts::parse_rfc3339(&t))
        .or_else(|| Ts::parse_rfc3339(&format!("{t}Z")))
        .with_context(|| {
            format!("time {s:?} is not RFC 3339, YYYY-MM-DD HH:MM:SS, epoch milliseconds or epoch seconds")
        })
}
