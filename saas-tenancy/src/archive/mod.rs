//! Portable tenant archives: one JSON Lines file per table plus a manifest
//! with row counts and SHA-256 checksums. Independent of the placement, so
//! an archive exported from a row tenant imports into a schema or database
//! tenant.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use saas_core::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::TenancyError;
use crate::ident::SqlIdent;

/// The archive format this version writes and reads.
pub const ARCHIVE_FORMAT: u32 = 1;

/// What an archive holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveManifest {
    /// [`ARCHIVE_FORMAT`].
    pub format: u32,
    /// The tenant the data was exported from.
    pub source_tenant: TenantId,
    /// When it was exported.
    pub exported_at: DateTime<Utc>,
    /// One entry per table.
    pub tables: Vec<ArchivedTable>,
}

/// One table of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedTable {
    /// The table name (unqualified).
    pub table: String,
    /// The column holding the tenant id, rewritten on import.
    pub tenant_column: Option<String>,
    /// Rows in the file.
    pub rows: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// A tenant's data: the manifest and one JSON Lines document per table
/// (one JSON object per row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantArchive {
    /// The manifest.
    pub manifest: ArchiveManifest,
    /// Table name → JSON Lines.
    pub files: BTreeMap<String, String>,
}

/// SHA-256 of `data` as lowercase hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn corrupt(reason: impl Into<String>) -> TenancyError {
    TenancyError::CorruptArchive {
        reason: reason.into(),
    }
}

impl TenantArchive {
    /// Checks everything before anything is imported: format, names,
    /// checksums, row counts and that every line is a JSON object.
    pub fn verify(&self) -> Result<(), TenancyError> {
        if self.manifest.format != ARCHIVE_FORMAT {
            return Err(corrupt(format!(
                "format {} is not supported (expected {ARCHIVE_FORMAT})",
                self.manifest.format
            )));
        }
        if self.files.len() != self.manifest.tables.len() {
            return Err(corrupt("the files do not match the manifest"));
        }
        for table in &self.manifest.tables {
            SqlIdent::new(table.table.clone())?;
            if let Some(column) = &table.tenant_column {
                SqlIdent::new(column.clone())?;
            }
            let data = self
                .files
                .get(&table.table)
                .ok_or_else(|| corrupt(format!("the file of {} is missing", table.table)))?;
            if sha256_hex(data.as_bytes()) != table.sha256 {
                return Err(corrupt(format!(
                    "the checksum of {} does not match",
                    table.table
                )));
            }
            let mut rows = 0u64;
            for line in data.lines() {
                let value: serde_json::Value = serde_json::from_str(line)
                    .map_err(|_| corrupt(format!("a row of {} is not JSON", table.table)))?;
                if !value.is_object() {
                    return Err(corrupt(format!(
                        "a row of {} is not an object",
                        table.table
                    )));
                }
                rows += 1;
            }
            if rows != table.rows {
                return Err(corrupt(format!(
                    "{} has {rows} rows, the manifest says {}",
                    table.table, table.rows
                )));
            }
        }
        Ok(())
    }

    /// Writes `manifest.json` and `<table>.jsonl` files into `dir`.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), TenancyError> {
        let io =
            |e: std::io::Error| TenancyError::InvalidInput(format!("cannot write archive: {e}"));
        std::fs::create_dir_all(dir).map_err(io)?;
        for (table, data) in &self.files {
            std::fs::write(dir.join(format!("{table}.jsonl")), data).map_err(io)?;
        }
        let manifest = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| TenancyError::InvalidInput(e.to_string()))?;
        std::fs::write(dir.join("manifest.json"), manifest).map_err(io)?;
        Ok(())
    }

    /// Reads an archive written by [`TenantArchive::write_to_dir`] and
    /// verifies it.
    pub fn read_from_dir(dir: &Path) -> Result<Self, TenancyError> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| corrupt(format!("cannot read {name}: {e}")))
        };
        let manifest: ArchiveManifest = serde_json::from_str(&read("manifest.json")?)
            .map_err(|e| corrupt(format!("manifest: {e}")))?;
        let mut files = BTreeMap::new();
        for table in &manifest.tables {
            SqlIdent::new(table.table.clone())?;
            files.insert(
                table.table.clone(),
                read(&format!("{}.jsonl", table.table))?,
            );
        }
        let archive = Self { manifest, files };
        archive.verify()?;
        Ok(archive)
    }
}

mod stream;

pub use stream::verify_dir;
#[cfg(feature = "_sql")]
pub(crate) use stream::{ArchiveSink, ChunkReader, DirChunks, DirSink, MemoryChunks, MemorySink};
