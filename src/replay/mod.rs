//! `iotstream replay FILE [--rules FILE]`: the analyze engine over recorded telemetry, offline.
//!
//! Input (`input`): NDJSON readings, a JSON array of readings, pages of the readings endpoint,
//! or CSV (long: `timestamp,value` plus optional `deviceId,metric`; or wide: a column per
//! metric). Readings are validated exactly as ingest validates them, and a bad one stops the
//! replay with its file and line.
//! Output (NDJSON on stdout): every alert transition in the order the live pipeline produces it,
//! then the final value of every window aggregate (sorted by device, metric, window). The engine
//! is the live one and is deterministic, so alerts are identical to what `up` produces for the
//! same readings in the same per-device order.

mod csv_columns;
mod input;

use iotstream_core::Ts;
use iotstream_core::engine::{Engine, Output};
use iotstream_core::rules::Rules;
use std::io::Write;

/// Silence is judged on event time in a replay: the clock is the newest ts read so far, and
/// the engine ticks whenever it moves on by this much.
const TICK_MS: i64 = 1_000;

pub fn run(path: &std::path::Path, rules: Rules, scores: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut input = input::open(path)?;
    let mut engine = Engine::new(rules);
    if scores {
        engine = engine.with_scores();
    }
    let mut clock = i64::MIN;
    let mut ticked = i64::MIN;
    for reading in input.by_ref() {
        let reading = reading?;
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
    if input.skipped_rows > 0 {
        let n = input.skipped_rows;
        eprintln!(
            "note: skipped {n} CSV row{} without any value",
            if n == 1 { "" } else { "s" }
        );
    }
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
        let err = replay_err(
            "bad.ndjson",
            &format!("{nd}{{\"deviceId\":\"a b\",\"metrics\":{{\"value\":1}}}}\n"),
        );
        assert!(err.contains("bad.ndjson:2"), "{err}");
        assert!(csv_columns::parse_time("yesterday").is_err());
    }

    fn replay_err(name: &str, text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = run(&path, Rules::from_toml(RULE).unwrap(), false, &mut Vec::new()).unwrap_err();
        format!("{err:#}")
    }

    fn alerts_and_counts(out: &[serde_json::Value]) -> (Vec<String>, Vec<(String, u64)>) {
        let alerts = out
            .iter()
            .filter_map(|v| {
                v["event"]
                    .as_str()
                    .map(|e| format!("{e} {}", v["alert"]["deviceId"]))
            })
            .collect();
        let counts = out
            .iter()
            .filter(|v| v["kind"] == "aggregate" && v["windowMs"] == 60_000)
            .map(|v| {
                (
                    format!("{}/{}", v["deviceId"], v["metric"]),
                    v["count"].as_u64().unwrap(),
                )
            })
            .collect();
        (alerts, counts)
    }

    #[test]
    fn wide_csv_with_aliases_quotes_a_bom_and_epoch_seconds_reads_every_metric() {
        // A BOM, `ts` and `device` columns, a quoted cell, blank cells (metric absent), a row
        // with no value at all (skipped), epoch seconds (plain and decimal) and CRLF endings.
        let csv = "\u{feff}ts,device,value2,\"hum\"\r\n\
                   1767225600,p-1,85,40\r\n\
                   1767225610.5,p-1,\"60\",\r\n\
                   1767225620,p-1,,\r\n\
                   1767225630,p-1,,41\r\n";
        let rule = "[[rules]]\nname='hot'\nmetric='value2'\nabove=80.0\nclear=70.0\n";
        let out = replay(csv, rule);
        let (alerts, counts) = alerts_and_counts(&out);
        assert_eq!(alerts, vec!["alert.opened \"p-1\"", "alert.resolved \"p-1\""]);
        assert_eq!(
            counts,
            vec![("\"p-1\"/\"hum\"".into(), 2), ("\"p-1\"/\"value2\"".into(), 2)]
        );
        let agg = out.iter().find(|v| v["kind"] == "aggregate").unwrap();
        assert_eq!(
            agg["windowStart"], "2026-01-01T00:00:00.000Z",
            "epoch seconds, not ms"
        );
    }

    #[test]
    fn csv_errors_name_the_line_and_the_column() {
        let bad_cell = replay_err(
            "w.csv",
            "time,temp\n2026-01-01 00:00:00,1\n2026-01-01 00:00:10,warm\n",
        );
        assert!(
            bad_cell.contains("w.csv:3") && bad_cell.contains("column temp"),
            "{bad_cell}"
        );
        let nan = replay_err("n.csv", "timestamp,value\n1767225600000,NaN\n");
        assert!(
            nan.contains("n.csv:2") && nan.contains("not a finite number"),
            "{nan}"
        );
        let no_time = replay_err("t.csv", "when,value\n1,2\n");
        assert!(
            no_time.contains("needs a time column") && no_time.contains("when, value"),
            "{no_time}"
        );
        let no_value = replay_err("m.csv", "timestamp,metric\n1,x\n");
        assert!(no_value.contains("no value column"), "{no_value}");
        let bad_time = replay_err("b.csv", "timestamp,value\nyesterday,1\n");
        assert!(
            bad_time.contains("b.csv:2") && bad_time.contains("\"yesterday\""),
            "{bad_time}"
        );
    }

    #[test]
    fn json_arrays_and_exported_pages_replay_like_ndjson() {
        let readings: Vec<serde_json::Value> = [(0, 50), (10, 90), (20, 60)]
            .iter()
            .map(|&(s, v)| serde_json::json!({"deviceId": "a", "ts": 1_767_225_600_000i64 + s * 1000, "metrics": {"value": v}}))
            .collect();
        let ndjson: String = readings.iter().map(|r| format!("{r}\n")).collect();
        let want = alerts_and_counts(&replay(&ndjson, RULE));
        assert_eq!(want.0.len(), 2, "{want:?}");
        let array = serde_json::to_string_pretty(&readings).unwrap();
        assert_eq!(alerts_and_counts(&replay(&array, RULE)), want);
        // Pages as the readings endpoint returns them, one per line and pretty-printed.
        let page = serde_json::json!({"deviceId": "a", "readings": readings});
        assert_eq!(alerts_and_counts(&replay(&format!("{page}\n"), RULE)), want);
        // `curl ... >> file` twice: two pages on one line (curl adds no newline).
        let (first, second) = (
            serde_json::json!({"deviceId": "a", "readings": readings[..1]}),
            serde_json::json!({"deviceId": "a", "readings": readings[1..]}),
        );
        assert_eq!(
            alerts_and_counts(&replay(&format!("{first}{second}"), RULE)),
            want
        );
        let pretty = serde_json::to_string_pretty(&page).unwrap();
        assert_eq!(alerts_and_counts(&replay(&pretty, RULE)), want);
    }

    #[test]
    fn an_exported_reading_keeps_its_stored_id_so_alert_ids_match_the_live_ones() {
        let stored = "0123456789abcdef0123456789abcdef";
        let reading = |id: &str| serde_json::json!({"deviceId": "a", "id": id, "messageId": "m-7", "ts": 1_767_225_600_000i64, "metrics": {"value": 90}});
        let page = serde_json::json!({"deviceId": "a", "readings": [reading(stored)]});
        let opened = |out: Vec<serde_json::Value>| {
            out.into_iter()
                .find(|v| v["event"] == "alert.opened")
                .map(|v| v["alert"]["id"].as_str().unwrap().to_owned())
                .unwrap()
        };
        let from_page = opened(replay(&page.to_string(), RULE));
        let want = iotstream_core::engine::alert_id("a", "hot", "", stored);
        assert_eq!(from_page, want);
        // The same object as an ingest reading: its `id` is a client's message id, hashed.
        assert_ne!(opened(replay(&reading(stored).to_string(), RULE)), want);
    }

    #[test]
    fn json_errors_name_the_line_and_say_what_is_wrong() {
        let ok = "{\"deviceId\":\"a\",\"ts\":1,\"metrics\":{\"value\":1}}";
        let field = replay_err(
            "f.ndjson",
            &format!("{ok}\n\n{{\"deviceId\":\"a\",\"ts\":\"nope\",\"metrics\":{{\"v\":1}}}}\n"),
        );
        assert!(
            field.contains("f.ndjson:3: invalid reading: ts: must be"),
            "{field}"
        );
        let pretty = replay_err(
            "p.json",
            "[\n  {\"deviceId\": \"a\",\n   \"metrics\": {\"value\": 1}},\n  {\"ts\": 1}\n]\n",
        );
        assert!(
            pretty.contains("p.json:1: item 1: invalid reading: deviceId: is required"),
            "{pretty}"
        );
        let broken = replay_err("b.json", "[\n  {\"deviceId\": \"a\",\n  oops\n]\n");
        assert!(broken.contains("b.json:3: not JSON"), "{broken}");
        // The second of two pretty-printed documents: its own first line.
        let second = replay_err(
            "s.json",
            &format!("{{\n \"readings\": []\n}}\n\n{{\n \"readings\": [{ok}, {{}}]\n}}\n"),
        );
        assert!(
            second.contains("s.json:5: readings[1]: invalid reading"),
            "{second}"
        );
        // Blank lines before the first reading still count.
        let after_blanks = replay_err("l.ndjson", &format!("\n\n{ok}\n{{\"ts\":1}}\n"));
        assert!(
            after_blanks.contains("l.ndjson:4: invalid reading"),
            "{after_blanks}"
        );
        let csv_after_blanks = replay_err("l.csv", "\n\nts,x\n1,2\n3,y\n");
        assert!(
            csv_after_blanks.contains("l.csv:5: column x"),
            "{csv_after_blanks}"
        );
        let empty = replay_err("e.ndjson", "\n\n");
        assert!(empty.contains("e.ndjson is empty"), "{empty}");
    }
}
