//! [`Cache`] conformance: latest state with the merge rule of `upsert_latest`.

use super::{latest, unique_device};
use iotstream_core::ports::Cache;
use std::sync::Arc;

/// Runs every cache check on fresh devices.
pub async fn run(cache: Arc<dyn Cache>) {
    latest_state_merges(&*cache).await;
}

pub async fn latest_state_merges(cache: &dyn Cache) {
    let d = unique_device("conf-cache");
    let other = unique_device("conf-cache-other");
    assert_eq!(cache.get_latest(&d).await.expect("get"), None);
    cache
        .set_latest(&[latest(&d, 100, &[("a", 1.0), ("b", 2.0)])])
        .await
        .expect("set");
    assert_eq!(
        cache.get_latest(&d).await.expect("get"),
        Some(latest(&d, 100, &[("a", 1.0), ("b", 2.0)]))
    );
    cache
        .set_latest(&[latest(&d, 200, &[("b", 3.0), ("c", 4.0)])])
        .await
        .expect("set newer");
    assert_eq!(
        cache.get_latest(&d).await.expect("get"),
        Some(latest(&d, 200, &[("a", 1.0), ("b", 3.0), ("c", 4.0)])),
        "newer metrics win, older-only metrics stay"
    );
    cache
        .set_latest(&[latest(&d, 150, &[("a", 9.0), ("d", 5.0)])])
        .await
        .expect("set older");
    assert_eq!(
        cache.get_latest(&d).await.expect("get"),
        Some(latest(&d, 200, &[("a", 1.0), ("b", 3.0), ("c", 4.0), ("d", 5.0)])),
        "an older state only adds metrics the stored one lacks"
    );
    cache
        .set_latest(&[
            latest(&other, 10, &[("x", 1.0)]),
            latest(&other, 20, &[("y", 2.0)]),
            latest(&other, 5, &[("x", 7.0)]),
        ])
        .await
        .expect("set batch");
    assert_eq!(
        cache.get_latest(&other).await.expect("get"),
        Some(latest(&other, 20, &[("x", 1.0), ("y", 2.0)])),
        "repeats within one batch merge in order"
    );
}
