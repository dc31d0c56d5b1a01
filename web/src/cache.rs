//! The weights cache: model files kept by the browser, in chunks, so that a second visit loads
//! offline.
//!
//! A 1.7 GB UNet cannot be one IndexedDB value (nor one `ArrayBuffer`), so each file is stored as
//! chunks of a fixed size. Their bytes go into one file per weights file in the origin private
//! file system (OPFS), written and read through a synchronous access handle ([`ChunkFile`]): read
//! straight into the worker's buffer, some 15 times faster than IndexedDB's values (sd15.test
//! measures both). IndexedDB keeps the bookkeeping: one record per chunk, keyed by
//! `repo@revision/file#index`, with the chunk's checksum (checked on every read: a corrupted chunk
//! is fetched again rather than fed to the model) and where its bytes are, plus one [`Manifest`]
//! per file. Where the browser offers no OPFS (some private modes), and in records older builds
//! wrote, the bytes are in the chunk record itself; both are read. The store names carry a
//! version: a future layout gets new stores, and the old ones are deleted when the database is
//! upgraded.
//!
//! Every IndexedDB call is asynchronous; [`request`] and [`transaction_done`] turn its events into
//! futures.

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions, FileSystemGetFileOptions,
    FileSystemReadWriteOptions, FileSystemRemoveOptions, FileSystemSyncAccessHandle, IdbDatabase,
    IdbObjectStore, IdbTransaction, IdbTransactionMode, WorkerGlobalScope,
};

use crate::idb::{IdbError, request, transaction_done};
use crate::protocol::{CachedFile, CachedModel};

/// The database, and its version: bump it (and the store names) when the layout changes. The
/// chunks' folder in the origin private file system has the same name.
pub const DATABASE: &str = "controlnet-weights";
const VERSION: u32 = 1;
/// Chunk records, keyed by [`FileKey::chunk`]: `{ xxh3: hex, file, at, length }` where the bytes
/// are at byte `at` of the OPFS file `file` (a path under [`DATABASE`]), or `{ data: Uint8Array,
/// xxh3: hex }` where the browser has no OPFS and in records of older builds, some of which carry
/// `sha256: hex` instead of `xxh3` (see [`ChunkCheck`]).
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

/// A chunk record being read ([`Cache::read_chunk`]).
pub struct ChunkRead {
    name: String,
    started: Result<JsFuture, IdbError>,
}

impl ChunkRead {
    /// The chunk's record, once read; `None` if it has none.
    pub async fn get(self) -> Result<Option<StoredChunk>, IdbError> {
        let value = self.started?.await.map_err(|e| IdbError::from_js(&e))?;
        if value.is_undefined() {
            return Ok(None);
        }
        let name = self.name;
        let malformed = |what: &str| IdbError::Malformed(format!("chunk {name} {what}"));
        let xxh3 = get(&value, "xxh3").as_string().and_then(|hex| u64::from_str_radix(&hex, 16).ok());
        let check = match (xxh3, get(&value, "sha256").as_string()) {
            (Some(sum), _) => ChunkCheck::Xxh3(sum),
            (None, Some(sha256)) => ChunkCheck::Sha256(sha256),
            (None, None) => return Err(malformed("has no checksum")),
        };
        let place = match get(&value, "data").dyn_into::<Uint8Array>() {
            Ok(data) => Place::Inline(data),
            Err(_) => match (get(&value, "file").as_string(), whole(&value, "at"), whole(&value, "length")) {
                (Some(file), Some(at), Some(length)) => Place::InFile { file, at, length },
                _ => return Err(malformed("has neither data nor a place in a file")),
            },
        };
        Ok(Some(StoredChunk { place, check }))
    }
}

/// A chunk's record: where its bytes are, and their check.
pub struct StoredChunk {
    place: Place,
    pub check: ChunkCheck,
}

enum Place {
    /// In the record itself (no OPFS, or an older build's record).
    Inline(Uint8Array),
    /// `length` bytes at byte `at` of the OPFS file `file`.
    InFile { file: String, at: u64, length: u64 },
}

impl StoredChunk {
    /// Copies the chunk's bytes into `into`, resized to what was read: fewer bytes than recorded
    /// when the file lost them, none when they are in another file than `file` (the one open for
    /// this chunk's weights file) or no file is open. The caller checks length and checksum.
    pub fn read_into(&self, file: Option<&ChunkFile>, into: &mut Vec<u8>) -> Result<(), IdbError> {
        match &self.place {
            Place::Inline(data) => {
                into.resize(data.length() as usize, 0);
                data.copy_to(into);
            }
            Place::InFile { file: path, at, length } => match file.filter(|file| file.path == *path) {
                Some(file) => {
                    into.resize(*length as usize, 0);
                    let read = file.read(*at, into)?;
                    into.truncate(read);
                }
                None => into.clear(),
            },
        }
        Ok(())
    }
}

/// The OPFS file that holds one weights file's chunk bytes, open through a
/// `FileSystemSyncAccessHandle` until dropped. The handle locks the file: while one worker loads
/// it, another tab's worker cannot open it ([`IdbError::InUse`]) and loads without the cache.
pub struct ChunkFile {
    /// The file's path under [`DATABASE`], as chunk records name it.
    path: String,
    handle: FileSystemSyncAccessHandle,
}

impl Drop for ChunkFile {
    fn drop(&mut self) {
        // Closing flushes what was written and releases the lock.
        self.handle.close();
    }
}

impl ChunkFile {
    /// Reads into `into` from byte `at`: how many bytes there were.
    fn read(&self, at: u64, into: &mut [u8]) -> Result<usize, IdbError> {
        let read = self
            .handle
            .read_with_u8_array_and_options(into, &at_byte(at))
            .map_err(|e| IdbError::from_files(&e))?;
        Ok(read as usize)
    }

    /// Writes `data` at byte `at`.
    fn write(&self, at: u64, data: &[u8]) -> Result<(), IdbError> {
        let written = self
            .handle
            .write_with_u8_array_and_options(data, &at_byte(at))
            .map_err(|e| IdbError::from_files(&e))?;
        if written as usize != data.len() {
            return Err(IdbError::Files {
                name: "Error".into(),
                message: format!("{written} of {} bytes were written", data.len()),
            });
        }
        Ok(())
    }

    /// Makes what was written durable (before a manifest says the file is complete).
    pub fn flush(&self) -> Result<(), IdbError> {
        self.handle.flush().map_err(|e| IdbError::from_files(&e))
    }
}

/// A read or write at byte `at` of a chunk file.
fn at_byte(at: u64) -> FileSystemReadWriteOptions {
    let options = FileSystemReadWriteOptions::new();
    options.set_at(at as f64);
    options
}

/// The OPFS names for `key`: its repository's folder and its file in that folder, hashes of the
/// repository and of the manifest key (names hold any character; OPFS names may not).
fn opfs_names(key: &FileKey) -> (String, String) {
    (repo_folder(&key.repo), format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.manifest().as_bytes())))
}

fn repo_folder(repo: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(repo.as_bytes()))
}

/// Awaits a promise from the file system API, its errors as [`IdbError::from_files`].
async fn settled(promise: js_sys::Promise) -> Result<JsValue, IdbError> {
    JsFuture::from(promise).await.map_err(|e| IdbError::from_files(&e))
}

fn is_not_found(error: &IdbError) -> bool {
    matches!(error, IdbError::Files { name, .. } if name == "NotFoundError")
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
            whole(value, name).ok_or_else(|| IdbError::Malformed(format!("manifest field {name}")))
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

/// Field `name` of a record, if it is a whole number of bytes.
fn whole(value: &JsValue, name: &str) -> Option<u64> {
    get(value, name).as_f64().filter(|n| *n >= 0.0 && n.fract() == 0.0).map(|n| n as u64)
}

/// Whether `scope`'s browser has what chunk files need: `navigator.storage.getDirectory()` and
/// `FileSystemFileHandle.createSyncAccessHandle()` (browsers from before 2023 lack one or both;
/// every browser with WebGPU has them). Checked before either is called: a missing method would
/// throw out of the worker rather than fail a promise.
fn has_chunk_files(scope: &WorkerGlobalScope) -> bool {
    let has = |object: &JsValue, name: &str| {
        object.is_object() && Reflect::has(object, &JsValue::from_str(name)).unwrap_or(false)
    };
    let handle = get(scope, "FileSystemFileHandle");
    has(&get(&get(scope, "navigator"), "storage"), "getDirectory")
        && handle.is_function()
        && has(&get(&handle, "prototype"), "createSyncAccessHandle")
}

/// The open weights database; its connection closes when it is dropped (a connection left open
/// until the garbage collector finds it would block another tab's upgrade).
pub struct Cache {
    db: IdbDatabase,
    /// The origin private file system's root, where the browser has one.
    opfs: Option<FileSystemDirectoryHandle>,
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
        let opfs = if !has_chunk_files(&scope) {
            web_sys::console::warn_1(
                &"no origin private file system with synchronous access: chunks go into IndexedDB".into(),
            );
            None
        } else {
            match settled(scope.navigator().storage().get_directory()).await {
                Ok(root) => Some(root.unchecked_into()),
                Err(e) => {
                    web_sys::console::warn_1(
                        &format!("no origin private file system ({e}): chunks go into IndexedDB").into(),
                    );
                    None
                }
            }
        };
        Ok(Cache { db, opfs })
    }

    /// The OPFS folder of `repo`'s files (created if `create`); `None` where there is no OPFS or,
    /// unless created, no such folder.
    async fn repo_folder(
        &self,
        repo: &str,
        create: bool,
    ) -> Result<Option<FileSystemDirectoryHandle>, IdbError> {
        self.folder(&[DATABASE, &repo_folder(repo)], create).await
    }

    /// The folder that holds every repository's folder, if it exists.
    async fn weights_folder(&self) -> Result<Option<FileSystemDirectoryHandle>, IdbError> {
        self.folder(&[DATABASE], false).await
    }

    /// The OPFS folder at `path` (each folder created if `create`); `None` where there is no OPFS
    /// or, unless created, no such folder.
    async fn folder(
        &self,
        path: &[&str],
        create: bool,
    ) -> Result<Option<FileSystemDirectoryHandle>, IdbError> {
        let Some(root) = &self.opfs else { return Ok(None) };
        let options = FileSystemGetDirectoryOptions::new();
        options.set_create(create);
        let mut folder: FileSystemDirectoryHandle = root.clone();
        for name in path {
            match settled(folder.get_directory_handle_with_options(name, &options)).await {
                Ok(handle) => folder = handle.unchecked_into(),
                Err(e) if !create && is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(folder))
    }

    /// Opens (creating it if need be) the OPFS file for `key`'s chunk bytes; `None` where the
    /// browser has no OPFS: chunks then keep their bytes in their records.
    pub async fn open_file(&self, key: &FileKey) -> Result<Option<ChunkFile>, IdbError> {
        let Some(folder) = self.repo_folder(&key.repo, true).await? else { return Ok(None) };
        let (repo, name) = opfs_names(key);
        let options = FileSystemGetFileOptions::new();
        options.set_create(true);
        let file: FileSystemFileHandle =
            settled(folder.get_file_handle_with_options(&name, &options)).await?.unchecked_into();
        let handle = settled(file.create_sync_access_handle()).await?.unchecked_into();
        Ok(Some(ChunkFile { path: format!("{repo}/{name}"), handle }))
    }

    /// Removes `name` from `folder` (with what it holds); gone already is done.
    async fn remove(folder: &FileSystemDirectoryHandle, name: &str) -> Result<(), IdbError> {
        let options = FileSystemRemoveOptions::new();
        options.set_recursive(true);
        match settled(folder.remove_entry_with_options(name, &options)).await {
            Err(e) if !is_not_found(&e) => Err(e),
            _ => Ok(()),
        }
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

    /// Chunk `index`'s record: where its bytes are and the check recorded when it was stored.
    pub async fn chunk(&self, key: &FileKey, index: u64) -> Result<Option<StoredChunk>, IdbError> {
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

    /// Stores chunk `index`, which starts at byte `at` of its file: its bytes into `file` (into
    /// the record where there is none), then its record with its [`ChunkCheck`], waiting until
    /// that is committed.
    pub async fn put_chunk(
        &self,
        file: Option<&ChunkFile>,
        key: &FileKey,
        index: u64,
        at: u64,
        data: &[u8],
    ) -> Result<(), IdbError> {
        let record = Object::new();
        match file {
            Some(file) => {
                file.write(at, data)?;
                set(&record, "file", &JsValue::from_str(&file.path));
                set(&record, "at", &JsValue::from_f64(at as f64));
                set(&record, "length", &JsValue::from_f64(data.len() as f64));
            }
            None => set(&record, "data", &Uint8Array::from(data)),
        }
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

    /// Deletes every file of `repo` (all revisions), or of every repository: manifests, chunk
    /// records and chunk files, including chunks a failed download left without a manifest. The
    /// files go first: one open in another tab fails the deletion with nothing lost.
    pub async fn delete_repo(&self, repo: Option<&str>) -> Result<(), IdbError> {
        if let Some(root) = &self.opfs {
            match repo {
                Some(repo) => {
                    if let Some(folder) = self.weights_folder().await? {
                        Self::remove(&folder, &repo_folder(repo)).await?;
                    }
                }
                None => Self::remove(root, DATABASE).await?,
            }
        }
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

    /// Deletes a file: its chunk file (first: one open elsewhere fails the deletion with nothing
    /// lost), its manifest and every chunk record. The caller drops its own [`ChunkFile`] first.
    pub async fn delete(&self, key: &FileKey) -> Result<(), IdbError> {
        if let Some(folder) = self.repo_folder(&key.repo, false).await? {
            Self::remove(&folder, &opfs_names(key).1).await?;
        }
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
    fn chunk_files_are_named_by_repository_and_file() {
        let (folder, unet) = opfs_names(&key("a/b", "main", "unet/w.safetensors"));
        let (same_folder, vae) = opfs_names(&key("a/b", "main", "vae/w.safetensors"));
        let (_, other_revision) = opfs_names(&key("a/b", "v2", "unet/w.safetensors"));
        let (other_folder, _) = opfs_names(&key("a/c", "main", "unet/w.safetensors"));
        assert_eq!(folder, same_folder, "one folder per repository: deleting it deletes the repository");
        assert_eq!(folder, repo_folder("a/b"));
        assert_ne!(folder, other_folder);
        assert!(unet != vae && unet != other_revision, "one file per weights file and revision");
        // Names OPFS accepts whatever the repository or path holds: hex, of a fixed length.
        for name in [&folder, &unet] {
            assert!(name.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        }
        assert_eq!((folder.len(), unet.len()), (16, 32));
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
