//! Where an export goes: stdout, or a file written under a temporary name beside its
//! target (mode 0600: views hold contacts' names and numbers) and renamed over it only
//! once complete, so a failed or interrupted export never leaves a half file there.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tempfile::NamedTempFile;

/// The export's destination.
pub(super) enum Target {
    /// The process's stdout.
    Stdout,
    /// A file.
    File {
        /// The file being written, beside `to`; removed when dropped unpersisted.
        temp: NamedTempFile,
        /// The file the user named.
        to: PathBuf,
        /// Whether `to` may be replaced.
        force: bool,
    },
}

impl Target {
    /// A file target: refuses an existing `to` without `force` before anything is read.
    pub(super) fn file(to: &Path, force: bool) -> anyhow::Result<Target> {
        if !force && to.exists() {
            anyhow::bail!("{} exists: pass --force to replace it", to.display());
        }
        let dir = match to.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = to
            .file_name()
            .with_context(|| format!("{} names no file", to.display()))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".partial")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        Ok(Target::File {
            temp,
            to: to.to_owned(),
            force,
        })
    }

    /// A buffered writer into the target.
    pub(super) fn writer(&self) -> anyhow::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Target::Stdout => Box::new(BufWriter::new(std::io::stdout())),
            Target::File { temp, .. } => {
                let file: File = temp.as_file().try_clone()?;
                Box::new(BufWriter::new(file))
            }
        })
    }

    /// The target as messages name it.
    pub(super) fn describe(&self) -> String {
        match self {
            Target::Stdout => "stdout".into(),
            Target::File { to, .. } => to.display().to_string(),
        }
    }

    /// Makes the written file durable and gives it its name (refusing, without --force,
    /// a file that appeared there meanwhile).
    pub(super) fn complete(self) -> anyhow::Result<()> {
        let Target::File { temp, to, force } = self else {
            return Ok(());
        };
        temp.as_file()
            .sync_all()
            .with_context(|| format!("syncing {}", temp.path().display()))?;
        let persisted = if force {
            temp.persist(&to)
        } else {
            temp.persist_noclobber(&to)
        };
        persisted
            .map_err(|e| e.error)
            .with_context(|| format!("renaming the export to {}", to.display()))?;
        Ok(())
    }
}

/// A writer that counts the bytes through it, for the export's summary.
pub(super) struct Counted<W> {
    inner: W,
    bytes: Arc<AtomicU64>,
}

/// The count a [`Counted`] writer keeps, read once the writer is done.
pub(super) struct ByteCount(Arc<AtomicU64>);

impl ByteCount {
    /// Bytes written so far.
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl<W: Write> Counted<W> {
    /// `inner`, counted.
    pub(super) fn new(inner: W) -> (Counted<W>, ByteCount) {
        let bytes = Arc::new(AtomicU64::new(0));
        (
            Counted {
                inner,
                bytes: bytes.clone(),
            },
            ByteCount(bytes),
        )
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes.fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
