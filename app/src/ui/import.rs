//! Importing a diffusers folder the visitor already has: picked with the browser's folder picker,
//! copied into the weights cache slice by slice by the GPU worker, never sent anywhere.
//!
//! A Stable Diffusion pipeline folder (`model_index.json` at its root) or a ControlNet folder
//! (`config.json` and the weights at its root) becomes the cache's repository `local/{folder}`,
//! which the models panel then loads like any other: from the cache, verified chunk by chunk.

use std::collections::HashMap;

use futures_channel::oneshot;
use js_sys::{Reflect, Uint8Array};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web::models::LOCAL_OWNER;
use web::protocol::{Request, Response};
use web_sys::{File, HtmlInputElement};

use crate::gpu::describe_js_error;
use crate::session::GpuSession;

/// The worker stores 16 MiB chunks; each message carries one.
const SLICE_BYTES: u64 = 16 << 20;

/// What an imported folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderKind {
    /// A diffusers pipeline (`model_index.json`).
    Pipeline,
    /// A single model, such as a ControlNet (`config.json`).
    Model,
}

/// A folder in the cache, ready to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedFolder {
    /// `local/{folder}`.
    pub repo: String,
    pub kind: FolderKind,
    /// `fp16` when the folder has `*.fp16.safetensors` weights (diffusers' `variant="fp16"`).
    pub variant: Option<String>,
}

/// The files of a folder worth importing: configurations, tokenizer files, safetensors weights.
/// PyTorch pickles (`.bin`, `.ckpt`), images and the rest stay on the disk.
fn wanted(path: &str) -> bool {
    [".json", ".txt", ".safetensors"].iter().any(|ext| path.ends_with(ext))
}

/// Splits `folder/inner/path` into the folder's name and the path inside it.
fn split_relative(path: &str) -> Option<(&str, &str)> {
    path.split_once('/').filter(|(folder, inner)| !folder.is_empty() && !inner.is_empty())
}

/// A folder's name as a repository name: what the Hub allows (letters, digits, `-`, `_`, `.`),
/// every other character as `-`.
fn repo_name(folder: &str) -> String {
    let name: String = folder
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c } else { '-' })
        .collect();
    if name.trim_matches('-').is_empty() { "folder".to_owned() } else { name }
}

/// What the folder is, from the files at its root.
fn kind_of<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<FolderKind> {
    let mut kind = None;
    for path in paths {
        match path {
            "model_index.json" => return Some(FolderKind::Pipeline),
            "config.json" => kind = Some(FolderKind::Model),
            _ => {}
        }
    }
    kind
}

/// The worker's answers the import waits for, by request id (one slice in flight at a time).
#[derive(Default)]
struct Replies(HashMap<u32, oneshot::Sender<Response>>);

impl Replies {
    /// Request `id` is going out: its answer will come through the receiver.
    fn expect(&mut self, id: u32) -> oneshot::Receiver<Response> {
        let (sender, receiver) = oneshot::channel();
        self.0.insert(id, sender);
        receiver
    }

    /// Hands `response` to the import waiting for request `id`, if one is.
    fn deliver(&mut self, id: u32, response: &Response) {
        if let Some(sender) = self.0.remove(&id) {
            let _ = sender.send(response.clone());
        }
    }

    /// The worker is gone and will never answer: every wait ends with `message`.
    fn fail_all(&mut self, message: &str) {
        for (_, sender) in self.0.drain() {
            let _ = sender.send(Response::Error { id: None, message: message.to_owned() });
        }
    }
}

#[component]
pub fn LocalImport(
    /// Told of each folder once every file of it is in the cache.
    on_imported: Callback<ImportedFolder>,
) -> impl IntoView {
    let session = GpuSession::use_session();
    let progress = RwSignal::new(None::<(String, f64, f64)>);
    let message = RwSignal::new(None::<Result<String, String>>);
    let busy = RwSignal::new(false);
    let replies = StoredValue::new(Replies::default());
    session.listen(move |response| {
        if let Response::ImportProgress { id, .. }
        | Response::Imported { id, .. }
        | Response::Error { id: Some(id), .. } = response
        {
            replies.update_value(|replies| replies.deliver(*id, response));
        }
    });
    // A worker that dies never answers: the slice waiting for it ends the import with the reason,
    // so that the picker works again once the worker is restarted.
    Effect::new(move || {
        let Some(reason) = session.failure.get() else { return };
        let message =
            format!("The GPU worker stopped during the import ({reason}); restart it and import again.");
        replies.update_value(|replies| replies.fail_all(&message));
    });
    let call = move |request: Request, id: u32| {
        let reply = replies.try_update_value(|replies| replies.expect(id));
        session.send(request);
        async move { reply?.await.ok() }
    };
    let import = move |files: Vec<File>| {
        spawn_local(async move {
            busy.set(true);
            message.set(None);
            let result = import_folder(session, files, call, progress).await;
            progress.set(None);
            busy.set(false);
            match result {
                Ok(folder) => {
                    message.set(Some(Ok(format!("Imported {} into this browser.", folder.repo))));
                    on_imported.run(folder);
                }
                Err(e) => message.set(Some(Err(e))),
            }
        });
    };
    let on_change = move |event: leptos::ev::Event| {
        let files = picked(&event);
        if !files.is_empty() {
            import(files);
        }
    };

    view! {
        <div class="local-import" data-testid="local-import">
            <label>
                "Import a diffusers folder from this computer: "
                <input
                    type="file"
                    prop:webkitdirectory=true
                    multiple
                    data-testid="import-folder"
                    disabled=move || busy.get()
                    on:change=on_change
                />
            </label>
            <p class="hint">
                "A Stable Diffusion folder (with model_index.json) or a ControlNet folder (config.json and "
                "its .safetensors). Nothing is uploaded: the files are copied into this browser's cache."
            </p>
            <ImportStatus progress message />
        </div>
    }
}

/// The files the folder picker gave, the picker emptied (the same folder picked again must fire
/// `change` again).
fn picked(event: &leptos::ev::Event) -> Vec<File> {
    let Some(input) = event.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok()) else {
        return Vec::new();
    };
    let files = input
        .files()
        .map(|list| (0..list.length()).filter_map(|i| list.item(i)).collect())
        .unwrap_or_default();
    input.set_value("");
    files
}

/// The file being imported and how far, or how the import ended.
#[component]
fn ImportStatus(
    progress: RwSignal<Option<(String, f64, f64)>>,
    message: RwSignal<Option<Result<String, String>>>,
) -> impl IntoView {
    view! {
        {move || progress.get().map(|(file, done, total)| view! {
            <p data-testid="import-progress">
                <progress max=total value=done></progress>
                " " {file}
            </p>
        })}
        {move || match message.get() {
            Some(Ok(text)) => Some(view! { <p data-testid="import-done">{text}</p> }.into_any()),
            Some(Err(text)) => Some(view! { <p class="error" data-testid="import-error">{text}</p> }.into_any()),
            None => None,
        }}
    }
}

/// Sends every wanted file of the picked folder to the worker, slice by slice.
async fn import_folder<F, Fut>(
    session: GpuSession,
    files: Vec<File>,
    call: F,
    progress: RwSignal<Option<(String, f64, f64)>>,
) -> Result<ImportedFolder, String>
where
    F: Fn(Request, u32) -> Fut,
    Fut: std::future::Future<Output = Option<Response>>,
{
    let mut entries = Vec::new();
    let mut folder = None::<String>;
    for file in files {
        let relative = Reflect::get(&file, &"webkitRelativePath".into())
            .ok()
            .and_then(|v| v.as_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| file.name());
        let Some((top, inner)) = split_relative(&relative) else { continue };
        match &folder {
            None => folder = Some(top.to_owned()),
            Some(name) if name != top => return Err("pick one folder at a time".into()),
            Some(_) => {}
        }
        if wanted(inner) {
            entries.push((inner.to_owned(), file));
        }
    }
    let folder = folder.ok_or("pick a folder (the browser gave no folder paths)")?;
    let kind = kind_of(entries.iter().map(|(path, _)| path.as_str())).ok_or_else(|| {
        format!("{folder} is not a diffusers folder: it has neither model_index.json nor config.json")
    })?;
    if !entries.iter().any(|(path, _)| path.ends_with(".safetensors")) {
        return Err(format!(
            "{folder} has no .safetensors weights (PyTorch .bin and .ckpt files cannot be loaded safely)"
        ));
    }
    let repo = format!("{LOCAL_OWNER}/{}", repo_name(&folder));
    let variant =
        entries.iter().any(|(path, _)| path.ends_with(".fp16.safetensors")).then(|| "fp16".to_owned());
    let total: f64 = entries.iter().map(|(_, file)| file.size()).sum();
    let mut done = 0.0;
    for (path, file) in &entries {
        let size = file.size() as u64;
        let mut offset = 0u64;
        loop {
            let end = (offset + SLICE_BYTES).min(size);
            let slice = file
                .slice_with_f64_and_f64(offset as f64, end as f64)
                .map_err(|e| format!("{path}: {}", describe_js_error(&e)))?;
            let buffer = JsFuture::from(slice.array_buffer())
                .await
                .map_err(|e| format!("{path} could not be read: {}", describe_js_error(&e)))?;
            let bytes = Uint8Array::new(&buffer).to_vec();
            let id = session.next_id();
            let request =
                Request::ImportChunk { id, repo: repo.clone(), file: path.clone(), size, offset, bytes };
            match call(request, id).await {
                Some(Response::ImportProgress { .. }) | Some(Response::Imported { .. }) => {}
                Some(Response::Error { message, .. }) => return Err(message),
                other => return Err(format!("unexpected answer while importing {path}: {other:?}")),
            }
            done += (end - offset) as f64;
            progress.set(Some((format!("{repo}/{path}"), done, total)));
            offset = end;
            if offset >= size {
                break;
            }
        }
    }
    Ok(ImportedFolder { repo, kind, variant })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_recognised_by_their_root_files() {
        assert_eq!(kind_of(["unet/config.json", "model_index.json"]), Some(FolderKind::Pipeline));
        assert_eq!(kind_of(["config.json", "diffusion_pytorch_model.safetensors"]), Some(FolderKind::Model));
        assert_eq!(kind_of(["unet/config.json"]), None);
        assert!(wanted("unet/diffusion_pytorch_model.fp16.safetensors"));
        assert!(wanted("tokenizer/merges.txt"));
        assert!(!wanted("v1-5-pruned.ckpt") && !wanted("unet/diffusion_pytorch_model.bin"));
        assert_eq!(split_relative("sd15/unet/config.json"), Some(("sd15", "unet/config.json")));
        assert_eq!(split_relative("config.json"), None);
        assert_eq!(repo_name("My SD 1.5 (fp16)"), "My-SD-1-5--fp16-");
        assert_eq!(repo_name("..."), "folder");
    }

    #[test]
    fn an_answer_reaches_its_request_and_a_dead_worker_ends_every_wait() {
        let mut replies = Replies::default();
        let mut first = replies.expect(1);
        let mut second = replies.expect(2);
        let progress = Response::ImportProgress { id: 1, file: "a".into(), bytes: 3, total: 9 };
        replies.deliver(1, &progress);
        replies.deliver(7, &progress);
        assert_eq!(first.try_recv(), Ok(Some(progress)));
        assert_eq!(second.try_recv(), Ok(None), "not answered yet");
        replies.fail_all("gone");
        match second.try_recv() {
            Ok(Some(Response::Error { id: None, message })) => assert_eq!(message, "gone"),
            other => panic!("{other:?}"),
        }
        assert!(replies.0.is_empty());
    }
}
