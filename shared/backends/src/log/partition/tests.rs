use super::*;
use std::io::Write;

fn records(range: std::ops::Range<usize>) -> Vec<(Vec<u8>, Vec<u8>)> {
    range
        .map(|i| (b"k".to_vec(), format!("value-{i}").into_bytes()))
        .collect()
}

fn append(log: &PartitionLog, recs: &[(Vec<u8>, Vec<u8>)]) {
    let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    log.append(&refs).unwrap();
}

#[test]
fn appends_read_back_in_order_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), SEGMENT_BYTES).unwrap();
    let recs = records(0..5000);
    append(&log, &recs[..2500]);
    append(&log, &recs[2500..]);
    assert_eq!(log.high_watermark(), 5000);
    let (got, _) = log.read(4000, log.seek_pos(4000), 10);
    assert_eq!(got[0].offset, 4000);
    assert_eq!(got[0].value, b"value-4000");
    assert_eq!(log.read_at(got[3].pos).unwrap().value, b"value-4003");
    drop(log);
    let again = PartitionLog::open(dir.path(), SEGMENT_BYTES).unwrap();
    assert_eq!(again.high_watermark(), 5000);
    let (all, _) = again.read(0, 0, usize::MAX);
    assert_eq!(all.len(), 5000);
    assert!(all.iter().enumerate().all(|(i, r)| r.offset == i as u64));
}

#[test]
fn segments_roll_read_across_and_survive_reopen_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), 4096).unwrap();
    for chunk in records(0..2000).chunks(100) {
        append(&log, chunk);
    }
    let sealed = log.sealed();
    assert!(
        sealed.len() >= 5,
        "rolled into several segments: {}",
        sealed.len()
    );
    let (all, _) = log.read(0, 0, usize::MAX);
    assert_eq!(
        all.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..2000).collect::<Vec<u64>>()
    );
    let (mid, _) = log.read(1500, log.seek_pos(1500), 3);
    assert_eq!(mid[0].value, b"value-1500");
    drop(log);

    let log = PartitionLog::open(dir.path(), 4096).unwrap();
    assert_eq!(log.high_watermark(), 2000);
    let cut = log.sealed()[2].clone();
    assert_eq!(log.delete_before(cut.end_pos).unwrap(), 3);
    assert_eq!(log.first_offset(), cut.end_offset);
    let (rest, _) = log.read(0, 0, usize::MAX);
    assert_eq!(
        rest[0].offset, cut.end_offset,
        "reads before the kept range start at the oldest kept record"
    );
    assert_eq!(rest.last().unwrap().offset, 1999);
    assert!(log.read_at(cut.base_pos).is_none(), "a deleted record is gone");
    append(&log, &records(2000..2001));
    drop(log);
    let log = PartitionLog::open(dir.path(), 4096).unwrap();
    assert_eq!((log.first_offset(), log.high_watermark()), (cut.end_offset, 2001));
}

#[test]
fn a_torn_tail_is_cut_saved_aside_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), SEGMENT_BYTES).unwrap();
    log.append(&[(b"k", b"one"), (b"k", b"two")]).unwrap();
    drop(log);
    let seg = dir.path().join(format!("{:020}.seg", 0));
    let len = std::fs::metadata(&seg).unwrap().len();
    // A crash mid-write: half a frame of garbage after the last good one.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    drop(f);
    let log = PartitionLog::open(dir.path(), SEGMENT_BYTES).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    assert_eq!(log.high_watermark(), 2);
    let aside = seg.with_extension(format!("seg.cut-at-{len}"));
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        [40, 0, 0, 0, 1, 2, 3, 4, 5],
        "the cut bytes are kept"
    );
    log.append(&[(b"k", b"three")]).unwrap();
    let (all, _) = log.read(0, 0, 10);
    let values: Vec<&[u8]> = all.iter().map(|r| r.value.as_slice()).collect();
    assert_eq!(values, vec![&b"one"[..], b"two", b"three"]);
}

#[test]
fn large_records_span_read_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), SEGMENT_BYTES).unwrap();
    let big = vec![7u8; 3 << 20];
    log.append(&[(b"a", b"small"), (b"b", &big), (b"c", b"after")])
        .unwrap();
    let (all, _) = log.read(0, 0, 10);
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].value.len(), 3 << 20);
    assert_eq!(all[2].value, b"after");
    assert_eq!(log.read_at(all[1].pos).unwrap().value.len(), 3 << 20);
}
