//! The weights cache: model files in IndexedDB, in chunks, so that a second visit loads offline.
//!
//! A 1.7 GB UNet cannot be one IndexedDB value (nor one `ArrayBuffer`), so each file is stored as
//! chunks of a fixed size keyed by `repo@revision/file#index`, each with its own SHA-256 (checked
//! on every read: a corrupted chunk is fetched again rather than fed to the model), plus one
//! [`Manifest`] per file. The store names carry a version: a future layout gets new stores, and
//! the old ones are deleted when the database is upgraded.
//!
//! Every IndexedDB call is asynchronous; [`request`] and [`transaction_done`] turn its events into
//! futures.

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbObjectStore, IdbTransaction, IdbTransactionMode, WorkerGlobalScope};

use crate::idb::{IdbError, request, transaction_done};
use crate::protocol::{CachedFile, CachedModel};

/// The database, and its version: bump it (and the store names) when the layout changes.
pub const DATABASE: &str = "controlnet-weights";
const VERSION: u32 = 1;
/// Chunk records: `{ data: Uint8Array, xxh3: hex }` (records of older builds carry `sha256: hex`
/// instead; see [`ChunkCheck`]), keyed by [`FileKey::chunk`].
pub const CHUNKS: &str = "chunks-v1";
/// Manifests: `{ size, chunk_bytes, sha256, complete, repo, revision, file }`, keyed by
/// [`FileKey::manifest`].
pub const FILES: &str = "files-v1";

/// How a chunk record proves its bytes on every load. New records carry XXH3-64 (a few GB/s in
/// wasm: reading from the cache is not slowed by it); records written by older builds carry the
/// chunk's SHA-256, still honoured. Integrity against the server is the whole file's SHA-256,
/// checked once, at download: a manifest is marked complete only after it matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkCheck {
    Xxh3(u64),
    /// Lower-case hex.
    Sha256(String),
}

impl ChunkCheck {
    /// Whether `data` is the stored chunk.
    pub fn matches(&self, data: &[u8]) -> bool {
        match self {
            Self::Xxh3(sum) => xxhash_rust::xxh3::xxh3_64(data) == *sum,
            Self::Sha256(hex) => {
                use sha2::Digest;
                crate::download::hex(&sha2::Sha256::digest(data)) == *hex
            }
        }
    }
}

/// A chunk being read ([`Cache::read_chunk`]).
pub struct ChunkRead {
    name: String,
    started: Result<JsFuture, IdbError>,
}

impl ChunkRead {
    /// The chunk and its recorded check, once read; `None` if it has no record.
    pub async fn get(self) -> Result<Option<(Uint8Array, ChunkCheck)>, IdbError> {
        let value = self.started?.await.map_err(|e| IdbError::from_js(&e))?;
        if value.is_undefined() {
            return Ok(None);
        }
        let name = self.name;
        let data = get(&value, "data")
            .dyn_into::<Uint8Array>()
            .map_err(|_| IdbError::Malformed(format!("chunk {name} has no data")))?;
        let xxh3 = get(&value, "xxh3").as_string().and_then(|hex| u64::from_str_radix(&hex, 16).ok());
        let check = match (xxh3, get(&value, "sha256").as_string()) {
            (Some(sum), _) => ChunkCheck::Xxh3(sum),
            (None, Some(sha256)) => ChunkCheck::Sha256(sha256),
            (None, None) => return Err(IdbError::Malformed(format!("chunk {name} has no checksum"))),
        };
        Ok(Some((data, check)))
    }
}

/// Which file of which model: the cache's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileKey {
    pub repo: String,
    pub revision: String,
    pub file: String,
}

impl FileKey {
    pub fn manifest(&self) -> String {
        format!("{}@{}/{}", self.repo, self.revision, self.file)
    }

    /// The key back from a manifest key, for records written before manifests carried their
    /// key's parts. Ambiguous only for a revision with a `/` in it (a branch like `refs/pr/1`),
    /// which records written since never need.
    pub fn parse(manifest_key: &str) -> Option<Self> {
        let (repo, rest) = manifest_key.split_once('@')?;
        let (revision, file) = rest.split_once('/')?;
        Some(FileKey { repo: repo.to_owned(), revision: revision.to_owned(), file: file.to_owned() })
    }

    pub fn chunk(&self, index: u64) -> String {
        format!("{}#{index:06}", self.manifest())
    }
}

/// What the cache knows of one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub size: u64,
    pub chunk_bytes: u64,
    /// The whole file's SHA-256 (hex), when the server told us or once it has been computed.
    pub sha256: Option<String>,
    /// Whether `sha256` came from the server (the Hub's API), so that the file was checked
    /// against it when it was downloaded; `false` for a server that names no hash.
    pub server_sha256: bool,
    /// Every chunk has been stored and the whole file verified.
    pub complete: bool,
}

impl Manifest {
    fn to_js(&self) -> Object {
        let object = Object::new();
        set(&object, "size", &JsValue::from_f64(self.size as f64));
        set(&object, "chunk_bytes", &JsValue::from_f64(self.chunk_bytes as f64));
        set(&object, "sha256", &self.sha256.as_deref().map_or(JsValue::NULL, JsValue::from_str));
        set(&object, "complete", &JsValue::from_bool(self.complete));
        set(&object, "server_sha256", &JsValue::from_bool(self.server_sha256));
        object
    }

    fn from_js(value: &JsValue) -> Result<Self, IdbError> {
        let number = |name: &str| {
            get(value, name)
                .as_f64()
                .filter(|n| *n >= 0.0 && n.fract() == 0.0)
                .map(|n| n as u64)
                .ok_or_else(|| IdbError::Malformed(format!("manifest field {name}")))
        };
        let chunk_bytes = number("chunk_bytes")?;
        if chunk_bytes == 0 {
            return Err(IdbError::Malformed("manifest chunk_bytes is 0".into()));
        }
        Ok(Manifest {
            size: number("size")?,
            chunk_bytes,
            sha256: get(value, "sha256").as_string(),
            complete: get(value, "complete").as_bool().unwrap_or(false),
            server_sha256: get(value, "server_sha256").as_bool().unwrap_or(false),
        })
    }
}

fn set(object: &Object, name: &str, value: &JsValue) {
    // Setting a property on a fresh plain object cannot fail.
    let _ = Reflect::set(object, &JsValue::from_str(name), value);
}

fn get(value: &JsValue, name: &str) -> JsValue {
    Reflect::get(value, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

/// The open weights database; its connection closes when it is dropped (a connection left open
/// until the garbage collector finds it would block another tab's upgrade).
pub struct Cache {
    db: IdbDatabase,
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.db.close();
    }
}

impl Cache {
    /// Opens (and if needed creates or upgrades) the database.
    pub async fn open() -> Result<Self, IdbError> {
        let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
        let db = crate::idb::open(scope.indexed_db(), DATABASE, VERSION, &[CHUNKS, FILES]).await?;
        Ok(Cache { db })
    }

    fn store(
        &self,
        name: &str,
        mode: IdbTransactionMode,
    ) -> Result<(IdbTransaction, IdbObjectStore), IdbError> {
        let tx = self.db.transaction_with_str_and_mode(name, mode).map_err(|e| IdbError::from_js(&e))?;
        let store = tx.object_store(name).map_err(|e| IdbError::from_js(&e))?;
        Ok((tx, store))
    }

    pub async fn manifest(&self, key: &FileKey) -> Result<Option<Manifest>, IdbError> {
        let (_, store) = self.store(FILES, IdbTransactionMode::Readonly)?;
        let value = request(&store.get(&key.manifest().into()).map_err(|e| IdbError::from_js(&e))?).await?;
        if value.is_undefined() { Ok(None) } else { Manifest::from_js(&value).map(Some) }
    }

    pub async fn put_manifest(&self, key: &FileKey, manifest: &Manifest) -> Result<(), IdbError> {
        let record = manifest.to_js();
        // The key's parts, so that listing never has to split the key (a revision may hold a `/`).
        set(&record, "repo", &JsValue::from_str(&key.repo));
        set(&record, "revision", &JsValue::from_str(&key.revision));
        set(&record, "file", &JsValue::from_str(&key.file));
        let (tx, store) = self.store(FILES, IdbTransactionMode::Readwrite)?;
        store.put_with_key(&record, &key.manifest().into()).map_err(|e| IdbError::from_js(&e))?;
        transaction_done(&tx).await
    }

    /// Whether chunk `index` has a record (unverified).
    pub async fn has_chunk(&self, key: &FileKey, index: u64) -> Result<bool, IdbError> {
        let (_, store) = self.store(CHUNKS, IdbTransactionMode::Readonly)?;
        let count = store.count_with_key(&key.chunk(index).into()).map_err(|e| IdbError::from_js(&e))?;
        Ok(request(&count).await?.as_f64().unwrap_or(0.0) > 0.0)
    }

    /// Chunk `index` and the check recorded when it was stored; the caller verifies them.
    pub async fn chunk(
        &self,
        key: &FileKey,
        index: u64,
    ) -> Result<Option<(Uint8Array, ChunkCheck)>, IdbError> {
        self.read_chunk(key, index).get().await
    }

    /// Starts reading chunk `index` now: the browser reads it while the caller works on the
    /// previous one ([`ChunkRead::get`] waits for it).
    pub fn read_chunk(&self, key: &FileKey, index: u64) -> ChunkRead {
        let started = self.store(CHUNKS, IdbTransactionMode::Readonly).and_then(|(_, store)| {
            let get = store.get(&key.chunk(index).into()).map_err(|e| IdbError::from_js(&e))?;
            Ok(JsFuture::from(crate::idb::request_promise(&get)))
        });
        ChunkRead { name: key.chunk(index), started }
    }

    /// Stores chunk `index` (a copy into a JS buffer) with its [`ChunkCheck`], waiting until it is
    /// committed.
    pub async fn put_chunk(&self, key: &FileKey, index: u64, data: &[u8]) -> Result<(), IdbError> {
        let record = Object::new();
        set(&record, "data", &Uint8Array::from(data));
        let sum = xxhash_rust::xxh3::xxh3_64(data);
        set(&record, "xxh3", &JsValue::from_str(&format!("{sum:016x}")));
        let (tx, store) = self.store(CHUNKS, IdbTransactionMode::Readwrite)?;
        store.put_with_key(&record, &key.chunk(index).into()).map_err(|e| IdbError::from_js(&e))?;
        transaction_done(&tx).await
    }

    /// Every file the cache has a manifest for.
    pub async fn list(&self) -> Result<Vec<(FileKey, Manifest)>, IdbError> {
        let (_, store) = self.store(FILES, IdbTransactionMode::Readonly)?;
        let keys: Array =
            request(&store.get_all_keys().map_err(|e| IdbError::from_js(&e))?).await?.unchecked_into();
        let values: Array =
            request(&store.get_all().map_err(|e| IdbError::from_js(&e))?).await?.unchecked_into();
        keys.iter()
            .zip(values.iter())
            .map(|(key, value)| {
                let recorded = ["repo", "revision", "file"].map(|name| get(&value, name).as_string());
                let key = match recorded {
                    [Some(repo), Some(revision), Some(file)] => FileKey { repo, revision, file },
                    _ => {
                        let key = key.as_string().unwrap_or_default();
                        FileKey::parse(&key).ok_or(IdbError::Malformed(format!("manifest key {key:?}")))?
                    }
                };
                Ok((key, Manifest::from_js(&value)?))
            })
            .collect()
    }

    /// The bytes of `key`'s chunks that are stored (unverified): what an incomplete download
    /// has so far.
    pub async fn stored_bytes(&self, key: &FileKey, manifest: &Manifest) -> Result<u64, IdbError> {
        let (_, store) = self.store(CHUNKS, IdbTransactionMode::Readonly)?;
        let prefix = format!("{}#", key.manifest());
        let range = prefix_range(&prefix)?;
        let keys: Array = request(&store.get_all_keys_with_key(&range).map_err(|e| IdbError::from_js(&e))?)
            .await?
            .unchecked_into();
        let chunks = manifest.size.div_ceil(manifest.chunk_bytes);
        Ok(keys
            .iter()
            .filter_map(|k| k.as_string()?.strip_prefix(&prefix)?.parse::<u64>().ok())
            .filter(|&index| index < chunks)
            .map(|index| {
                let start = index * manifest.chunk_bytes;
                (start + manifest.chunk_bytes).min(manifest.size) - start
            })
            .sum())
    }

    /// Deletes every file of `repo` (all revisions), or of every repository: manifests and
    /// chunks, including chunks a failed download left without a manifest.
    pub async fn delete_repo(&self, repo: Option<&str>) -> Result<(), IdbError> {
        let (tx, files, chunks) = self.both_stores()?;
        for store in [chunks, files] {
            let deleted = match repo {
                // Every key of the repository starts with `{repo}@`; no repository name has an `@`.
                Some(repo) => store.delete(&prefix_range(&format!("{repo}@"))?.into()),
                None => store.clear(),
            };
            deleted.map_err(|e| IdbError::from_js(&e))?;
        }
        transaction_done(&tx).await
    }

    /// Deletes a file: its manifest and every chunk.
    pub async fn delete(&self, key: &FileKey) -> Result<(), IdbError> {
        let (tx, files, chunks) = self.both_stores()?;
        files.delete(&key.manifest().into()).map_err(|e| IdbError::from_js(&e))?;
        // The chunk keys of this file are its manifest key, `#` and the index.
        chunks
            .delete(&prefix_range(&format!("{}#", key.manifest()))?.into())
            .map_err(|e| IdbError::from_js(&e))?;
        transaction_done(&tx).await
    }

    /// One read-write transaction over the manifests and the chunks, which change together: the
    /// transaction and its two stores (files, chunks).
    fn both_stores(&self) -> Result<(IdbTransaction, IdbObjectStore, IdbObjectStore), IdbError> {
        let tx = self
            .db
            .transaction_with_str_sequence_and_mode(
                &Array::of2(&CHUNKS.into(), &FILES.into()),
                IdbTransactionMode::Readwrite,
            )
            .map_err(|e| IdbError::from_js(&e))?;
        let files = tx.object_store(FILES).map_err(|e| IdbError::from_js(&e))?;
        let chunks = tx.object_store(CHUNKS).map_err(|e| IdbError::from_js(&e))?;
        Ok((tx, files, chunks))
    }
}

/// The keys that start with `prefix`: IndexedDB orders strings by UTF-16 code unit, and no key
/// holds U+FFFF.
fn prefix_range(prefix: &str) -> Result<web_sys::IdbKeyRange, IdbError> {
    web_sys::IdbKeyRange::bound(&prefix.into(), &format!("{prefix}\u{ffff}").into())
        .map_err(|e| IdbError::from_js(&e))
}

/// The cache's files grouped by repository and revision (sorted, files by path), as the page
/// lists them; `stored` is each file's stored bytes.
pub fn group_files(mut files: Vec<(FileKey, Manifest, u64)>) -> Vec<CachedModel> {
    files.sort_by(|(a, ..), (b, ..)| (&a.repo, &a.revision, &a.file).cmp(&(&b.repo, &b.revision, &b.file)));
    let mut models: Vec<CachedModel> = Vec::new();
    for (key, manifest, stored) in files {
        let file = CachedFile {
            file: key.file,
            size: manifest.size,
            stored: if manifest.complete { manifest.size } else { stored.min(manifest.size) },
            complete: manifest.complete,
        };
        match models.last_mut() {
            Some(model) if model.repo == key.repo && model.revision == key.revision => model.files.push(file),
            _ => models.push(CachedModel { repo: key.repo, revision: key.revision, files: vec![file] }),
        }
    }
    models
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(repo: &str, revision: &str, file: &str) -> FileKey {
        FileKey { repo: repo.into(), revision: revision.into(), file: file.into() }
    }

    fn manifest(size: u64, complete: bool) -> Manifest {
        Manifest { size, chunk_bytes: 16, sha256: None, complete, server_sha256: false }
    }

    #[test]
    fn manifest_keys_parse_back() {
        let k = key("test/tiny", "main", "unet/config.json");
        assert_eq!(FileKey::parse(&k.manifest()), Some(k));
        assert_eq!(FileKey::parse("no revision"), None);
    }

    #[test]
    fn files_group_by_repository_and_revision() {
        let models = group_files(vec![
            (key("b/x", "main", "config.json"), manifest(10, true), 0),
            (key("a/y", "v2", "unet/w.safetensors"), manifest(100, false), 48),
            (key("a/y", "v1", "model_index.json"), manifest(5, true), 5),
            (key("a/y", "v2", "model_index.json"), manifest(5, true), 0),
        ]);
        type Files<'a> = Vec<(&'a str, u64, bool)>;
        let summary: Vec<(&str, &str, Files<'_>)> = models
            .iter()
            .map(|m| {
                let files = m.files.iter().map(|f| (f.file.as_str(), f.stored, f.complete)).collect();
                (m.repo.as_str(), m.revision.as_str(), files)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a/y", "v1", vec![("model_index.json", 5, true)]),
                ("a/y", "v2", vec![("model_index.json", 5, true), ("unet/w.safetensors", 48, false)]),
                ("b/x", "main", vec![("config.json", 10, true)]),
            ]
        );
    }
}
