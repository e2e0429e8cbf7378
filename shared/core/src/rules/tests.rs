//! Rules file parsing.

use super::*;

#[test]
fn parses_the_contract_example() {
    let rules = Rules::from_toml(
        r#"
        [[rules]]
        name = "overheat"
        metric = "temperature"
        above = 80.0
        clear = 75.0
        for = "30s"
        severity = "critical"
        devices = "pump-*"
        "#,
    )
    .unwrap();
    let r = &rules.thresholds[0];
    assert_eq!(
        (r.direction, r.threshold, r.clear, r.for_ms),
        (Direction::Above, 80.0, 75.0, 30_000)
    );
    assert_eq!(r.severity, Severity::Critical);
    assert!(r.applies_to("pump-3") && !r.applies_to("fan-3"));
    assert!(r.breached(80.1) && !r.breached(80.0));
    assert!(r.cleared(74.9) && !r.cleared(75.0));
}

#[test]
fn below_rules_mirror_above_rules() {
    let rules = Rules::from_toml("[[rules]]\nname='cold'\nmetric='t'\nbelow=5.0\nclear=7.0\n").unwrap();
    let r = &rules.thresholds[0];
    assert!(r.breached(4.9) && !r.breached(5.0));
    assert!(r.cleared(7.1) && !r.cleared(6.0));
    assert_eq!(r.severity, Severity::Warning);
}

#[test]
fn reports_each_bad_rule_with_index_and_field() {
    let errs = Rules::from_toml(
        r#"
        [[rules]]
        name = "ok"
        metric = "t"
        above = 1.0
        [[rules]]
        name = "both"
        metric = "t"
        above = 1.0
        below = 0.0
        [[rules]]
        name = "bad"
        metric = "t!"
        above = 10.0
        clear = 12.0
        for = "soon"
        severity = "panic"
        [[rules]]
        name = "ok"
        metric = "t"
        below = 1.0
        "#,
    )
    .unwrap_err();
    let got: Vec<(usize, &str)> = errs
        .iter()
        .map(|e| (e.index.unwrap(), e.field.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "above"),
            (2, "metric"),
            (2, "clear"),
            (2, "for"),
            (2, "severity"),
            (3, "name")
        ]
    );
}

#[test]
fn unknown_keys_and_bad_toml_are_errors() {
    assert!(Rules::from_toml("[[rules]]\nname='a'\nmetric='t'\nabove=1\nabvoe=2\n").is_err());
    assert!(Rules::from_toml("[[rules]\n").is_err());
}

#[test]
fn built_in_defaults_parse_and_settings_apply() {
    let d = Rules::defaults();
    assert_eq!(d.thresholds.len(), 2);
    let kinds: Vec<&str> = d.detectors.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(kinds, ["spike", "level_shift", "flatline", "silence"]);
    assert_eq!(d.settings.pane_ms(), 60_000);
    let r = Rules::from_toml("[settings]\nwindow='10s'\nallowed_lateness='1m'\nflap_max=4\n").unwrap();
    assert_eq!(
        r.settings.windows(),
        vec![WindowSpec {
            size_ms: 10_000,
            hop_ms: 10_000
        }]
    );
    assert_eq!((r.settings.allowed_lateness_ms, r.settings.flap_max), (60_000, 4));
    assert!(Rules::from_toml("[settings]\nwindow='10ms'\n").is_err());
}

#[test]
fn windows_are_tumbling_or_hopping_and_must_share_a_pane() {
    let r = Rules::from_toml("[[windows]]\nsize='1m'\n[[windows]]\nsize='10m'\nhop='2m'\n").unwrap();
    assert_eq!(r.settings.pane_ms(), 60_000);
    assert_eq!(r.settings.max_window_ms(), 600_000);
    let errs = Rules::from_toml("[[windows]]\nsize='1h'\n[[windows]]\nsize='7s'\n").unwrap_err();
    assert_eq!(errs[0].field, "windows", "{errs:?}");
    let errs = Rules::from_toml("[[windows]]\nsize='1m'\nhop='2m'\n").unwrap_err();
    assert_eq!((errs[0].field.as_str(), errs[0].index), ("windows.hop", Some(0)));
}

#[test]
fn bad_detectors_are_reported_with_index_and_field() {
    let errs = Rules::from_toml(
        "[[detectors]]\nkind='spike'\nthreshold=-1.0\n[[detectors]]\nkind='wobble'\n\
         [[detectors]]\nkind='silence'\nmetrics='t'\nfor='1ms'\n[[detectors]]\nkind='flatline'\nwarmup=1\n",
    )
    .unwrap_err();
    let got: Vec<(usize, &str)> = errs
        .iter()
        .map(|e| (e.index.unwrap(), e.field.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "detectors.threshold"),
            (1, "detectors.kind"),
            (2, "detectors.metrics"),
            (2, "detectors.for"),
            (3, "detectors.warmup")
        ]
    );
    assert!(
        Rules::from_toml("[[detectors]]\nkind='spike'\nthreshhold=3.0\n").is_err(),
        "unknown keys"
    );
}

#[test]
fn a_recommendation_is_bounded_and_not_blank() {
    // Characters, not bytes: 1,000 two-byte characters are fine.
    let longest = "é".repeat(MAX_RECOMMENDATION_CHARS);
    let too_long = "x".repeat(MAX_RECOMMENDATION_CHARS + 1);
    for head in [
        "[[rules]]\nname='a'\nmetric='t'\nabove=1\n",
        "[[detectors]]\nkind='spike'\n",
    ] {
        let rules = Rules::from_toml(&format!("{head}recommendation='{longest}'\n")).unwrap();
        let carried = rules
            .thresholds
            .first()
            .and_then(|r| r.recommendation.clone())
            .or_else(|| rules.detectors.iter().find_map(|d| d.recommendation.clone()));
        assert_eq!(carried.as_deref(), Some(longest.as_str()), "{head}");
        for bad in [too_long.as_str(), "", "   "] {
            let errs = Rules::from_toml(&format!("{head}recommendation='{bad}'\n")).unwrap_err();
            assert!(
                errs.iter().any(|e| e.field.ends_with("recommendation")
                    && e.message == "must be 1-1000 characters (not blank)"),
                "{head}{bad:?}: {errs:?}"
            );
        }
    }
}
