//! Local files into the cache: a diffusers folder the visitor already has on disk, stored chunk by
//! chunk exactly as a download would have stored it, without any network.
//!
//! The page reads each file in slices of the cache's chunk size and sends them in order, one
//! message per slice, waiting for each answer before sending the next: the file is never whole in
//! either heap, and the worker's message queue never holds more than one slice. Once the last
//! slice is stored, the manifest is marked complete with the file's SHA-256, and the loader reads
//! it like any cached file (it checks every chunk again as it goes).

use sha2::{Digest, Sha256};

use crate::cache::{Cache, ChunkFile, FileKey, Manifest};
use crate::download::DEFAULT_CHUNK_BYTES;

/// One file being imported.
pub struct Import {
    key: FileKey,
    size: u64,
    /// Bytes stored so far: the offset the next slice must start at.
    next: u64,
    hash: Sha256,
    /// The file the chunks' bytes go into, open until the import ends or is dropped.
    file: Option<ChunkFile>,
}

/// Where an import stands after a slice.
#[derive(Debug, PartialEq)]
pub enum Imported {
    /// More slices are expected.
    Partial { bytes: u64 },
    /// The file is complete in the cache.
    Complete { sha256: String },
}

impl Import {
    /// Starts importing `key` (`size` bytes), replacing whatever the cache held for it.
    pub async fn begin(cache: &Cache, key: FileKey, size: u64) -> Result<Self, String> {
        let error = |e| format!("{}: {e}", key.file);
        cache.delete(&key).await.map_err(error)?;
        let manifest = Manifest {
            size,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            sha256: None,
            complete: false,
            server_sha256: false,
        };
        cache.put_manifest(&key, &manifest).await.map_err(error)?;
        let file = cache.open_file(&key).await.map_err(error)?;
        Ok(Self { key, size, next: 0, hash: Sha256::new(), file })
    }

    pub fn key(&self) -> &FileKey {
        &self.key
    }

    /// Stores the slice at `offset`: one whole chunk, or the file's last, shorter one.
    pub async fn push(&mut self, cache: &Cache, offset: u64, bytes: &[u8]) -> Result<Imported, String> {
        let file = &self.key.file;
        if offset != self.next {
            return Err(format!(
                "{file}: a slice at byte {offset} arrived where byte {} was expected",
                self.next
            ));
        }
        let expected = DEFAULT_CHUNK_BYTES.min(self.size - self.next);
        if bytes.len() as u64 != expected {
            return Err(format!("{file}: a slice of {} bytes where {expected} were expected", bytes.len()));
        }
        let index = offset / DEFAULT_CHUNK_BYTES;
        cache
            .put_chunk(self.file.as_ref(), &self.key, index, offset, bytes)
            .await
            .map_err(|e| format!("{file}: {e}"))?;
        self.hash.update(bytes);
        self.next += bytes.len() as u64;
        if self.next < self.size {
            return Ok(Imported::Partial { bytes: self.next });
        }
        if let Some(chunks) = self.file.take() {
            chunks.flush().map_err(|e| format!("{file}: {e}"))?;
        }
        let sha256 = crate::download::hex(&self.hash.clone().finalize());
        let manifest = Manifest {
            size: self.size,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            sha256: Some(sha256.clone()),
            complete: true,
            server_sha256: false,
        };
        cache.put_manifest(&self.key, &manifest).await.map_err(|e| format!("{file}: {e}"))?;
        Ok(Imported::Complete { sha256 })
    }
}
