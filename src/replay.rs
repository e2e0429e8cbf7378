//! `iotstream replay FILE [--rules FILE]`: the analyze engine over recorded telemetry, offline.
//!
//! Input: NDJSON readings (the ingest format), or CSV with a header row and columns
//! `timestamp,value` plus optional `deviceId,metric` (defaults `replay` and `value`); CSV
//! timestamps may be RFC 3339, epoch milliseconds or `YYYY-MM-DD HH:MM:SS` (UTC). Readings are
//! validated exactly as ingest validates them, and a bad line stops the replay with its number.
//! Output (NDJSON on stdout): every alert transition in the order the live pipeline produces it,
//! then the final value of every window aggregate (sorted by device, metric, window). The engine
//! is the live one and is deterministic, so alerts are identical to what `up` produces for the
//! same readings in the same per-device order.

use anyhow::{Context, bail};
use iotstream_core::engine::{Engine, Output};
use iotstream_core::reading::{BodyFormat, Limits, parse_body};
use iotstream_core::rules::Rules;
use iotstream_core::{Reading, Ts};
use std::io::{BufRead, Write};

/// Silence is judged on event time in a replay: the clock is the newest ts read so far, and
/// the engine ticks whenever it moves on by this much.
const TICK_MS: i64 = 1_000;

pub fn run(path: &std::path::Path, rules: Rules, scores: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = std::io::BufReader::new(file).lines().enumerate().peekable();
    let csv_header = match lines.peek() {
        Some((_, Ok(first))) if !first.trim_start().starts_with('{') => Some(csv_columns(first)?),
        _ => None,
    };
    if csv_header.is_some() {
        lines.next();
    }
    let mut engine = Engine::new(rules);
    if scores {
        engine = engine.with_scores();
    }
    let mut clock = i64::MIN;
    let mut ticked = i64::MIN;
    for (n, line) in lines {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let reading = match &csv_header {
            Some(cols) => csv_reading(cols, &line),
            None => parse_one(line.as_bytes()),
        }
        .with_context(|| format!("{}:{}", path.display(), n + 1))?;
        clock = clock.max(reading.ts.millis());
        if ticked == i64::MIN {
            ticked = clock;
        }
        if clock - ticked >= TICK_MS {
            ticked = clock;
            write_output(&tick_events(engine.tick(Ts(clock))), out)?;
        }
        write_output(&engine.process(std::slice::from_ref(&reading), Ts(clock)), out)?;
    }
    write_output(&engine.finish(), out)?;
    Ok(())
}

/// A tick's alerts and late readings; its partial windows and latest states are for live
/// dashboards, and the replay ends with the final ones instead.
fn tick_events(mut out: Output) -> Output {
    out.insights.retain(|i| {
        matches!(
            i,
            iotstream_core::Insight::Late(_) | iotstream_core::Insight::Forecast(_)
        )
    });
    out
}

/// One output in the order the engine produced it: alerts, then insights, then scores.
fn write_output(o: &Output, out: &mut dyn Write) -> anyhow::Result<()> {
    for e in &o.alerts {
        writeln!(out, "{}", serde_json::to_string(e)?)?;
    }
    for i in &o.insights {
        writeln!(out, "{}", serde_json::to_string(i)?)?;
    }
    for s in &o.scores {
        writeln!(out, "{}", serde_json::to_string(s)?)?;
    }
    Ok(())
}

/// One reading through ingest's own validation (no future-time limit: recordings are old).
fn parse_one(json: &[u8]) -> anyhow::Result<Reading> {
    let limits = Limits {
        max_readings: 1,
        max_future_ms: i64::MAX / 2,
        ..Limits::default()
    };
    match parse_body(json, BodyFormat::Json, Ts(0), &limits) {
        Ok(mut r) if r.len() == 1 => Ok(r.remove(0)),
        Ok(_) => bail!("expected one reading per line"),
        Err(e) => bail!("invalid reading: {e:?}"),
    }
}

struct Columns {
    timestamp: usize,
    value: usize,
    device: Option<usize>,
    metric: Option<usize>,
}

fn csv_columns(header: &str) -> anyhow::Result<Columns> {
    let names: Vec<String> = header
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_owned())
        .collect();
    let find = |n: &str| names.iter().position(|c| c.eq_ignore_ascii_case(n));
    Ok(Columns {
        timestamp: find("timestamp").context("the CSV header needs a timestamp column")?,
        value: find("value").context("the CSV header needs a value column")?,
        device: find("deviceId"),
        metric: find("metric"),
    })
}

fn csv_reading(cols: &Columns, line: &str) -> anyhow::Result<Reading> {
    let cells: Vec<&str> = line.split(',').map(|c| c.trim().trim_matches('"')).collect();
    let cell = |i: usize| cells.get(i).copied().context("missing column");
    let ts = parse_csv_time(cell(cols.timestamp)?)?;
    let value: f64 = cell(cols.value)?.parse().context("value must be a number")?;
    let device = cols.device.map(cell).transpose()?.unwrap_or("replay");
    let metric = cols.metric.map(cell).transpose()?.unwrap_or("value");
    let json = serde_json::json!({"deviceId": device, "ts": ts.millis(), "metrics": {metric: value}});
    parse_one(json.to_string().as_bytes())
}

/// RFC 3339, epoch milliseconds, or `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC.
fn parse_csv_time(s: &str) -> anyhow::Result<Ts> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Ts(ms));
    }
    if let Some(t) = Ts::parse_rfc3339(s) {
        return Ok(t);
    }
    let iso = format!("{}Z", s.replacen(' ', "T", 1));
    Ts::parse_rfc3339(&iso)
        .with_context(|| format!("timestamp {s:?} is not RFC 3339, epoch ms or YYYY-MM-DD HH:MM:SS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(text: &str, rules: &str) -> Vec<serde_json::Value> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        run(&path, Rules::from_toml(rules).unwrap(), true, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    const RULE: &str = "[[rules]]\nname='hot'\nmetric='value'\nabove=80.0\nclear=70.0\n";

    #[test]
    fn csv_in_three_time_formats_gives_alerts_then_final_aggregates() {
        let csv = "timestamp,value\n2026-01-01T00:00:00Z,50\n1767225610000,85\n2026-01-01 00:00:20,60\n";
        let out = replay(csv, RULE);
        let events: Vec<&str> = out.iter().filter_map(|v| v["event"].as_str()).collect();
        assert_eq!(events, vec!["alert.opened", "alert.resolved"]);
        let agg = out
            .iter()
            .find(|v| v["kind"] == "aggregate" && v["windowMs"] == 60_000)
            .unwrap();
        assert_eq!(
            (
                agg["count"].as_u64(),
                agg["max"].as_f64(),
                agg["partial"].as_bool()
            ),
            (Some(3), Some(85.0), Some(true))
        );
        assert_eq!(agg["deviceId"], "replay");
        let scores: Vec<&serde_json::Value> = out.iter().filter(|v| v.get("score").is_some()).collect();
        assert_eq!(scores.len(), 3, "one score per reading and metric");
        assert_eq!(
            (
                scores[1]["deviceId"].as_str(),
                scores[1]["metric"].as_str(),
                scores[1]["value"].as_f64()
            ),
            (Some("replay"), Some("value"), Some(85.0))
        );
        assert!(
            scores
                .iter()
                .all(|s| (0.0..=1.0).contains(&s["score"].as_f64().unwrap()))
        );
    }

    #[test]
    fn replay_output_is_byte_identical_across_runs_and_flags_a_spike() {
        let mut csv = String::from("timestamp,value\n");
        for i in 0..200i64 {
            let v = if i == 150 {
                140.0
            } else {
                50.0 + ((i * 7919) % 13) as f64 / 13.0
            };
            csv.push_str(&format!("{},{v}\n", 1_767_225_600_000 + i * 10_000));
        }
        let a = replay(&csv, "");
        assert_eq!(a, replay(&csv, ""));
        let score = a
            .iter()
            .find(|v| v.get("score").is_some() && v["value"] == 140.0)
            .unwrap();
        assert!(score["score"].as_f64().unwrap() > 0.99, "{score}");
        assert!(
            a.iter()
                .any(|v| v["event"] == "alert.opened" && v["alert"]["kind"] == "spike")
        );
    }

    #[test]
    fn ndjson_with_devices_and_a_bad_line_names_the_line() {
        let nd = "{\"deviceId\":\"a\",\"ts\":1,\"metrics\":{\"value\":90}}\n";
        assert_eq!(
            replay(nd, RULE)
                .iter()
                .filter(|v| v["event"] == "alert.opened")
                .count(),
            1
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.ndjson");
        std::fs::write(
            &path,
            format!("{nd}{{\"deviceId\":\"a b\",\"metrics\":{{\"value\":1}}}}\n"),
        )
        .unwrap();
        let err = run(&path, Rules::from_toml(RULE).unwrap(), false, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("bad.ndjson:2"), "{err:#}");
        assert!(parse_csv_time("yesterday").is_err());
    }
}
