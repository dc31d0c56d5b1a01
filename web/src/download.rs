//! One model file, from the weights cache where it is there and intact, from the network where
//! not, in chunks, straight into a consumer (the [`model::streaming::StreamLoader`]).
//!
//! The file is never whole in the wasm heap: the network's pieces are gathered into one chunk
//! (16 MiB by default), which is hashed, stored, handed on and dropped. A connection that breaks
//! costs at most the chunk in progress: the download resumes from the last complete chunk with
//! `Range: bytes=N-`, a few times, with growing pauses. Cached chunks are checked against the
//! SHA-256 recorded with them; one that does not match is fetched again (that chunk alone). The
//! whole file is checked against its size and, when the server names it, its SHA-256: the Hub's
//! JSON API gives it for LFS files ([`repo_files`]), since its `X-Linked-Etag` header is on a
//! cross-origin redirect that `fetch()` follows without showing it. A file checked against no
//! server hash is reported as unverified ([`Verified::Unchecked`]), never passed off as checked.

use std::collections::HashMap;
use std::fmt;

use js_sys::{Promise, Uint8Array};
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ReadableStreamDefaultReader, ReadableStreamReadResult, RequestInit, StorageEstimate};

use crate::cache::{Cache, ChunkFile, ChunkRead, FileKey, Manifest, StoredChunk};
use crate::idb::IdbError;
use crate::protocol::{FileLoaded, Verified};
use crate::scope::{now_ms, scope};

/// The cache's chunk size unless the request says otherwise.
pub const DEFAULT_CHUNK_BYTES: u64 = 16 << 20;
/// Consecutive failed attempts (no chunk completed in between) before giving up.
const MAX_ATTEMPTS: u32 = 5;
/// The first pause after a failure; doubled after each.
const FIRST_BACKOFF_MS: i32 = 250;

#[derive(Clone, Debug, PartialEq)]
pub enum DownloadError {
    /// The server answered with an error status.
    Http { url: String, status: u16 },
    /// The request or the body failed (after every retry).
    Network { url: String, message: String },
    /// The server sent something other than what was asked for.
    Protocol { url: String, message: String },
    /// The file's SHA-256 is not the one the server named.
    Sha256 { url: String, expected: String, actual: String },
    /// The consumer refused the bytes (not a safetensors file, a truncated one…).
    Consumer(String),
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadError::Http { url, status } => write!(f, "{url}: the server answered {status}"),
            DownloadError::Network { url, message } => write!(f, "{url}: the download failed: {message}"),
            DownloadError::Protocol { url, message } => write!(f, "{url}: {message}"),
            DownloadError::Sha256 { url, expected, actual } => {
                write!(
                    f,
                    "{url}: the file's SHA-256 is {actual}, not {expected}: it was corrupted on the way"
                )
            }
            DownloadError::Consumer(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DownloadError {}

/// Progress of one file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Bytes handed to the consumer so far.
    pub bytes: u64,
    pub total: u64,
    /// Whether the latest bytes came from the cache.
    pub from_cache: bool,
}

/// What happened to the cache while loading; the caller tells the user.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheProblem {
    pub error: IdbError,
    /// The file's size: the space it would need.
    pub needed: u64,
    /// Free space by `navigator.storage.estimate()`, when known.
    pub available: Option<u64>,
}

/// What a file that matched `manifest`'s hash was checked against: the server's SHA-256 when
/// the manifest's came from its server, else only its size and its chunks' own hashes.
fn verified(manifest: &Manifest) -> Verified {
    if manifest.server_sha256 && manifest.sha256.is_some() { Verified::Server } else { Verified::Unchecked }
}

/// What the server says of a file before it is fetched.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteFile {
    pub size: u64,
    /// The SHA-256 (hex) of LFS files, where the server names it.
    pub sha256: Option<String>,
}

/// Where the bytes come from and go.
pub struct Job<'a> {
    pub url: &'a str,
    /// The file as the page names it ([`FileLoaded::file`]).
    pub label: &'a str,
    pub key: &'a FileKey,
    /// `None` loads without caching (no IndexedDB, or the user's choice).
    pub cache: Option<&'a Cache>,
    pub chunk_bytes: u64,
    /// The size and hash the Hub's API gave, if it did; else a `HEAD` request asks for them
    /// (whose `X-Linked-*` headers a redirect hides).
    pub remote: Option<&'a RemoteFile>,
}

/// The number of chunks of a file and the byte range of chunk `index`.
pub fn chunk_count(size: u64, chunk_bytes: u64) -> u64 {
    size.div_ceil(chunk_bytes)
}

pub fn chunk_range(size: u64, chunk_bytes: u64, index: u64) -> (u64, u64) {
    let start = index * chunk_bytes;
    (start, (start + chunk_bytes).min(size))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 the Hub names for LFS files: `X-Linked-Etag` (or `ETag`) when it is 64 hex digits.
pub fn sha256_from_etag(etag: &str) -> Option<String> {
    let etag = etag.trim().trim_start_matches("W/").trim_matches('"');
    (etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit())).then(|| etag.to_ascii_lowercase())
}

/// Parses `Content-Range: bytes a-b/size` into (a, size).
pub fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let rest = header.trim().strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.parse().ok()?, size.parse().ok()?))
}

/// Loads `job`'s file into `consume`, chunk by chunk, in order, each byte once: the manifest
/// (the cache's, or a new one from the server's size and hash), then each chunk from the cache
/// where it is stored and checks out, else from the network with the chunks after it that the
/// cache lacks (retried with backoff), then the file's SHA-256 against the server's.
pub async fn load_file(
    job: Job<'_>,
    on_progress: &mut dyn FnMut(Progress),
    on_cache_problem: &mut dyn FnMut(&CacheProblem),
    consume: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<FileLoaded, DownloadError> {
    let mut file = FileLoad::open(job, on_progress, on_cache_problem, consume).await?;
    let mut failures = 0u32;
    while file.index < file.chunks {
        if file.read_cached().await? {
            continue;
        }
        let (message, progressed) = match file.fetch_missing().await? {
            Fetched::All => {
                failures = 0;
                continue;
            }
            Fetched::Failed { message, progressed } => (message, progressed),
        };
        // Chunks that arrived before the failure count: the backoff starts over.
        failures = if progressed { 1 } else { failures + 1 };
        file.loaded.retries += 1;
        if failures >= MAX_ATTEMPTS {
            return Err(DownloadError::Network {
                url: file.url.into(),
                message: format!("{message} ({failures} attempts)"),
            });
        }
        let resume = file.index * file.chunk_bytes;
        web_sys::console::warn_1(&format!("{}: {message}; resuming from byte {resume}", file.url).into());
        sleep(FIRST_BACKOFF_MS << (failures - 1).min(5)).await;
    }
    file.finish().await
}

/// What one network attempt did.
enum Fetched {
    /// Every chunk asked for arrived.
    All,
    /// The attempt failed, after some chunks arrived or before any did.
    Failed { message: String, progressed: bool },
}

/// The file's manifest: the cache's if it has one of this chunk size, else a new one from the
/// server's size and hash (the Hub's API, else a `HEAD` request), stored if the cache has room.
async fn file_manifest(
    url: &str,
    key: &FileKey,
    cache: &mut Option<&Cache>,
    chunk_bytes: u64,
    remote: Option<&RemoteFile>,
    on_cache_problem: &mut dyn FnMut(&CacheProblem),
) -> Result<Manifest, DownloadError> {
    if let Some(c) = *cache {
        match c.manifest(key).await {
            Ok(Some(manifest)) if manifest.chunk_bytes == chunk_bytes => return Ok(manifest),
            // Another chunk size: those records are of no use.
            Ok(Some(_)) => {
                let _ = c.delete(key).await;
            }
            Ok(None) => {}
            Err(error) => {
                give_up_cache(cache, on_cache_problem, CacheProblem { error, needed: 0, available: None });
            }
        }
    }
    let (size, sha256) = match remote {
        Some(remote) => (remote.size, remote.sha256.clone()),
        None => head(url).await?,
    };
    let server_sha256 = sha256.is_some();
    let manifest = Manifest { size, chunk_bytes, sha256, complete: false, server_sha256 };
    if let Some(c) = *cache {
        let available = free_space().await;
        let error = if available.is_some_and(|free| free < size) {
            Some(IdbError::QuotaExceeded(format!(
                "{} MiB are needed, {} MiB are free",
                mib(size),
                mib(available.unwrap_or(0))
            )))
        } else {
            c.put_manifest(key, &manifest).await.err()
        };
        if let Some(error) = error {
            give_up_cache(cache, on_cache_problem, CacheProblem { error, needed: size, available });
        }
    }
    Ok(manifest)
}

/// Tells the caller why the cache is no longer used, and stops using it.
fn give_up_cache(
    cache: &mut Option<&Cache>,
    on_cache_problem: &mut dyn FnMut(&CacheProblem),
    problem: CacheProblem,
) {
    on_cache_problem(&problem);
    *cache = None;
}

/// One file being loaded: where it stands, and where its bytes go.
struct FileLoad<'a> {
    url: &'a str,
    key: &'a FileKey,
    /// `None` once the cache has failed (the load goes on without it).
    cache: Option<&'a Cache>,
    /// The file holding this file's chunk bytes, open while the load lasts (`None` where the
    /// browser has no OPFS, or without the cache).
    file: Option<ChunkFile>,
    chunk_bytes: u64,
    manifest: Manifest,
    chunks: u64,
    /// The next chunk to hand out.
    index: u64,
    /// Bytes handed out so far.
    done: u64,
    loaded: FileLoaded,
    file_hash: Sha256,
    /// Whether the file's SHA-256 is being computed. A complete file matched it when it was
    /// stored: read back whole from the cache, each chunk's checksum is proof enough (the cold
    /// start's cost). The first chunk that must come from the network ends that: the chunks
    /// before it are hashed from the cache, and the file is checked as a download is.
    hashing: bool,
    /// Cached chunks are copied into this one buffer, reused: the wasm heap does not fragment.
    buffer: Vec<u8>,
    /// The next chunk's record, read from IndexedDB while this one is checked and consumed.
    ahead: Option<(u64, ChunkRead)>,
    last_progress: f64,
    on_progress: &'a mut dyn FnMut(Progress),
    on_cache_problem: &'a mut dyn FnMut(&CacheProblem),
    consume: &'a mut dyn FnMut(&[u8]) -> Result<(), String>,
}

impl<'a> FileLoad<'a> {
    /// Where a load of `job` starts: its manifest ([`file_manifest`]), nothing handed out yet.
    async fn open(
        job: Job<'a>,
        on_progress: &'a mut dyn FnMut(Progress),
        on_cache_problem: &'a mut dyn FnMut(&CacheProblem),
        consume: &'a mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Self, DownloadError> {
        let Job { url, label, key, mut cache, chunk_bytes, remote } = job;
        let chunk_bytes = chunk_bytes.max(1);
        let manifest = file_manifest(url, key, &mut cache, chunk_bytes, remote, on_cache_problem).await?;
        let mut file = None;
        if let Some(c) = cache {
            match c.open_file(key).await {
                Ok(opened) => file = opened,
                // Open in another tab, say: this load goes on from the network, uncached.
                Err(error) => give_up_cache(
                    &mut cache,
                    on_cache_problem,
                    CacheProblem { error, needed: 0, available: None },
                ),
            }
        }
        Ok(Self {
            url,
            key,
            cache,
            file,
            chunk_bytes,
            chunks: chunk_count(manifest.size, chunk_bytes),
            index: 0,
            done: 0,
            loaded: FileLoaded { file: label.to_owned(), size: manifest.size, ..FileLoaded::default() },
            file_hash: Sha256::new(),
            hashing: !(manifest.complete && manifest.sha256.is_some()),
            manifest,
            buffer: Vec::new(),
            ahead: None,
            last_progress: f64::NEG_INFINITY,
            on_progress,
            on_cache_problem,
            consume,
        })
    }

    fn give_up_cache(&mut self, error: IdbError, needed: u64, available: Option<u64>) {
        self.file = None;
        give_up_cache(&mut self.cache, self.on_cache_problem, CacheProblem { error, needed, available });
    }

    /// Hands out chunk `index` from the cache if it is there and checks out; `false` otherwise
    /// (it must come from the network).
    async fn read_cached(&mut self) -> Result<bool, DownloadError> {
        let Some(c) = self.cache else { return Ok(false) };
        let index = self.index;
        let read = match self.ahead.take() {
            Some((at, read)) if at == index => read,
            _ => c.read_chunk(self.key, index),
        };
        let stored = match timed_await(&mut self.loaded.times.wait_ms, read.get()).await {
            Ok(stored) => stored,
            Err(error) => {
                self.give_up_cache(error, self.manifest.size, None);
                return Ok(false);
            }
        };
        let Some(stored) = stored else { return Ok(false) };
        if index + 1 < self.chunks {
            self.ahead = Some((index + 1, c.read_chunk(self.key, index + 1)));
        }
        let checked = match self.take_checked(index, &stored) {
            Ok(checked) => checked,
            Err(error) => {
                self.give_up_cache(error, self.manifest.size, None);
                return Ok(false);
            }
        };
        if !checked {
            self.loaded.corrupt_chunks += 1;
            return Ok(false);
        }
        if self.hashing {
            timed(&mut self.loaded.times.hash_ms, || self.file_hash.update(&self.buffer));
        }
        timed(&mut self.loaded.times.consume_ms, || (self.consume)(&self.buffer))
            .map_err(DownloadError::Consumer)?;
        self.done += self.buffer.len() as u64;
        self.loaded.cached_bytes += self.buffer.len() as u64;
        (self.on_progress)(Progress { bytes: self.done, total: self.manifest.size, from_cache: true });
        self.index += 1;
        Ok(true)
    }

    /// Reads cached chunk `index` into the buffer; whether it has the chunk's length and its
    /// recorded check.
    fn take_checked(&mut self, index: u64, stored: &StoredChunk) -> Result<bool, IdbError> {
        let (start, end) = chunk_range(self.manifest.size, self.chunk_bytes, index);
        timed(&mut self.loaded.times.copy_ms, || stored.read_into(self.file.as_ref(), &mut self.buffer))?;
        Ok(timed(&mut self.loaded.times.hash_ms, || {
            self.buffer.len() as u64 == end - start && stored.check.matches(&self.buffer)
        }))
    }

    /// Starts hashing the file, from its first chunk, if a complete one was being read back
    /// unhashed: chunks `0..index` are read from the cache again and checked once more; one that
    /// changed or went away since fails the load (the next one starts over).
    async fn start_hashing(&mut self) -> Result<(), DownloadError> {
        if self.hashing {
            return Ok(());
        }
        self.hashing = true;
        let changed = || DownloadError::Protocol {
            url: self.url.into(),
            message: "the cached copy changed while it was read; load it again".into(),
        };
        for index in 0..self.index {
            let Some(c) = self.cache else { return Err(changed()) };
            let Ok(Some(stored)) = c.chunk(self.key, index).await else { return Err(changed()) };
            if !matches!(self.take_checked(index, &stored), Ok(true)) {
                return Err(changed());
            }
            self.file_hash.update(&self.buffer);
        }
        Ok(())
    }

    /// One network attempt: chunk `index` and the ones after it that the cache lacks, in one
    /// ranged request, each complete chunk stored, hashed and handed out as it arrives.
    async fn fetch_missing(&mut self) -> Result<Fetched, DownloadError> {
        self.start_hashing().await?;
        let (size, chunk_bytes) = (self.manifest.size, self.chunk_bytes);
        let mut last = self.index + 1;
        match self.cache {
            Some(c) => {
                while last < self.chunks && !c.has_chunk(self.key, last).await.unwrap_or(false) {
                    last += 1;
                }
            }
            None => last = self.chunks,
        }
        let (from, _) = chunk_range(size, chunk_bytes, self.index);
        let (_, to) = chunk_range(size, chunk_bytes, last - 1);
        let mut body = match Body::open(self.url, from, to, size).await {
            Ok(body) => body,
            Err(DownloadError::Network { message, .. }) => {
                return Ok(Fetched::Failed { message, progressed: false });
            }
            Err(DownloadError::Http { status, .. }) if status >= 500 || status == 429 => {
                let message = format!("the server answered {status}");
                return Ok(Fetched::Failed { message, progressed: false });
            }
            Err(other) => return Err(other),
        };
        let first = self.index;
        let (start, end) = chunk_range(size, chunk_bytes, self.index);
        let mut buffer = Vec::with_capacity((end - start) as usize);
        let outcome = loop {
            if self.index >= last {
                break None;
            }
            let piece = match timed_await(&mut self.loaded.times.wait_ms, body.next()).await {
                Ok(Some(piece)) => piece,
                Ok(None) => {
                    break Some(format!("the body ended after {} bytes", from + body.received));
                }
                Err(message) => break Some(message),
            };
            let length = piece.length() as usize;
            self.loaded.fetched_bytes += length as u64;
            let mut offset = 0;
            while offset < length {
                if self.index >= last {
                    return Err(DownloadError::Protocol {
                        url: self.url.into(),
                        message: "the server sent more bytes than asked for".into(),
                    });
                }
                let (start, end) = chunk_range(size, chunk_bytes, self.index);
                let take = ((end - start) as usize - buffer.len()).min(length - offset);
                let old = buffer.len();
                timed(&mut self.loaded.times.copy_ms, || {
                    buffer.resize(old + take, 0);
                    piece.subarray(offset as u32, (offset + take) as u32).copy_to(&mut buffer[old..]);
                });
                offset += take;
                if buffer.len() as u64 == end - start {
                    self.downloaded(&buffer).await?;
                    buffer.clear();
                }
            }
            let now = now_ms();
            if now - self.last_progress > 100.0 {
                self.last_progress = now;
                let bytes = self.done + buffer.len() as u64;
                (self.on_progress)(Progress { bytes, total: size, from_cache: false });
            }
        };
        body.cancel();
        Ok(match outcome {
            None => Fetched::All,
            Some(message) => Fetched::Failed { message, progressed: self.index > first },
        })
    }

    /// A complete chunk from the network: stored, hashed, handed out.
    async fn downloaded(&mut self, chunk: &[u8]) -> Result<(), DownloadError> {
        let at = self.index * self.chunk_bytes;
        if let Some(c) = self.cache
            && let Err(error) = timed_await(
                &mut self.loaded.times.wait_ms,
                c.put_chunk(self.file.as_ref(), self.key, self.index, at, chunk),
            )
            .await
        {
            let available = free_space().await;
            // Free what this file took (closed first: an open file cannot be removed); the load
            // goes on without the cache.
            self.file = None;
            let _ = c.delete(self.key).await;
            self.give_up_cache(error, self.manifest.size, available);
        }
        timed(&mut self.loaded.times.hash_ms, || self.file_hash.update(chunk));
        timed(&mut self.loaded.times.consume_ms, || (self.consume)(chunk))
            .map_err(DownloadError::Consumer)?;
        self.done += chunk.len() as u64;
        self.index += 1;
        (self.on_progress)(Progress { bytes: self.done, total: self.manifest.size, from_cache: false });
        Ok(())
    }

    /// The file's SHA-256 against the server's, and the manifest marked complete.
    async fn finish(mut self) -> Result<FileLoaded, DownloadError> {
        let manifest = self.manifest.clone();
        if !self.hashing {
            // Read back whole from the cache: the hash it matched when it was stored.
            self.loaded.sha256 = manifest.sha256.clone().unwrap_or_default();
            self.loaded.verified = verified(&manifest);
            self.loaded.stored = true;
            return Ok(self.loaded);
        }
        self.loaded.sha256 = hex(&self.file_hash.clone().finalize());
        if let Some(expected) = manifest.sha256.as_ref().filter(|expected| **expected != self.loaded.sha256) {
            if let Some(c) = self.cache {
                self.file = None;
                let _ = c.delete(self.key).await;
            }
            return Err(DownloadError::Sha256 {
                url: self.url.into(),
                expected: expected.clone(),
                actual: self.loaded.sha256.clone(),
            });
        }
        self.loaded.verified = verified(&manifest);
        if let Some(c) = self.cache {
            let complete = Manifest { sha256: Some(self.loaded.sha256.clone()), complete: true, ..manifest };
            let stored = match self.file.as_ref().map_or(Ok(()), ChunkFile::flush) {
                Ok(()) => c.put_manifest(self.key, &complete).await,
                Err(error) => Err(error),
            };
            match stored {
                Ok(()) => self.loaded.stored = true,
                Err(error) => self.give_up_cache(error, self.manifest.size, None),
            }
        }
        Ok(self.loaded)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

/// Runs `work`, adding the milliseconds it took to `total` (one of [`LoadTimes`]' stages).
fn timed<T>(total: &mut f64, work: impl FnOnce() -> T) -> T {
    let started = now_ms();
    let result = work();
    *total += now_ms() - started;
    result
}

/// Awaits `future`, adding the milliseconds it took to `total`.
async fn timed_await<T>(total: &mut f64, future: impl Future<Output = T>) -> T {
    let started = now_ms();
    let result = future.await;
    *total += now_ms() - started;
    result
}

async fn sleep(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = JsFuture::from(promise).await;
}

/// Free space for this origin, by `navigator.storage.estimate()`.
pub async fn free_space() -> Option<u64> {
    let estimate = scope().navigator().storage().estimate().ok()?;
    let estimate: StorageEstimate = JsFuture::from(estimate).await.ok()?.unchecked_into();
    let (quota, usage) = (estimate.get_quota()?, estimate.get_usage().unwrap_or(0.0));
    Some((quota - usage).max(0.0) as u64)
}

fn describe(error: &JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| format!("{error:?}"))
}

async fn fetch(
    url: &str,
    method: &str,
    range: Option<(u64, u64)>,
) -> Result<web_sys::Response, DownloadError> {
    let network = |message: String| DownloadError::Network { url: url.into(), message };
    let init = RequestInit::new();
    init.set_method(method);
    if let Some((from, to)) = range {
        let headers = web_sys::Headers::new().map_err(|e| network(describe(&e)))?;
        headers.set("Range", &format!("bytes={from}-{}", to - 1)).map_err(|e| network(describe(&e)))?;
        init.set_headers_headers(&headers);
    }
    let request = web_sys::Request::new_with_str_and_init(url, &init).map_err(|e| network(describe(&e)))?;
    let response = match JsFuture::from(scope().fetch_with_request(&request)).await {
        Ok(response) => response,
        // Offline where a dedicated worker's requests bypass the service worker (Firefox): the
        // site's own files (the shapes models) from Cache Storage, where sw.js precached them.
        Err(error) => match range {
            None => precached(url).await.ok_or_else(|| network(describe(&error)))?,
            Some(_) => return Err(network(describe(&error))),
        },
    };
    let response: web_sys::Response = response.unchecked_into();
    if !response.ok() {
        return Err(DownloadError::Http { url: url.into(), status: response.status() });
    }
    Ok(response)
}

/// `url`'s response in the service worker's caches (the site's own files), if any.
async fn precached(url: &str) -> Option<JsValue> {
    let caches = scope().caches().ok()?;
    // As sw.js looks them up: the Hub API's `?blobs=true` is not part of the stored name.
    let options = web_sys::CacheQueryOptions::new();
    options.set_ignore_search(true);
    let found = JsFuture::from(caches.match_with_str_and_options(url, &options)).await.ok()?;
    (!found.is_undefined()).then_some(found)
}

/// The file's size and, when the server names it, its SHA-256.
async fn head(url: &str) -> Result<(u64, Option<String>), DownloadError> {
    let mut attempt = 0;
    let response = loop {
        match fetch(url, "HEAD", None).await {
            Ok(response) => break response,
            Err(DownloadError::Network { message, .. }) if attempt + 1 < MAX_ATTEMPTS => {
                web_sys::console::warn_1(&format!("{url}: {message}; trying again").into());
            }
            Err(DownloadError::Http { status, .. }) if status >= 500 && attempt + 1 < MAX_ATTEMPTS => {}
            Err(error) => return Err(error),
        }
        attempt += 1;
        sleep(FIRST_BACKOFF_MS << attempt.min(5)).await;
    };
    let size = size_header(&response).ok_or_else(|| DownloadError::Protocol {
        url: url.into(),
        message: "the server did not say the file's size".into(),
    })?;
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let sha256 = header("x-linked-etag").or_else(|| header("etag")).and_then(|e| sha256_from_etag(&e));
    Ok((size, sha256))
}

/// The size a response names: the Hub's `X-Linked-Size` for LFS files (its redirect's target
/// carries it), else `Content-Length`.
fn size_header(response: &web_sys::Response) -> Option<u64> {
    let headers = response.headers();
    let header = |name: &str| headers.get(name).ok().flatten();
    header("x-linked-size").or_else(|| header("content-length")).and_then(|s| s.trim().parse().ok())
}

/// What the Hub's JSON API (`{base}/api/models/{repo}/revision/{revision}?blobs=true`) says of
/// every file of a repository: its size, and the SHA-256 of LFS files. `None` where the server
/// has no such API (a plain mirror) or it fails: the files then load by `HEAD` and unverified.
pub async fn repo_files(base_url: &str, repo: &str, revision: &str) -> Option<HashMap<String, RemoteFile>> {
    let url = crate::protocol::hub_api_url(base_url, repo, revision);
    let response = fetch(&url, "GET", None).await.ok()?;
    let text = JsFuture::from(response.text().ok()?).await.ok()?.as_string()?;
    parse_repo_files(&text)
}

/// The `siblings` of the Hub's model API answer.
pub fn parse_repo_files(json: &str) -> Option<HashMap<String, RemoteFile>> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let files = value["siblings"]
        .as_array()?
        .iter()
        .filter_map(|sibling| {
            let path = sibling["rfilename"].as_str()?.to_owned();
            let lfs = &sibling["lfs"];
            let size = lfs["size"].as_u64().or_else(|| sibling["size"].as_u64())?;
            let sha256 = lfs["sha256"].as_str().and_then(sha256_from_etag);
            Some((path, RemoteFile { size, sha256 }))
        })
        .collect();
    Some(files)
}

/// A file's size by one `HEAD` request, without retries: for a progress bar's total, where
/// `None` only costs precision (the download itself retries and reports its own errors).
pub async fn remote_size(url: &str) -> Option<u64> {
    size_header(&fetch(url, "HEAD", None).await.ok()?)
}

/// `navigator.storage.estimate()`: the bytes this origin uses and its quota, where the browser
/// says (each `None` where it does not, both where there is no storage manager).
pub async fn storage_estimate() -> (Option<u64>, Option<u64>) {
    let Ok(promise) = scope().navigator().storage().estimate() else {
        return (None, None);
    };
    match JsFuture::from(promise).await {
        Ok(estimate) => {
            let estimate: StorageEstimate = estimate.unchecked_into();
            (estimate.get_usage().map(|u| u as u64), estimate.get_quota().map(|q| q as u64))
        }
        Err(_) => (None, None),
    }
}

/// A response body being read.
struct Body {
    reader: ReadableStreamDefaultReader,
    received: u64,
}

impl Body {
    /// `GET` bytes `from..to` of a file of `size` bytes.
    async fn open(url: &str, from: u64, to: u64, size: u64) -> Result<Self, DownloadError> {
        let whole = from == 0 && to == size;
        let response = fetch(url, "GET", (!whole).then_some((from, to))).await?;
        let protocol = |message: String| DownloadError::Protocol { url: url.into(), message };
        if response.status() == 206 {
            let range = response.headers().get("content-range").ok().flatten().unwrap_or_default();
            match parse_content_range(&range) {
                Some((start, total)) if start == from && total == size => {}
                _ => return Err(protocol(format!("asked for bytes {from}-{}, got {range:?}", to - 1))),
            }
        } else if !whole {
            return Err(protocol("the server ignores Range requests".into()));
        }
        let stream = response.body().ok_or_else(|| protocol("the response has no body".into()))?;
        let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
        Ok(Body { reader, received: 0 })
    }

    /// The next piece of the body, `None` at its end.
    async fn next(&mut self) -> Result<Option<Uint8Array>, String> {
        let result = JsFuture::from(self.reader.read()).await.map_err(|e| describe(&e))?;
        let result: ReadableStreamReadResult = result.unchecked_into();
        if result.get_done().unwrap_or(false) {
            return Ok(None);
        }
        let piece: Uint8Array =
            result.get_value().dyn_into().map_err(|_| "a body piece is not bytes".to_owned())?;
        self.received += u64::from(piece.length());
        Ok(Some(piece))
    }

    fn cancel(self) {
        let _ = self.reader.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_file() {
        assert_eq!(chunk_count(0, 4), 0);
        assert_eq!(chunk_count(8, 4), 2);
        assert_eq!(chunk_count(9, 4), 3);
        assert_eq!(chunk_range(9, 4, 2), (8, 9));
    }

    #[test]
    fn headers_parse() {
        let sha = "a".repeat(64);
        assert_eq!(sha256_from_etag(&format!("\"{sha}\"")), Some(sha.clone()));
        assert_eq!(sha256_from_etag("W/\"abc\""), None);
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, 1000)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }

    #[test]
    fn the_hubs_api_names_sizes_and_lfs_hashes() {
        let sha = "b".repeat(64);
        let json = format!(
            r#"{{"id": "o/r", "siblings": [{{"rfilename": "model_index.json", "size": 541}},
               {{"rfilename": "unet/w.safetensors", "size": 999, "lfs": {{"sha256": "{sha}", "size": 1000}}}},
               {{"rfilename": "no-size.txt"}}]}}"#
        );
        let files = parse_repo_files(&json).unwrap();
        assert_eq!(files["model_index.json"], RemoteFile { size: 541, sha256: None });
        assert_eq!(files["unet/w.safetensors"], RemoteFile { size: 1000, sha256: Some(sha) });
        assert!(!files.contains_key("no-size.txt"));
        assert_eq!(parse_repo_files("<html>"), None);
    }
}
