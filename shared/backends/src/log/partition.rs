//! One partition of a topic: an append-only file of framed records.
//!
//! Record frame: `len: u32 | crc32: u32 | offset: u64 | key_len: u16 | key | value`, where `len`
//! counts the bytes after the crc and the crc covers them. An append writes every record of the
//! batch with one `write` and makes it durable with one `fdatasync` before it returns; readers only
//! see records below the durable end, so nothing a consumer acts on can vanish in a crash. On open,
//! the file is scanned and cut at the first torn or corrupt frame (the tail of a write that was
//! never acknowledged).

use iotstream_core::PortError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

const HEADER: usize = 4 + 4 + 8 + 2;
/// One sparse index entry per this many bytes of log.
const INDEX_EVERY: u64 = 64 * 1024;
/// Largest record accepted (key + value).
pub const MAX_RECORD: usize = 8 << 20;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub offset: u64,
    /// Byte position of the frame in the file.
    pub pos: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

struct Writer {
    file: File,
    next_offset: u64,
    end: u64,
    last_indexed: u64,
}

pub struct PartitionLog {
    path: PathBuf,
    reader: File,
    writer: Mutex<Writer>,
    /// Sparse (offset, position) pairs, ascending, for seeking.
    index: RwLock<Vec<(u64, u64)>>,
    /// Next offset and byte position that are durable: the high watermark readers see.
    durable_offset: AtomicU64,
    durable_pos: AtomicU64,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> PortError {
    PortError::unavailable(format!("{what} {}: {e}", path.display()))
}

impl PartitionLog {
    /// Opens (or creates) the file, recovering from a torn tail.
    pub fn open(path: &Path) -> Result<PartitionLog, PortError> {
        // Positional writes at the durable end (not O_APPEND): a failed, partial write is simply
        // overwritten by the next append, never left between acknowledged frames.
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_err("cannot open", path, e))?;
        let reader = file.try_clone().map_err(|e| io_err("cannot open", path, e))?;
        let len = file.metadata().map_err(|e| io_err("cannot stat", path, e))?.len();
        let mut index = Vec::new();
        let (mut pos, mut next_offset, mut last_indexed) = (0u64, 0u64, 0u64);
        let mut buf = Vec::new();
        loop {
            let frames = read_frames(&reader, pos, len, 1 << 20, &mut buf);
            if frames.is_empty() {
                break;
            }
            for (rec_pos, offset, size) in frames {
                if index.is_empty() || rec_pos >= last_indexed + INDEX_EVERY {
                    index.push((offset, rec_pos));
                    last_indexed = rec_pos;
                }
                pos = rec_pos + size;
                next_offset = offset + 1;
            }
        }
        if pos < len {
            // Usually the torn tail of a write that was never acknowledged; but a damaged frame
            // mid-file would cut acknowledged ones too, so the cut bytes are kept aside, never
            // silently dropped.
            let aside = path.with_extension(format!("log.cut-at-{pos}"));
            let mut rest = vec![0u8; (len - pos) as usize];
            reader
                .read_exact_at(&mut rest, pos)
                .map_err(|e| io_err("cannot read", path, e))?;
            std::fs::write(&aside, &rest)
                .and_then(|_| std::fs::File::open(&aside)?.sync_all())
                .map_err(|e| io_err("cannot save the cut bytes to", &aside, e))?;
            tracing::warn!(
                path = %path.display(), cut_bytes = len - pos, saved_to = %aside.display(),
                "the log ended in an incomplete or damaged frame; cut it there and saved the rest"
            );
            file.set_len(pos)
                .map_err(|e| io_err("cannot truncate", path, e))?;
            file.sync_all().map_err(|e| io_err("cannot sync", path, e))?;
        }
        Ok(PartitionLog {
            path: path.to_path_buf(),
            reader,
            writer: Mutex::new(Writer {
                file,
                next_offset,
                end: pos,
                last_indexed,
            }),
            index: RwLock::new(index),
            durable_offset: AtomicU64::new(next_offset),
            durable_pos: AtomicU64::new(pos),
        })
    }

    /// The next offset to be written and durable (Kafka's high watermark).
    pub fn high_watermark(&self) -> u64 {
        self.durable_offset.load(Ordering::Acquire)
    }

    /// Appends records durably. Returns the offset and position of each. Blocking: call it from
    /// a blocking context.
    pub fn append(&self, records: &[(&[u8], &[u8])]) -> Result<Vec<(u64, u64)>, PortError> {
        let mut w = self.writer.lock().expect("log writer");
        let mut buf = Vec::with_capacity(records.iter().map(|(k, v)| HEADER + k.len() + v.len()).sum());
        let mut placed = Vec::with_capacity(records.len());
        let mut new_index = Vec::new();
        let (mut offset, mut pos, mut last_indexed) = (w.next_offset, w.end, w.last_indexed);
        for (key, value) in records {
            if key.len() > u16::MAX as usize || key.len() + value.len() > MAX_RECORD {
                return Err(PortError::invalid("record too large for the log"));
            }
            if pos == 0 || pos >= last_indexed + INDEX_EVERY {
                new_index.push((offset, pos));
                last_indexed = pos;
            }
            let start = buf.len();
            buf.extend_from_slice(&[0u8; 8]);
            buf.extend_from_slice(&offset.to_le_bytes());
            buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
            buf.extend_from_slice(key);
            buf.extend_from_slice(value);
            let body_len = (buf.len() - start - 8) as u32;
            let crc = crc32fast::hash(&buf[start + 8..]);
            buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
            buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
            placed.push((offset, pos));
            pos += (buf.len() - start) as u64;
            offset += 1;
        }
        let written = w.file.write_all_at(&buf, w.end).and_then(|_| w.file.sync_data());
        if let Err(e) = written {
            // Nothing advances: the next append overwrites whatever part of this one landed.
            return Err(io_err("cannot append to", &self.path, e));
        }
        w.next_offset = offset;
        w.end = pos;
        w.last_indexed = last_indexed;
        self.index.write().expect("log index").extend(new_index);
        self.durable_pos.store(pos, Ordering::Release);
        self.durable_offset.store(offset, Ordering::Release);
        Ok(placed)
    }

    /// The byte position at or before `offset` to start scanning from.
    pub fn seek_pos(&self, offset: u64) -> u64 {
        let index = self.index.read().expect("log index");
        match index.partition_point(|(o, _)| *o <= offset) {
            0 => 0,
            i => index[i - 1].1,
        }
    }

    /// Reads up to `max` durable records with offset >= `from`, starting the scan at byte `pos`
    /// (from [`seek_pos`] or a previous read). Returns the records and the position after them.
    pub fn read(&self, from: u64, mut pos: u64, max: usize) -> (Vec<LogRecord>, u64) {
        let end = self.durable_pos.load(Ordering::Acquire);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while out.len() < max && pos < end {
            let frames = read_frames(&self.reader, pos, end, 1 << 20, &mut buf);
            if frames.is_empty() {
                break;
            }
            let base = pos;
            for (rec_pos, offset, size) in frames {
                if out.len() >= max {
                    break;
                }
                pos = rec_pos + size;
                if offset < from {
                    continue;
                }
                let at = (rec_pos - base) as usize;
                let body = &buf[at + 8..at + size as usize];
                let key_len = u16::from_le_bytes([body[8], body[9]]) as usize;
                out.push(LogRecord {
                    offset,
                    pos: rec_pos,
                    key: body[10..10 + key_len].to_vec(),
                    value: body[10 + key_len..].to_vec(),
                });
            }
        }
        (out, pos)
    }

    /// Reads the one record at byte position `pos`.
    pub fn read_at(&self, pos: u64) -> Option<LogRecord> {
        let end = self.durable_pos.load(Ordering::Acquire);
        let mut buf = Vec::new();
        let frames = read_frames(&self.reader, pos, end, HEADER + 4096, &mut buf);
        let &(rec_pos, offset, size) = frames.first()?;
        if size as usize > buf.len() {
            // Larger than the first read: fetch the whole frame.
            let mut whole = vec![0u8; size as usize];
            self.reader.read_exact_at(&mut whole, rec_pos).ok()?;
            buf = whole;
        }
        let body = &buf[8..size as usize];
        let key_len = u16::from_le_bytes([body[8], body[9]]) as usize;
        Some(LogRecord {
            offset,
            pos: rec_pos,
            key: body[10..10 + key_len].to_vec(),
            value: body[10 + key_len..].to_vec(),
        })
    }
}

/// Reads whole, valid frames from `pos` (up to `end`, about `chunk` bytes) into `buf`; returns
/// (position, offset, frame size) of each. Stops at the first torn or corrupt frame.
fn read_frames(file: &File, pos: u64, end: u64, chunk: usize, buf: &mut Vec<u8>) -> Vec<(u64, u64, u64)> {
    let mut frames = Vec::new();
    if pos >= end {
        return frames;
    }
    let want = chunk
        .min((end - pos) as usize)
        .max(HEADER.min((end - pos) as usize));
    buf.resize(want, 0);
    if file.read_exact_at(buf, pos).is_err() {
        return frames;
    }
    let mut at = 0usize;
    loop {
        if at + 8 > buf.len() {
            break;
        }
        let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len < 10 || len > MAX_RECORD + 10 + u16::MAX as usize {
            break;
        }
        let size = 8 + len;
        if at + size > buf.len() {
            if frames.is_empty() && pos + size as u64 <= end {
                // One frame larger than the chunk: read exactly it.
                buf.resize(size, 0);
                if file.read_exact_at(buf, pos).is_err() {
                    return frames;
                }
                continue;
            }
            break;
        }
        let crc = u32::from_le_bytes(buf[at + 4..at + 8].try_into().expect("4 bytes"));
        if crc32fast::hash(&buf[at + 8..at + size]) != crc {
            break;
        }
        let offset = u64::from_le_bytes(buf[at + 8..at + 16].try_into().expect("8 bytes"));
        frames.push((pos + at as u64, offset, size as u64));
        at += size;
    }
    buf.truncate(at);
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn appends_read_back_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = PartitionLog::open(&path).unwrap();
        let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..5000)
            .map(|i| (b"k".to_vec(), format!("value-{i}").into_bytes()))
            .collect();
        let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        log.append(&refs[..2500]).unwrap();
        log.append(&refs[2500..]).unwrap();
        assert_eq!(log.high_watermark(), 5000);
        let (got, _) = log.read(4000, log.seek_pos(4000), 10);
        assert_eq!(got[0].offset, 4000);
        assert_eq!(got[0].value, b"value-4000");
        assert_eq!(log.read_at(got[3].pos).unwrap().value, b"value-4003");
        drop(log);
        let again = PartitionLog::open(&path).unwrap();
        assert_eq!(again.high_watermark(), 5000);
        let (all, _) = again.read(0, 0, usize::MAX);
        assert_eq!(all.len(), 5000);
        assert!(all.iter().enumerate().all(|(i, r)| r.offset == i as u64));
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = PartitionLog::open(&path).unwrap();
        log.append(&[(b"k", b"one"), (b"k", b"two")]).unwrap();
        drop(log);
        let len = std::fs::metadata(&path).unwrap().len();
        // A crash mid-write: half a frame of garbage after the last good one.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(f);
        let log = PartitionLog::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        assert_eq!(log.high_watermark(), 2);
        let aside = path.with_extension(format!("log.cut-at-{len}"));
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
        let log = PartitionLog::open(&dir.path().join("0.log")).unwrap();
        let big = vec![7u8; 3 << 20];
        log.append(&[(b"a", b"small"), (b"b", &big), (b"c", b"after")])
            .unwrap();
        let (all, _) = log.read(0, 0, 10);
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].value.len(), 3 << 20);
        assert_eq!(all[2].value, b"after");
    }
}
