//! [`CheckpointStore`] conformance: upsert by name.

use super::unique;
use iotstream_core::ports::{Checkpoint, CheckpointStore, Position};
use std::sync::Arc;

/// Runs every checkpoint check on fresh names.
pub async fn run(checkpoints: Arc<dyn CheckpointStore>) {
    save_load_and_overwrite(&*checkpoints).await;
}

pub async fn save_load_and_overwrite(store: &dyn CheckpointStore) {
    let name = unique("conf-checkpoint");
    let other = unique("conf-checkpoint-other");
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), None);
    let first = Checkpoint {
        positions: vec![
            Position {
                partition: 0,
                next_offset: 17,
            },
            Position {
                partition: 3,
                next_offset: u64::from(u32::MAX) + 5,
            },
        ],
        state: b"engine state \x00\xff binary".to_vec(),
    };
    store.save_checkpoint(&name, &first).await.expect("save");
    assert_eq!(
        store.load_checkpoint(&name).await.expect("load"),
        Some(first.clone())
    );
    let empty = Checkpoint {
        positions: vec![],
        state: vec![],
    };
    store.save_checkpoint(&other, &empty).await.expect("save other");
    let second = Checkpoint {
        positions: vec![Position {
            partition: 1,
            next_offset: 2,
        }],
        state: (0..200_000u32).map(|i| (i % 251) as u8).collect(),
    };
    store.save_checkpoint(&name, &second).await.expect("overwrite");
    assert_eq!(
        store.load_checkpoint(&name).await.expect("load"),
        Some(second),
        "last save wins"
    );
    assert_eq!(
        store.load_checkpoint(&other).await.expect("load"),
        Some(empty),
        "names are independent"
    );
}
