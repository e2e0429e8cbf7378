//! `iotstream serve` refuses to start without what the Functions host must give it, and says so.

#![cfg(feature = "integration")]

mod common;

use common::*;

/// `serve` with `env` and without FUNCTIONS_CUSTOMHANDLER_PORT unless given: stderr.
fn serve_fails(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env_remove("IOTSTREAM_BUS_URL")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started with {env:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_needs_the_hosts_port_and_a_kafka_bus() {
    let err = serve_fails(&[]);
    assert!(err.contains("FUNCTIONS_CUSTOMHANDLER_PORT"), "{err}");
    let port = free_port().to_string();
    let err = serve_fails(&[("FUNCTIONS_CUSTOMHANDLER_PORT", port.as_str())]);
    assert!(err.contains("serve needs IOTSTREAM_BUS_URL (kafka://"), "{err}");
    let embedded = [
        ("FUNCTIONS_CUSTOMHANDLER_PORT", port.as_str()),
        ("IOTSTREAM_BUS_URL", "embedded"),
    ];
    let err = serve_fails(&embedded);
    assert!(err.contains("cannot read the embedded log"), "{err}");
}

/// `IOTSTREAM_METRICS_LISTEN` (`--metrics-listen`) that is not an address, or is taken: the
/// handler does not start, and says which setting is wrong.
#[test]
fn serve_says_which_metrics_address_it_cannot_use() {
    let port = free_port().to_string();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    for (metrics, says) in [
        ("nonsense", "--metrics-listen".to_owned()),
        (
            taken.as_str(),
            format!("cannot listen on {taken} (IOTSTREAM_METRICS_LISTEN)"),
        ),
    ] {
        let err = serve_fails(&[
            ("FUNCTIONS_CUSTOMHANDLER_PORT", port.as_str()),
            ("IOTSTREAM_BUS_URL", "kafka://127.0.0.1:9"),
            ("IOTSTREAM_METRICS_LISTEN", metrics),
        ]);
        assert!(err.contains(&says), "{metrics}: {err}");
    }
}
