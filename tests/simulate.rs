//! `iotstream up --simulate N`: simulated devices are provisioned and their readings flow
//! through the whole pipeline.
#![cfg(feature = "integration")]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn simulated_devices_send_readings_that_reach_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--simulate", "3"], None).await;
    let devices = server
        .eventually("/api/devices", 20, |v| {
            let list = v["devices"].as_array().unwrap();
            list.len() == 3
                && list
                    .iter()
                    .all(|d| d["metrics"]["temperature"].is_number() && d["lastSeen"].is_string())
        })
        .await;
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["sim-1", "sim-2", "sim-3"]);
    let t = devices["devices"][0]["metrics"]["temperature"].as_f64().unwrap();
    assert!((30.0..120.0).contains(&t), "a plausible temperature: {t}");
    // Their readings are in the store, authenticated like any device's.
    let readings = server
        .eventually("/api/devices/sim-2/readings", 20, |v| {
            v["readings"].as_array().unwrap().len() >= 2
        })
        .await;
    assert!(readings["readings"][0]["metrics"]["vibration"].is_number());
}
