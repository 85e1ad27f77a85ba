//! Log export and import: a flat file of sealed envelopes in log order.
//!
//! Format: the magic line `lote-log-export v1\n`, then per record a 4-byte
//! little-endian length and the record exactly as the store keeps it (codec
//! bytes + CRC-32). Golden logs in `replay/` use it, so they freeze the
//! on-disk encoding of every event layout ever released.

use std::io::{Read, Write};
use std::path::Path;

use crate::store::{seal, unseal, Envelope, EventStore, StoreError};

const EXPORT_MAGIC: &[u8] = b"lote-log-export v1\n";
/// Largest record accepted on import.
pub const EXPORT_RECORD_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Why an export could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a lote log export (bad magic line)")]
    BadMagic,
    #[error("record {index}: {why}")]
    BadRecord { index: usize, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes the whole log of `store` to `path`.
pub fn export(store: &EventStore, path: &Path) -> Result<u64, ExportError> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(EXPORT_MAGIC)?;
    let mut next = 1;
    let mut count = 0;
    loop {
        let batch = store.read_all(next, 1024)?;
        let Some(last) = batch.last() else { break };
        next = last.position + 1;
        for envelope in &batch {
            let bytes = seal(envelope).map_err(StoreError::from)?;
            out.write_all(&(bytes.len() as u32).to_le_bytes())?;
            out.write_all(&bytes)?;
            count += 1;
        }
    }
    out.flush()?;
    Ok(count)
}

/// Reads an export back into envelopes, checking every record.
pub fn read_export(path: &Path) -> Result<Vec<Envelope>, ExportError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let rest = bytes
        .strip_prefix(EXPORT_MAGIC)
        .ok_or(ExportError::BadMagic)?;
    let mut envelopes = Vec::new();
    let mut at = 0;
    while at < rest.len() {
        let index = envelopes.len();
        let bad = |why: String| ExportError::BadRecord { index, why };
        let len_bytes = rest
            .get(at..at + 4)
            .ok_or_else(|| bad("truncated length".into()))?;
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        if len > EXPORT_RECORD_BYTES_MAX {
            return Err(bad(format!(
                "length {len} exceeds {EXPORT_RECORD_BYTES_MAX}"
            )));
        }
        let record = rest
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| bad("truncated record".into()))?;
        envelopes.push(unseal::<Envelope>(record).map_err(bad)?);
        at += 4 + len;
    }
    Ok(envelopes)
}

/// Loads an export into an empty (or matching) store, verbatim.
pub fn import(store: &EventStore, path: &Path) -> Result<u64, ExportError> {
    let envelopes = read_export(path)?;
    let count = envelopes.len() as u64;
    for chunk in envelopes.chunks(1000) {
        store.import_blocking(chunk.to_vec())?;
    }
    Ok(count)
}
