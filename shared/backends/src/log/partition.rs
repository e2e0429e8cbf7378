//! One partition of a topic: append-only segment files of framed records (see [`super::frame`]).
//!
//! `<partition dir>/<base position, 20 digits>.seg`. Positions are global across segments (a
//! segment's base position is where the previous one ended), so a position stays valid until
//! its segment is deleted by retention. An append writes every record of the batch with one
//! `write` and makes it durable with one `fdatasync` before it returns; readers only see records
//! below the durable end, so nothing a consumer acts on can vanish in a crash. A segment is
//! sealed (never written again) once it passes the segment size; only whole sealed segments are
//! deleted. On open, each segment is scanned and cut at the first torn or corrupt frame (the
//! tail of a write that was never acknowledged); the cut bytes are saved beside it.

use super::frame::{HEADER, MAX_RECORD, encode, key_value, read_frames};
use iotstream_core::PortError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// One sparse index entry per this many bytes of log.
const INDEX_EVERY: u64 = 64 * 1024;
/// Default segment size: retention deletes whole segments.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub offset: u64,
    /// Global byte position of the frame.
    pub pos: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

struct Segment {
    base_pos: u64,
    base_offset: u64,
    path: PathBuf,
    file: File,
}

/// A sealed segment, as retention sees it.
#[derive(Debug, Clone)]
pub struct SealedSegment {
    pub base_pos: u64,
    pub end_pos: u64,
    /// Offsets `base_offset..end_offset` live in this segment.
    pub base_offset: u64,
    pub end_offset: u64,
    pub modified: SystemTime,
}

struct Writer {
    next_offset: u64,
    end: u64,
    last_indexed: u64,
}

pub struct PartitionLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// Ascending by base position; the last one is written to.
    segments: RwLock<Vec<Arc<Segment>>>,
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

fn open_segment(dir: &Path, base_pos: u64, base_offset: u64) -> Result<Segment, PortError> {
    let path = dir.join(format!("{base_pos:020}.seg"));
    // Positional writes at the durable end (not O_APPEND): a failed, partial write is simply
    // overwritten by the next append, never left between acknowledged frames.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_err("cannot open", &path, e))?;
    Ok(Segment {
        base_pos,
        base_offset,
        path,
        file,
    })
}

impl PartitionLog {
    /// Opens (or creates) the partition directory, recovering from a torn tail.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<PartitionLog, PortError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create", dir, e))?;
        let mut bases: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| io_err("cannot list", dir, e))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
        }
        let (mut index, mut segments) = (Vec::new(), Vec::new());
        let (mut next_offset, mut end, mut last_indexed) = (0u64, bases[0], 0u64);
        for &base in &bases {
            let mut seg = open_segment(dir, base, next_offset)?;
            let (seg_end, first_offset, last_offset) = recover(&seg, &mut index, &mut last_indexed)?;
            if let Some(first) = first_offset {
                seg.base_offset = first;
            }
            if let Some(last) = last_offset {
                next_offset = last + 1;
            }
            end = base + seg_end;
            segments.push(Arc::new(seg));
        }
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1),
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                next_offset,
                end,
                last_indexed,
            }),
            index: RwLock::new(index),
            durable_offset: AtomicU64::new(next_offset),
            durable_pos: AtomicU64::new(end),
        })
    }

    /// The next offset to be written and durable (Kafka's high watermark).
    pub fn high_watermark(&self) -> u64 {
        self.durable_offset.load(Ordering::Acquire)
    }

    /// The offset of the oldest record still kept (Kafka's log start offset).
    pub fn first_offset(&self) -> u64 {
        self.segments.read().expect("segments")[0].base_offset
    }

    fn active(&self) -> Arc<Segment> {
        self.segments
            .read()
            .expect("segments")
            .last()
            .expect("a segment")
            .clone()
    }

    /// The segment holding global position `pos` (the first one for positions before it).
    fn segment_at(&self, pos: u64) -> (Arc<Segment>, Option<u64>) {
        let segs = self.segments.read().expect("segments");
        let i = segs.partition_point(|s| s.base_pos <= pos).saturating_sub(1);
        (segs[i].clone(), segs.get(i + 1).map(|s| s.base_pos))
    }

    /// Appends records durably. Returns the offset and position of each. Blocking: call it from
    /// a blocking context.
    pub fn append(&self, records: &[(&[u8], &[u8])]) -> Result<Vec<(u64, u64)>, PortError> {
        let mut w = self.writer.lock().expect("log writer");
        let active = self.active();
        let mut buf = Vec::with_capacity(records.iter().map(|(k, v)| HEADER + k.len() + v.len()).sum());
        let mut placed = Vec::with_capacity(records.len());
        let mut new_index = Vec::new();
        let (mut offset, mut pos, mut last_indexed) = (w.next_offset, w.end, w.last_indexed);
        for (key, value) in records {
            if key.len() > u16::MAX as usize || key.len() + value.len() > MAX_RECORD {
                return Err(PortError::invalid("record too large for the log"));
            }
            if pos == active.base_pos || pos >= last_indexed + INDEX_EVERY {
                new_index.push((offset, pos));
                last_indexed = pos;
            }
            let start = buf.len();
            encode(&mut buf, offset, key, value);
            placed.push((offset, pos));
            pos += (buf.len() - start) as u64;
            offset += 1;
        }
        let written = active
            .file
            .write_all_at(&buf, w.end - active.base_pos)
            .and_then(|_| active.file.sync_data());
        if let Err(e) = written {
            // Nothing advances: the next append overwrites whatever part of this one landed.
            return Err(io_err("cannot append to", &active.path, e));
        }
        w.next_offset = offset;
        w.end = pos;
        w.last_indexed = last_indexed;
        self.index.write().expect("log index").extend(new_index);
        self.durable_pos.store(pos, Ordering::Release);
        self.durable_offset.store(offset, Ordering::Release);
        if pos - active.base_pos >= self.segment_bytes {
            // Seal it: later appends go to a new segment starting where this one ends.
            match open_segment(&self.dir, pos, offset) {
                Ok(next) => self.segments.write().expect("segments").push(Arc::new(next)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot roll the log segment; the current one keeps growing")
                }
            }
        }
        Ok(placed)
    }

    /// The byte position at or before `offset` to start scanning from.
    pub fn seek_pos(&self, offset: u64) -> u64 {
        let index = self.index.read().expect("log index");
        let first = self.segments.read().expect("segments")[0].base_pos;
        match index.partition_point(|(o, _)| *o <= offset) {
            0 => first,
            i => index[i - 1].1.max(first),
        }
    }

    /// Reads up to `max` durable records with offset >= `from`, starting the scan at global
    /// position `pos` (from [`Self::seek_pos`] or a previous read; a position in a deleted
    /// segment moves to the oldest kept record). Returns the records and the position after them.
    pub fn read(&self, from: u64, mut pos: u64, max: usize) -> (Vec<LogRecord>, u64) {
        let end = self.durable_pos.load(Ordering::Acquire);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while out.len() < max && pos < end {
            let (seg, next_base) = self.segment_at(pos);
            pos = pos.max(seg.base_pos);
            let seg_end = next_base.unwrap_or(end).min(end);
            let frames = read_frames(
                &seg.file,
                pos - seg.base_pos,
                seg_end - seg.base_pos,
                1 << 20,
                &mut buf,
            );
            if frames.is_empty() {
                match next_base {
                    Some(next) if pos < next => pos = next, // the rest of a sealed segment was cut
                    _ => break,
                }
                continue;
            }
            let base = frames[0].0;
            for (local, offset, size) in frames {
                if out.len() >= max {
                    break;
                }
                pos = seg.base_pos + local + size;
                if offset < from {
                    continue;
                }
                let at = (local - base) as usize;
                let (key, value) = key_value(&buf[at..at + size as usize]);
                out.push(LogRecord {
                    offset,
                    pos: seg.base_pos + local,
                    key,
                    value,
                });
            }
        }
        (out, pos)
    }

    /// Reads the one record at global position `pos`.
    pub fn read_at(&self, pos: u64) -> Option<LogRecord> {
        let end = self.durable_pos.load(Ordering::Acquire);
        let (seg, next_base) = self.segment_at(pos);
        if pos < seg.base_pos {
            return None; // deleted by retention
        }
        let seg_end = next_base.unwrap_or(end).min(end) - seg.base_pos;
        let mut buf = Vec::new();
        let frames = read_frames(&seg.file, pos - seg.base_pos, seg_end, HEADER + 4096, &mut buf);
        let &(local, offset, size) = frames.first()?;
        if size as usize > buf.len() {
            let mut whole = vec![0u8; size as usize];
            seg.file.read_exact_at(&mut whole, local).ok()?;
            buf = whole;
        }
        let (key, value) = key_value(&buf[..size as usize]);
        Some(LogRecord {
            offset,
            pos: seg.base_pos + local,
            key,
            value,
        })
    }

    /// The sealed segments, oldest first.
    pub fn sealed(&self) -> Vec<SealedSegment> {
        let segs = self.segments.read().expect("segments");
        segs.windows(2)
            .map(|w| SealedSegment {
                base_pos: w[0].base_pos,
                end_pos: w[1].base_pos,
                base_offset: w[0].base_offset,
                end_offset: w[1].base_offset,
                modified: w[0]
                    .file
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::now()),
            })
            .collect()
    }

    /// Deletes the sealed segments that end at or before `pos`. Returns how many.
    pub fn delete_before(&self, pos: u64) -> Result<usize, PortError> {
        let doomed: Vec<Arc<Segment>> = {
            let mut segs = self.segments.write().expect("segments");
            let keep_from = segs.windows(2).take_while(|w| w[1].base_pos <= pos).count();
            segs.drain(..keep_from).collect()
        };
        if let Some(first) = self.segments.read().expect("segments").first() {
            let first = first.base_pos;
            self.index
                .write()
                .expect("log index")
                .retain(|(_, p)| *p >= first);
        }
        for seg in &doomed {
            std::fs::remove_file(&seg.path).map_err(|e| io_err("cannot delete", &seg.path, e))?;
        }
        Ok(doomed.len())
    }
}

/// Scans one segment: indexes it, cuts a torn tail (saving the cut bytes). Returns its valid
/// length and first and last offsets.
fn recover(
    seg: &Segment,
    index: &mut Vec<(u64, u64)>,
    last_indexed: &mut u64,
) -> Result<(u64, Option<u64>, Option<u64>), PortError> {
    let len = seg
        .file
        .metadata()
        .map_err(|e| io_err("cannot stat", &seg.path, e))?
        .len();
    let (mut local, mut first, mut last) = (0u64, None, None);
    let mut buf = Vec::new();
    loop {
        let frames = read_frames(&seg.file, local, len, 1 << 20, &mut buf);
        if frames.is_empty() {
            break;
        }
        for (at, offset, size) in frames {
            let pos = seg.base_pos + at;
            if index.is_empty() || at == 0 || pos >= *last_indexed + INDEX_EVERY {
                index.push((offset, pos));
                *last_indexed = pos;
            }
            first.get_or_insert(offset);
            last = Some(offset);
            local = at + size;
        }
    }
    if local < len {
        // Usually the torn tail of a write that was never acknowledged; a damaged frame mid-file
        // would cut acknowledged ones too, so the cut bytes are kept aside, never dropped.
        let aside = seg.path.with_extension(format!("seg.cut-at-{local}"));
        let mut rest = vec![0u8; (len - local) as usize];
        seg.file
            .read_exact_at(&mut rest, local)
            .map_err(|e| io_err("cannot read", &seg.path, e))?;
        std::fs::write(&aside, &rest)
            .and_then(|_| File::open(&aside)?.sync_all())
            .map_err(|e| io_err("cannot save the cut bytes to", &aside, e))?;
        tracing::warn!(
            path = %seg.path.display(), cut_bytes = len - local, saved_to = %aside.display(),
            "the log ended in an incomplete or damaged frame; cut it there and saved the rest"
        );
        seg.file
            .set_len(local)
            .map_err(|e| io_err("cannot truncate", &seg.path, e))?;
        seg.file
            .sync_all()
            .map_err(|e| io_err("cannot sync", &seg.path, e))?;
    }
    Ok((local, first, last))
}

#[cfg(test)]
mod tests;
