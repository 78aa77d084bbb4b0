//! TensorBoard event files (`OUT/tb/events.out.tfevents.<unix secs>.<hostname>`) beside
//! `metrics.jsonl`: every scalar of every metrics line, so `tensorboard --logdir OUT` (and wandb's
//! TensorBoard import) read a run as it goes.
//!
//! The format is TensorFlow's, written by hand (no protobuf or TensorFlow crate needed for this
//! much): a file is a sequence of TFRecords, each
//!   u64 LE length | u32 LE masked crc32c(length bytes) | data | u32 LE masked crc32c(data),
//! and each record's data is an `Event` protobuf: wall_time = 1 (double), step = 2 (int64),
//! file_version = 3 (string, "brain.Event:2" in a file's first event), summary = 5 (`Summary`:
//! repeated value = 1, each `Summary.Value` {tag = 1 string, simple_value = 2 float}),
//! session_log = 7 (`SessionLog`: status = 1, START = 1).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use softcot_core::{Error, Result};

/// Appends events to one file. Each invocation of a run opens a new one (TensorBoard reads a
/// folder's files in name order).
pub struct EventWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl EventWriter {
    /// Opens a new event file in `dir` (created if missing) and writes its version event and a
    /// session START at `first_step`, the first step this invocation logs: TensorBoard then drops
    /// what earlier files hold from that step on (a run that died after its last checkpoint
    /// logged steps its resume logs again), as `--resume` drops them from metrics.jsonl. Two
    /// invocations started in the same second on one host share the name: the second appends.
    pub fn create(dir: &Path, first_step: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("{}: cannot create: {e}", dir.display())))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let host = gethostname::gethostname().to_string_lossy().replace(['/', '\\'], "_");
        let path = dir.join(format!("events.out.tfevents.{}.{host}", now.as_secs()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(format!("{}: {e}", path.display())))?;
        let mut w = EventWriter { path, file };
        let mut event = event_head(wall_time(), 0);
        put_bytes(&mut event, 3, b"brain.Event:2");
        w.write_record(&event)?;
        let mut session = Vec::new();
        put_key(&mut session, 1, WIRE_VARINT);
        put_varint(&mut session, SESSION_START);
        let mut start = event_head(wall_time(), first_step as i64);
        put_bytes(&mut start, 7, &session);
        w.write_record(&start)?;
        Ok(w)
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event at `step` with every number (and boolean, as 0 or 1) of `line` but "step" as a
    /// scalar tagged by its key. Nothing is written for a line with none.
    pub fn log_line(&mut self, step: u64, line: &Value) -> Result<()> {
        let scalars: Vec<(&str, f32)> = line
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "step")
            .filter_map(|(k, v)| Some((k.as_str(), scalar(v)?)))
            .collect();
        if scalars.is_empty() {
            return Ok(());
        }
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            put_key(&mut v, 2, WIRE_32);
            v.extend_from_slice(&value.to_le_bytes());
            put_bytes(&mut summary, 1, &v);
        }
        let mut event = event_head(wall_time(), step as i64);
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// One TFRecord, written with one call so a reader never sees a frame without its data.
    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(&record(data))
            .map_err(|e| Error::io(format!("{}: {e}", self.path.display())))
    }
}

/// A metrics value as TensorBoard's float: numbers, and booleans as 0 or 1.
fn scalar(v: &Value) -> Option<f32> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| x as f32),
        Value::Bool(b) => Some(*b as u8 as f32),
        _ => None,
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// TFRecord framing of `data`: length, its masked CRC, data, the data's masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// TFRecord's checksum: crc32c rotated right by 15 bits plus a constant, so that a CRC computed
/// over data that itself holds CRCs does not degenerate.
pub fn masked_crc(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), a byte at a time through a table built
/// at compile time: event files are a few bytes per step, so speed does not matter here.
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        CRC32C_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8)
    })
}

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0x82f6_3b78 } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// `SessionLog.status` START.
const SESSION_START: u64 = 1;

// Protobuf wire types: varint, 64-bit, length-delimited, 32-bit.
const WIRE_VARINT: u64 = 0;
const WIRE_64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_32: u64 = 5;

/// An `Event`'s wall_time (field 1, double) and step (field 2, int64).
fn event_head(wall_time: f64, step: i64) -> Vec<u8> {
    let mut e = Vec::new();
    put_key(&mut e, 1, WIRE_64);
    e.extend_from_slice(&wall_time.to_le_bytes());
    put_key(&mut e, 2, WIRE_VARINT);
    put_varint(&mut e, step as u64);
    e
}

fn put_key(buf: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(buf, field << 3 | wire);
}

fn put_bytes(buf: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(buf, field, WIRE_LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the test reader makes of one `Event`.
    #[derive(Debug, Default)]
    struct Event {
        wall_time: f64,
        step: i64,
        file_version: Option<String>,
        session_status: Option<u64>,
        values: Vec<(String, f32)>,
    }

    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let byte = b[*i];
            *i += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }

    fn take(b: &[u8], i: &mut usize, n: usize) -> Vec<u8> {
        *i += n;
        b[*i - n..*i].to_vec()
    }

    /// The fields of a message as (field, wire type, payload bytes), varints as their 8 LE bytes.
    fn fields(b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
        let mut i = 0;
        let mut out = Vec::new();
        while i < b.len() {
            let key = varint(b, &mut i);
            let payload = match key & 7 {
                WIRE_VARINT => varint(b, &mut i).to_le_bytes().to_vec(),
                WIRE_64 => take(b, &mut i, 8),
                WIRE_32 => take(b, &mut i, 4),
                WIRE_LEN => {
                    let n = varint(b, &mut i) as usize;
                    take(b, &mut i, n)
                }
                w => panic!("wire type {w}"),
            };
            out.push((key >> 3, key & 7, payload));
        }
        out
    }

    fn parse_event(b: &[u8]) -> Event {
        let mut e = Event::default();
        for (field, wire, p) in fields(b) {
            match (field, wire) {
                (1, WIRE_64) => e.wall_time = f64::from_le_bytes(p.try_into().unwrap()),
                (2, WIRE_VARINT) => e.step = i64::from_le_bytes(p.try_into().unwrap()),
                (3, WIRE_LEN) => e.file_version = Some(String::from_utf8(p).unwrap()),
                (7, WIRE_LEN) => {
                    let f = fields(&p);
                    assert_eq!((f.len(), f[0].0, f[0].1), (1, 1, WIRE_VARINT), "SessionLog");
                    e.session_status = Some(u64::from_le_bytes(f[0].2.clone().try_into().unwrap()));
                }
                (5, WIRE_LEN) => {
                    for (f, w, value) in fields(&p) {
                        assert_eq!((f, w), (1, WIRE_LEN), "Summary.value");
                        let v = fields(&value);
                        assert_eq!((v[0].0, v[0].1, v[1].0, v[1].1), (1, WIRE_LEN, 2, WIRE_32));
                        let tag = String::from_utf8(v[0].2.clone()).unwrap();
                        e.values
                            .push((tag, f32::from_le_bytes(v[1].2.clone().try_into().unwrap())));
                    }
                }
                other => panic!("unexpected Event field {other:?}"),
            }
        }
        e
    }

    /// Reads every record of a file back, checking both CRCs of each.
    fn read_records(path: &Path) -> Vec<Vec<u8>> {
        let b = std::fs::read(path).unwrap();
        let (mut i, mut out) = (0, Vec::new());
        while i < b.len() {
            let len_bytes = &b[i..i + 8];
            let n = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(b[i + 8..i + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc(len_bytes), "length CRC of the record at byte {i}");
            let data = &b[i + 12..i + 12 + n];
            let crc = u32::from_le_bytes(b[i + 12 + n..i + 16 + n].try_into().unwrap());
            assert_eq!(crc, masked_crc(data), "data CRC of the record at byte {i}");
            out.push(data.to_vec());
            i += 16 + n;
        }
        out
    }

    #[test]
    fn crc32c_known_vectors() {
        // The check value of CRC-32C, and RFC 3720's (iSCSI) test patterns.
        let cases: [(&[u8], u32); 5] = [
            (b"123456789", 0xe306_9283),
            (b"", 0),
            (&[0u8; 32], 0x8a91_36aa),
            (&[0xffu8; 32], 0x62a8_ab43),
            (&core::array::from_fn::<u8, 32, _>(|i| i as u8), 0x46dd_794e),
        ];
        for (data, want) in cases {
            let got = crc32c(data);
            println!("crc32c({} bytes) = {got:#010x}", data.len());
            assert_eq!(got, want);
        }
        // TFRecord's mask of the check value, worked by hand: rotr(0xe3069283, 15) + 0xa282ead8.
        assert_eq!(masked_crc(b"123456789"), 0x2507_c60d_u32.wrapping_add(0xa282_ead8));
    }

    #[test]
    fn record_framing() {
        let r = record(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc(b"abc").to_le_bytes());
        let mut v = Vec::new();
        put_varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02], "protobuf's own varint example");
    }

    #[test]
    fn events_read_back_with_tags_steps_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let tb = dir.path().join("tb");
        let mut w = EventWriter::create(&tb, 7).unwrap();
        let lines = [
            json!({"step": 0, "val_acc": 0.25}),
            json!({"step": 1, "loss": -1.5, "reward": 42.0, "applied": true, "note": "text", "tokens": 1234567}),
            json!({"step": 2, "note": "no scalar: no event"}),
            json!({"step": 3000000000u64, "grad_norm": 1e-7, "applied": false}),
        ];
        for l in &lines {
            w.log_line(l["step"].as_u64().unwrap(), l).unwrap();
        }
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let events: Vec<Event> = read_records(w.path()).iter().map(|r| parse_event(r)).collect();
        assert_eq!(events.len(), 5, "{events:?}");
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!((events[1].step, events[1].session_status), (7, Some(1)), "START");
        let now = wall_time();
        assert!(events.iter().all(|e| (now - e.wall_time).abs() < 60.0), "{events:?}");
        let got: Vec<(i64, Vec<(String, f32)>)> = events[2..]
            .iter()
            .map(|e| {
                let mut v = e.values.clone();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                (e.step, v)
            })
            .collect();
        let s = |t: &str, v: f32| (t.to_string(), v);
        let want = vec![
            (0, vec![s("val_acc", 0.25)]),
            (
                1,
                vec![
                    s("applied", 1.0),
                    s("loss", -1.5),
                    s("reward", 42.0),
                    s("tokens", 1234567.0),
                ],
            ),
            (3_000_000_000, vec![s("applied", 0.0), s("grad_norm", 1e-7)]),
        ];
        assert_eq!(got, want);
        println!("{} events read back from {name}: {got:?}", events.len());
    }
}
