//! [`DeviceRegistry`] conformance: add/get/list/remove and generations.

use super::unique_device;
use iotstream_core::Ts;
use iotstream_core::ports::DeviceRegistry;
use std::sync::Arc;

/// Runs every device registry check on fresh device ids.
pub async fn run(devices: Arc<dyn DeviceRegistry>) {
    add_is_create_only(&*devices).await;
    re_adding_bumps_the_generation(&*devices).await;
    list_is_sorted_by_id(&*devices).await;
}

pub async fn add_is_create_only(devices: &dyn DeviceRegistry) {
    let d = unique_device("conf-dev");
    assert_eq!(devices.get_device(&d).await.expect("get"), None);
    let rec = devices
        .add_device(&d, Ts(1_000))
        .await
        .expect("add")
        .expect("new device");
    assert_eq!(
        (rec.device_id.clone(), rec.generation, rec.created_at),
        (d.clone(), 1, Ts(1_000)),
        "first generation is 1"
    );
    assert_eq!(
        devices.add_device(&d, Ts(2_000)).await.expect("add again"),
        None,
        "exists"
    );
    assert_eq!(
        devices.get_device(&d).await.expect("get"),
        Some(rec),
        "unchanged by the second add"
    );
}

pub async fn re_adding_bumps_the_generation(devices: &dyn DeviceRegistry) {
    let d = unique_device("conf-gen");
    assert!(
        !devices.remove_device(&d).await.expect("remove unknown"),
        "nothing to remove"
    );
    let first = devices
        .add_device(&d, Ts(1_000))
        .await
        .expect("add")
        .expect("new");
    assert!(devices.remove_device(&d).await.expect("remove"));
    assert!(
        !devices.remove_device(&d).await.expect("remove twice"),
        "already removed"
    );
    assert_eq!(
        devices.get_device(&d).await.expect("get"),
        None,
        "removed devices are gone"
    );
    let list = devices.list_devices().await.expect("list");
    assert!(
        !list.iter().any(|r| r.device_id == d),
        "removed devices are not listed"
    );
    let second = devices
        .add_device(&d, Ts(3_000))
        .await
        .expect("re-add")
        .expect("new again");
    assert_eq!(
        second.generation,
        first.generation + 1,
        "old keys must stop working"
    );
    assert_eq!(second.created_at, Ts(3_000));
    assert_eq!(devices.get_device(&d).await.expect("get"), Some(second.clone()));
    devices.remove_device(&d).await.expect("remove");
    let third = devices
        .add_device(&d, Ts(4_000))
        .await
        .expect("re-add")
        .expect("new again");
    assert_eq!(third.generation, first.generation + 2);
}

pub async fn list_is_sorted_by_id(devices: &dyn DeviceRegistry) {
    let base = unique_device("conf-list");
    let ids: Vec<_> = ["c", "a", "b"]
        .iter()
        .map(|s| iotstream_core::DeviceId::parse(&format!("{base}-{s}")).expect("valid id"))
        .collect();
    for id in &ids {
        devices.add_device(id, Ts(1_000)).await.expect("add");
    }
    let list = devices.list_devices().await.expect("list");
    let all: Vec<_> = list.iter().map(|r| r.device_id.clone()).collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "list is sorted by id");
    let ours: Vec<String> = all
        .iter()
        .filter(|d| d.as_str().starts_with(base.as_str()))
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        ours,
        [format!("{base}-a"), format!("{base}-b"), format!("{base}-c")]
    );
}
