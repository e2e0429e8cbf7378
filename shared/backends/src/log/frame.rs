//! The record frame: `len: u32 | crc32: u32 | offset: u64 | key_len: u16 | key | value`, where
//! `len` counts the bytes after the crc and the crc covers them.

use std::fs::File;
use std::os::unix::fs::FileExt;

pub(super) const HEADER: usize = 4 + 4 + 8 + 2;
/// Largest record accepted (key + value).
pub const MAX_RECORD: usize = 8 << 20;

/// Appends one frame to `buf`.
pub(super) fn encode(buf: &mut Vec<u8>, offset: u64, key: &[u8], value: &[u8]) {
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
}

/// Splits a frame's bytes (as read) into key and value.
pub(super) fn key_value(frame: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let body = &frame[8..];
    let key_len = u16::from_le_bytes([body[8], body[9]]) as usize;
    (body[10..10 + key_len].to_vec(), body[10 + key_len..].to_vec())
}

/// Reads whole, valid frames from `pos` (up to `end`, about `chunk` bytes) into `buf`; returns
/// (position, offset, frame size) of each. Stops at the first torn or corrupt frame.
pub(super) fn read_frames(
    file: &File,
    pos: u64,
    end: u64,
    chunk: usize,
    buf: &mut Vec<u8>,
) -> Vec<(u64, u64, u64)> {
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
