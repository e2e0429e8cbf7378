use super::*;

const NOW: Ts = Ts(1_764_064_800_000); // 2025-11-25T10:00:00Z

fn parse(body: &str, format: BodyFormat) -> Result<Vec<Reading>, BodyError> {
    parse_body(body.as_bytes(), format, NOW, &Limits::default())
}

#[test]
fn parses_one_object_an_array_and_ndjson() {
    let one = r#"{"deviceId":"pump-17","ts":"2025-11-25T09:59:00.250Z","metrics":{"temperature":81.5}}"#;
    let r = parse(one, BodyFormat::Json).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].device_id.as_str(), "pump-17");
    assert_eq!(r[0].ts, Ts::parse_rfc3339("2025-11-25T09:59:00.250Z").unwrap());
    assert_eq!(r[0].metrics.get("temperature"), Some(&81.5));

    let arr = format!("[{one},{one}]");
    assert_eq!(parse(&arr, BodyFormat::Json).unwrap().len(), 2);

    let nd = format!("{one}\n\n{one}\r\n");
    assert_eq!(parse(&nd, BodyFormat::Ndjson).unwrap().len(), 2);
}

#[test]
fn missing_ts_takes_server_time_and_epoch_millis_work() {
    let r = parse(r#"{"deviceId":"d","metrics":{"x":1}}"#, BodyFormat::Json).unwrap();
    assert_eq!(r[0].ts, NOW);
    let r = parse(
        r#"{"deviceId":"d","ts":1764064700000,"metrics":{"x":1}}"#,
        BodyFormat::Json,
    )
    .unwrap();
    assert_eq!(r[0].ts, Ts(1_764_064_700_000));
}

#[test]
fn every_bad_reading_is_reported_with_its_index_and_field() {
    let body = r#"[{"deviceId":"ok","metrics":{"x":1}},
                   {"deviceId":"bad id","metrics":{"x":1}},
                   {"deviceId":"d","metrics":{"x":"hot"}},
                   {"deviceId":"d","metrics":{}},
                   {"deviceId":"d","ts":"2025-11-25T11:00:00Z","metrics":{"x":1}},
                   {"metrics":{"bad name!":1}}]"#;
    let Err(BodyError::Invalid(errs)) = parse(body, BodyFormat::Json) else {
        panic!("expected invalid")
    };
    let got: Vec<(usize, &str)> = errs
        .iter()
        .map(|e| (e.index.unwrap(), e.field.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "deviceId"),
            (2, "metrics.x"),
            (3, "metrics"),
            (4, "ts"),
            (5, "deviceId"),
            (5, "metrics.bad name!")
        ]
    );
}

#[test]
fn malformed_bodies_say_where() {
    assert!(matches!(
        parse("{nope", BodyFormat::Json),
        Err(BodyError::Malformed(_))
    ));
    assert!(matches!(
        parse("42", BodyFormat::Json),
        Err(BodyError::Malformed(_))
    ));
    let Err(BodyError::Malformed(m)) = parse(
        "{\"deviceId\":\"d\",\"metrics\":{\"x\":1}}\n{oops",
        BodyFormat::Ndjson,
    ) else {
        panic!()
    };
    assert!(m.starts_with("line 2"), "{m}");
    assert_eq!(parse("[]", BodyFormat::Json), Err(BodyError::Empty));
    assert_eq!(parse("\n\n", BodyFormat::Ndjson), Err(BodyError::Empty));
}

#[test]
fn too_many_readings_is_its_own_error() {
    let limits = Limits {
        max_readings: 2,
        ..Limits::default()
    };
    let one = r#"{"deviceId":"d","metrics":{"x":1}}"#;
    let arr = format!("[{one},{one},{one}]");
    assert_eq!(
        parse_body(arr.as_bytes(), BodyFormat::Json, NOW, &limits),
        Err(BodyError::TooMany { count: 3, limit: 2 })
    );
    let nd = format!("{one}\n{one}\n{one}\n");
    assert_eq!(
        parse_body(nd.as_bytes(), BodyFormat::Ndjson, NOW, &limits),
        Err(BodyError::TooMany { count: 3, limit: 2 })
    );
}

#[test]
fn resent_readings_have_the_same_key() {
    let a = parse(
        r#"{"deviceId":"d","ts":1,"metrics":{"x":1,"y":2}}"#,
        BodyFormat::Json,
    )
    .unwrap();
    let b = parse(
        r#"{"deviceId":"d","ts":1,"metrics":{"y":2,"x":1}}"#,
        BodyFormat::Json,
    )
    .unwrap();
    let c = parse(
        r#"{"deviceId":"d","ts":1,"metrics":{"x":1,"y":3}}"#,
        BodyFormat::Json,
    )
    .unwrap();
    assert_eq!(a[0].id, b[0].id);
    assert_ne!(a[0].id, c[0].id);
    let m1 = parse(
        r#"{"deviceId":"d","ts":1,"metrics":{"x":1},"id":"m-1"}"#,
        BodyFormat::Json,
    )
    .unwrap();
    let m2 = parse(
        r#"{"deviceId":"d","ts":2,"metrics":{"x":5},"id":"m-1"}"#,
        BodyFormat::Json,
    )
    .unwrap();
    let other = parse(
        r#"{"deviceId":"e","ts":1,"metrics":{"x":1},"id":"m-1"}"#,
        BodyFormat::Json,
    )
    .unwrap();
    assert_eq!(m1[0].id, m2[0].id);
    assert_ne!(m1[0].id, other[0].id);
    assert_eq!(m1[0].id.len(), 32);
}

#[test]
fn content_types_map_to_formats() {
    assert_eq!(
        BodyFormat::from_content_type("application/json; charset=utf-8"),
        Some(BodyFormat::Json)
    );
    assert_eq!(
        BodyFormat::from_content_type("application/x-ndjson"),
        Some(BodyFormat::Ndjson)
    );
    assert_eq!(BodyFormat::from_content_type("text/plain"), None);
}

#[test]
fn readings_round_trip_through_json() {
    let r = parse(
        r#"{"deviceId":"d","ts":1,"metrics":{"x":1.5},"id":"a"}"#,
        BodyFormat::Json,
    )
    .unwrap();
    let json = serde_json::to_string(&r[0]).unwrap();
    let back: Reading = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r[0]);
}

/// The fast path must agree with the detailed path on everything it accepts, and leave
/// everything else to it.
#[test]
fn the_fast_path_accepts_exactly_what_the_detailed_path_accepts() {
    let bodies = [
        (
            r#"{"deviceId":"d","ts":"2025-11-25T09:00:00Z","metrics":{"x":1,"y":2.5},"id":"m"}"#,
            false,
        ),
        (
            r#"[{"deviceId":"d","ts":1,"metrics":{"x":1}},{"deviceId":"e","metrics":{"x":-0.5},"id":null,"ts":null}]"#,
            false,
        ),
        (r#"{"deviceId":"d","metrics":{"x":1},"extra":true}"#, false),
        (r#"{"deviceId":"d","ts":1.5,"metrics":{"x":1}}"#, false),
        (r#"{"deviceId":"d","ts":-1,"metrics":{"x":1}}"#, false),
        (r#"{"deviceId":"d d","metrics":{"x":1}}"#, false),
        (r#"{"deviceId":"d","metrics":{"x y":1}}"#, false),
        (r#"{"deviceId":"d","metrics":{"x":"1"}}"#, false),
        (r#"{"deviceId":"d","metrics":{}}"#, false),
        (r#"{"deviceId":"d","metrics":{"x":1},"id":""}"#, false),
        (r#"{"deviceId":7,"metrics":{"x":1}}"#, false),
        (
            r#"{"deviceId":"d","ts":"2025-11-25T11:00:00Z","metrics":{"x":1}}"#,
            false,
        ),
        (r#"{"deviceId":"d\u0041","metrics":{"x":1}}"#, false),
        (
            "{\"deviceId\":\"d\",\"metrics\":{\"x\":1}}\r\n\n{\"deviceId\":\"e\",\"metrics\":{\"x\":2}}\n",
            true,
        ),
        ("{\"deviceId\":\"d\",\"metrics\":{\"x\":1}}\nnot json\n", true),
    ];
    for (body, nd) in bodies {
        let format = if nd { BodyFormat::Ndjson } else { BodyFormat::Json };
        let detailed = parse_body_detailed(body.as_bytes(), format, NOW, &Limits::default());
        match fast::parse(body.as_bytes(), nd, NOW, &Limits::default()) {
            Some(fast) => assert_eq!(Ok(fast), detailed, "{body}"),
            None => assert!(
                detailed.is_err() || body.contains("1.5") || body.contains("\\u0041"),
                "fast path gave up on a valid body: {body}"
            ),
        }
    }
}
