//! Archives streamed to and from a directory, table by table in bounded
//! chunks: the memory an export or import uses does not grow with the
//! tenant's size. The files are the format [`TenantArchive::write_to_dir`]
//! writes (and [`TenantArchive::read_from_dir`] reads), so either side can
//! be the in-memory one.
//!
//! The manifest is written last, through a temporary name renamed into
//! place: a directory without `manifest.json` is an export that did not
//! finish, and nothing reads it as an archive.

// Without a database backend only `verify_dir` is reachable.
#![cfg_attr(not(feature = "_sql"), allow(dead_code))]

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};

use super::{ARCHIVE_FORMAT, ArchiveManifest, ArchivedTable, TenantArchive, corrupt};
use crate::error::TenancyError;
use crate::ident::SqlIdent;

fn write_error(error: std::io::Error) -> TenancyError {
    TenancyError::InvalidInput(format!(
        "cannot write the archive: {error}; check the directory and free space"
    ))
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64);
    for byte in digest.as_ref() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Writes an archive into a directory, one table file at a time.
#[derive(Debug)]
pub(crate) struct ArchiveDirWriter {
    dir: PathBuf,
    manifest: ArchiveManifest,
}

/// One table's file being written.
#[derive(Debug)]
pub(crate) struct TableFile {
    file: BufWriter<tokio::fs::File>,
    hasher: Sha256,
    table: String,
    tenant_column: Option<String>,
    rows: u64,
}

impl ArchiveDirWriter {
    /// Creates `dir` (if needed) for the archive of `manifest`'s tenant;
    /// `manifest.tables` is filled as tables are written.
    pub(crate) async fn create(
        dir: &Path,
        manifest: ArchiveManifest,
    ) -> Result<Self, TenancyError> {
        tokio::fs::create_dir_all(dir).await.map_err(write_error)?;
        // A manifest left from an earlier export would describe files
        // this one overwrites.
        match tokio::fs::remove_file(dir.join("manifest.json")).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(write_error(e)),
            _ => {}
        }
        Ok(Self {
            dir: dir.to_owned(),
            manifest,
        })
    }

    /// Starts `table`'s file.
    pub(crate) async fn table(
        &self,
        table: &str,
        tenant_column: Option<String>,
    ) -> Result<TableFile, TenancyError> {
        SqlIdent::new(table.to_owned())?;
        let file = tokio::fs::File::create(self.dir.join(format!("{table}.jsonl")))
            .await
            .map_err(write_error)?;
        Ok(TableFile {
            file: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            table: table.to_owned(),
            tenant_column,
            rows: 0,
        })
    }

    /// Adds a finished table to the manifest.
    pub(crate) fn add(&mut self, table: ArchivedTable) {
        self.manifest.tables.push(table);
    }

    /// Writes the manifest (last: the archive exists from now on).
    pub(crate) async fn finish(self) -> Result<ArchiveManifest, TenancyError> {
        let text = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| TenancyError::InvalidInput(e.to_string()))?;
        let temporary = self.dir.join("manifest.json.partial");
        tokio::fs::write(&temporary, text)
            .await
            .map_err(write_error)?;
        tokio::fs::rename(&temporary, self.dir.join("manifest.json"))
            .await
            .map_err(write_error)?;
        Ok(self.manifest)
    }
}

impl TableFile {
    /// Appends one row (a JSON object's text, without a newline).
    pub(crate) async fn row(&mut self, json: &str) -> Result<(), TenancyError> {
        self.hasher.update(json.as_bytes());
        self.hasher.update(b"\n");
        self.file
            .write_all(json.as_bytes())
            .await
            .map_err(write_error)?;
        self.file.write_all(b"\n").await.map_err(write_error)?;
        self.rows += 1;
        Ok(())
    }

    /// Flushes the file; its manifest entry.
    pub(crate) async fn finish(mut self) -> Result<ArchivedTable, TenancyError> {
        self.file.flush().await.map_err(write_error)?;
        self.file.get_mut().sync_all().await.map_err(write_error)?;
        Ok(ArchivedTable {
            table: self.table,
            tenant_column: self.tenant_column,
            rows: self.rows,
            sha256: hex(self.hasher.finalize()),
        })
    }
}

async fn read_manifest(dir: &Path) -> Result<ArchiveManifest, TenancyError> {
    let text = tokio::fs::read(dir.join("manifest.json"))
        .await
        .map_err(|e| corrupt(format!("cannot read manifest.json: {e}")))?;
    serde_json::from_slice(&text).map_err(|e| corrupt(format!("manifest: {e}")))
}

async fn open_lines(
    dir: &Path,
    table: &str,
) -> Result<tokio::io::Lines<BufReader<tokio::fs::File>>, TenancyError> {
    SqlIdent::new(table.to_owned())?;
    let name = format!("{table}.jsonl");
    let file = tokio::fs::File::open(dir.join(&name))
        .await
        .map_err(|e| corrupt(format!("cannot read {name}: {e}")))?;
    Ok(BufReader::with_capacity(256 * 1024, file).lines())
}

/// Checks the archive in `dir` as [`TenantArchive::verify`] does — format,
/// names, checksums, row counts, every line a JSON object — reading each
/// file once, a line at a time (memory bounded by the longest row, not the
/// tenant's size). Returns its manifest.
///
/// # Errors
/// [`TenancyError::CorruptArchive`] saying what did not match.
pub async fn verify_dir(dir: &Path) -> Result<ArchiveManifest, TenancyError> {
    let manifest = read_manifest(dir).await?;
    if manifest.format != ARCHIVE_FORMAT {
        return Err(corrupt(format!(
            "format {} is not supported (expected {ARCHIVE_FORMAT})",
            manifest.format
        )));
    }
    for table in &manifest.tables {
        if let Some(column) = &table.tenant_column {
            SqlIdent::new(column.clone())?;
        }
        let mut lines = open_lines(dir, &table.table).await?;
        let mut hasher = Sha256::new();
        let mut rows = 0u64;
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| corrupt(format!("{}: {e}", table.table)))?
        {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
            let value: serde_json::Value = serde_json::from_str(&line)
                .map_err(|_| corrupt(format!("a row of {} is not JSON", table.table)))?;
            if !value.is_object() {
                return Err(corrupt(format!(
                    "a row of {} is not an object",
                    table.table
                )));
            }
            rows += 1;
        }
        if hex(hasher.finalize()) != table.sha256 {
            return Err(corrupt(format!(
                "the checksum of {} does not match",
                table.table
            )));
        }
        if rows != table.rows {
            return Err(corrupt(format!(
                "{} has {rows} rows, the manifest says {}",
                table.table, table.rows
            )));
        }
    }
    Ok(manifest)
}

/// Rows of an archive's tables, handed out in chunks as one JSON array's
/// text each (what an import binds per statement).
#[async_trait]
pub(crate) trait ChunkReader: Send {
    /// Starts (again) at `table`'s first row.
    async fn open(&mut self, table: &str) -> Result<(), TenancyError>;
    /// The next at most `rows` rows of the open table, `None` at its end.
    async fn next_chunk(&mut self, rows: usize) -> Result<Option<String>, TenancyError>;
}

fn push_row(chunk: &mut String, line: &str) {
    chunk.push(if chunk.is_empty() { '[' } else { ',' });
    chunk.push_str(line);
}

fn close_chunk(chunk: String) -> Option<String> {
    (!chunk.is_empty()).then(|| chunk + "]")
}

/// Chunks of an archive held in memory.
#[derive(Debug)]
pub(crate) struct MemoryChunks<'a> {
    archive: &'a TenantArchive,
    lines: Option<std::str::Lines<'a>>,
}

impl<'a> MemoryChunks<'a> {
    pub(crate) fn new(archive: &'a TenantArchive) -> Self {
        Self {
            archive,
            lines: None,
        }
    }
}

#[async_trait]
impl ChunkReader for MemoryChunks<'_> {
    async fn open(&mut self, table: &str) -> Result<(), TenancyError> {
        self.lines = Some(
            self.archive
                .files
                .get(table)
                .map_or("", String::as_str)
                .lines(),
        );
        Ok(())
    }

    async fn next_chunk(&mut self, rows: usize) -> Result<Option<String>, TenancyError> {
        let mut chunk = String::new();
        if let Some(lines) = self.lines.as_mut() {
            for line in lines.take(rows) {
                push_row(&mut chunk, line);
            }
        }
        Ok(close_chunk(chunk))
    }
}

/// Chunks read from an archive directory (verified first by the caller).
#[derive(Debug)]
pub(crate) struct DirChunks {
    dir: PathBuf,
    lines: Option<tokio::io::Lines<BufReader<tokio::fs::File>>>,
}

impl DirChunks {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            lines: None,
        }
    }
}

#[async_trait]
impl ChunkReader for DirChunks {
    async fn open(&mut self, table: &str) -> Result<(), TenancyError> {
        self.lines = Some(open_lines(&self.dir, table).await?);
        Ok(())
    }

    async fn next_chunk(&mut self, rows: usize) -> Result<Option<String>, TenancyError> {
        let mut chunk = String::new();
        if let Some(lines) = self.lines.as_mut() {
            for _ in 0..rows {
                match lines
                    .next_line()
                    .await
                    .map_err(|e| corrupt(e.to_string()))?
                {
                    Some(line) => push_row(&mut chunk, &line),
                    None => break,
                }
            }
        }
        Ok(close_chunk(chunk))
    }
}

/// Where an export's rows go, table by table.
#[async_trait]
pub(crate) trait ArchiveSink: Send {
    /// Starts `table`.
    async fn begin_table(
        &mut self,
        table: &str,
        tenant_column: Option<String>,
    ) -> Result<(), TenancyError>;
    /// One row of the table begun last.
    async fn row(&mut self, json: &str) -> Result<(), TenancyError>;
    /// Ends the table begun last.
    async fn end_table(&mut self) -> Result<(), TenancyError>;
}

/// An export into memory: a [`TenantArchive`].
#[derive(Debug)]
pub(crate) struct MemorySink {
    archive: TenantArchive,
    current: Option<(String, Option<String>, String, u64)>,
}

impl MemorySink {
    pub(crate) fn new(manifest: ArchiveManifest) -> Self {
        Self {
            archive: TenantArchive {
                manifest,
                files: std::collections::BTreeMap::new(),
            },
            current: None,
        }
    }

    pub(crate) fn into_archive(self) -> TenantArchive {
        self.archive
    }
}

#[async_trait]
impl ArchiveSink for MemorySink {
    async fn begin_table(
        &mut self,
        table: &str,
        tenant_column: Option<String>,
    ) -> Result<(), TenancyError> {
        self.current = Some((table.to_owned(), tenant_column, String::new(), 0));
        Ok(())
    }

    async fn row(&mut self, json: &str) -> Result<(), TenancyError> {
        if let Some((_, _, data, rows)) = self.current.as_mut() {
            data.push_str(json);
            data.push('\n');
            *rows += 1;
        }
        Ok(())
    }

    async fn end_table(&mut self) -> Result<(), TenancyError> {
        if let Some((table, tenant_column, data, rows)) = self.current.take() {
            self.archive.manifest.tables.push(ArchivedTable {
                table: table.clone(),
                tenant_column,
                rows,
                sha256: super::sha256_hex(data.as_bytes()),
            });
            self.archive.files.insert(table, data);
        }
        Ok(())
    }
}

/// An export into a directory, a table file at a time.
#[derive(Debug)]
pub(crate) struct DirSink {
    writer: ArchiveDirWriter,
    current: Option<TableFile>,
}

impl DirSink {
    pub(crate) async fn create(
        dir: &Path,
        manifest: ArchiveManifest,
    ) -> Result<Self, TenancyError> {
        Ok(Self {
            writer: ArchiveDirWriter::create(dir, manifest).await?,
            current: None,
        })
    }

    /// Writes the manifest: the archive is complete.
    pub(crate) async fn finish(self) -> Result<ArchiveManifest, TenancyError> {
        self.writer.finish().await
    }
}

#[async_trait]
impl ArchiveSink for DirSink {
    async fn begin_table(
        &mut self,
        table: &str,
        tenant_column: Option<String>,
    ) -> Result<(), TenancyError> {
        self.current = Some(self.writer.table(table, tenant_column).await?);
        Ok(())
    }

    async fn row(&mut self, json: &str) -> Result<(), TenancyError> {
        match self.current.as_mut() {
            Some(file) => file.row(json).await,
            None => Ok(()),
        }
    }

    async fn end_table(&mut self) -> Result<(), TenancyError> {
        if let Some(file) = self.current.take() {
            let table = file.finish().await?;
            self.writer.add(table);
        }
        Ok(())
    }
}
