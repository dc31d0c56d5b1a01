//! What this browser keeps of the models: the weights cache (IndexedDB, read and emptied by the
//! GPU worker), the storage estimate, and whether the browser may evict it.

use js_sys::{Function, Promise, Reflect};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web::protocol::{CachedModel, Request, Response};

use super::format;
use crate::gpu::describe_js_error;
use crate::session::GpuSession;

/// The cache's contents and the storage estimate, as the latest `CacheContents` gave them.
#[derive(Clone, Debug, PartialEq)]
struct Contents {
    models: Vec<CachedModel>,
    usage: Option<u64>,
    quota: Option<u64>,
}

/// The cache view. It asks the worker on mount, whenever `loads` changes (after each load), after
/// a restart of the worker and on the refresh button.
#[component]
pub fn CacheView(
    /// Counts the loads that finished.
    #[prop(into)]
    loads: Signal<u32>,
) -> impl IntoView {
    let cache = CacheQueries::new(GpuSession::use_session());
    cache.session.listen(move |response| cache.answer(response));
    Effect::watch(move || loads.get(), move |_, _, _| cache.refresh(), true);
    // A restarted worker never answers what the old one was asked.
    Effect::watch(
        move || cache.session.restarts().get(),
        move |_, _, _| {
            cache.asked.set_value(Vec::new());
            cache.refresh();
        },
        false,
    );
    let persisted = RwSignal::new(None::<Result<bool, String>>);
    spawn_local(async move { persisted.set(Some(persist().await)) });

    let CacheQueries { contents, error, busy, .. } = cache;
    view! {
        <section class="cache-view" data-testid="cache-view" aria-busy=move || busy.get().to_string()>
            <h3>"Stored in this browser"</h3>
            <StorageLines contents persisted />
            {move || error.get().map(|message| view! {
                <p class="warning" data-testid="cache-error" role="alert">{message}</p>
            })}
            {move || {
                let models = contents.with(|c| c.as_ref().map(|c| c.models.clone())).unwrap_or_default();
                if contents.with(Option::is_some) && models.is_empty() {
                    return view! { <p data-testid="cache-empty">"No models are stored."</p> }.into_any();
                }
                let delete = move |repo| cache.delete(Some(repo));
                view! {
                    <table class="cache-models">
                        <tbody>
                            {models.into_iter().map(|model| view! { <CachedRow model delete /> }).collect_view()}
                        </tbody>
                    </table>
                }
                    .into_any()
            }}
            <div class="cache-actions">
                <button data-testid="cache-refresh" on:click=move |_| cache.refresh() disabled=move || busy.get()>
                    "Refresh"
                </button>
                <button
                    data-testid="cache-delete-all"
                    class="danger"
                    on:click=move |_| cache.delete_all()
                    disabled=move || contents.with(|c| c.as_ref().is_none_or(|c| c.models.is_empty()))
                >
                    "Delete all"
                </button>
            </div>
        </section>
    }
}

/// The view's requests to the worker and what their answers say. Cheap to copy.
#[derive(Clone, Copy)]
struct CacheQueries {
    session: GpuSession,
    contents: RwSignal<Option<Contents>>,
    error: RwSignal<Option<String>>,
    /// Requests of this view not answered yet, and the latest one applied: an older listing that
    /// arrives late must not undo a newer deletion.
    asked: StoredValue<Vec<u32>>,
    applied: StoredValue<u32>,
    busy: RwSignal<bool>,
}

impl CacheQueries {
    fn new(session: GpuSession) -> Self {
        Self {
            session,
            contents: RwSignal::new(None),
            error: RwSignal::new(None),
            asked: StoredValue::new(Vec::new()),
            applied: StoredValue::new(0),
            busy: RwSignal::new(false),
        }
    }

    fn ask(self, request: impl FnOnce(u32) -> Request) {
        let id = self.session.next_id();
        self.asked.update_value(|asked| asked.push(id));
        self.busy.set(true);
        self.session.send(request(id));
    }

    fn refresh(self) {
        self.ask(|id| Request::CacheList { id });
    }

    /// Deletes one repository's files, or (`None`) everything.
    fn delete(self, repo: Option<String>) {
        self.ask(move |id| Request::CacheDelete { id, repo });
    }

    /// Deletes everything, once the visitor confirms.
    fn delete_all(self) {
        let sure = web_sys::window()
            .and_then(|window| {
                window
                    .confirm_with_message(
                        "Delete every model this page has stored in this browser? The next load will \
                         download them again.",
                    )
                    .ok()
            })
            .unwrap_or(false);
        if sure {
            self.delete(None);
        }
    }

    fn answer(self, response: &Response) {
        let id = match response {
            Response::CacheContents { id, .. } | Response::Error { id: Some(id), .. } => *id,
            _ => return,
        };
        let ours = self.asked.try_update_value(|asked| {
            let found = asked.contains(&id);
            asked.retain(|&a| a != id);
            (found, asked.is_empty())
        });
        let Some((true, none_left)) = ours else { return };
        if none_left {
            self.busy.set(false);
        }
        match response {
            Response::CacheContents { models, usage, quota, .. } if id >= self.applied.get_value() => {
                self.applied.set_value(id);
                self.error.set(None);
                self.contents.set(Some(Contents { models: models.clone(), usage: *usage, quota: *quota }));
            }
            Response::Error { message, .. } => self.error.set(Some(message.clone())),
            _ => {}
        }
    }
}

/// How much the browser stores for this site, and whether it may evict it.
#[component]
fn StorageLines(
    contents: RwSignal<Option<Contents>>,
    persisted: RwSignal<Option<Result<bool, String>>>,
) -> impl IntoView {
    view! {
        <p data-testid="storage-estimate">
            {move || contents.with(|c| match c {
                None => "Asking the browser how much it stores…".to_owned(),
                Some(Contents { usage: Some(usage), quota: Some(quota), .. }) => format!(
                    "{} used of {} available to this site",
                    format::bytes(*usage),
                    format::bytes(*quota)
                ),
                Some(_) => "The browser gives no storage estimate.".to_owned(),
            })}
        </p>
        <p data-testid="storage-persisted" data-persisted=move || persisted.get().map(|p| p.unwrap_or(false).to_string())>
            {move || match persisted.get() {
                None => "Asking the browser to keep the models…".to_owned(),
                Some(Ok(true)) => "Storage is persistent: the browser will not evict the models \
                                   to make room."
                    .to_owned(),
                Some(Ok(false)) => "Storage is not persistent: the browser may evict the models \
                                    when space runs low, and they would download again."
                    .to_owned(),
                Some(Err(message)) => format!("Whether the browser keeps the models is unknown: {message}"),
            }}
        </p>
    }
}

#[component]
fn CachedRow(model: CachedModel, delete: impl Fn(String) + Copy + Send + Sync + 'static) -> impl IntoView {
    let stored: u64 = model.files.iter().map(|f| f.stored).sum();
    let complete = model.files.iter().filter(|f| f.complete).count();
    let incomplete = model.files.len() - complete;
    // A commit hash is long and says little: its first characters are enough to tell two apart.
    let revision = if model.revision.len() == 40 && model.revision.chars().all(|c| c.is_ascii_hexdigit()) {
        model.revision[..10].to_owned()
    } else {
        model.revision.clone()
    };
    let files = match incomplete {
        0 => format!("{complete} files"),
        _ => format!("{complete} complete, {incomplete} incomplete"),
    };
    let repo = model.repo.clone();
    view! {
        <tr
            data-testid="cache-model"
            data-repo=model.repo.clone()
            data-revision=model.revision.clone()
            data-bytes=stored.to_string()
            data-complete=complete.to_string()
            data-incomplete=incomplete.to_string()
        >
            <td class="cache-repo">{model.repo.clone()}<span class="cache-revision">{format!("@{revision}")}</span></td>
            <td>{format::bytes(stored)}</td>
            <td>{files}</td>
            <td>
                <button
                    data-testid="cache-delete"
                    class="danger"
                    title=format!("Delete {} from this browser", model.repo)
                    on:click=move |_| delete(repo.clone())
                >
                    "Delete"
                </button>
            </td>
        </tr>
    }
}

/// Asks the browser to keep this site's storage (`navigator.storage.persist()`), so that it does
/// not evict gigabytes of weights under storage pressure; resolves to whether it does.
async fn persist() -> Result<bool, String> {
    let result = async {
        let navigator = web_sys::window().ok_or("no window")?.navigator();
        let storage = Reflect::get(&navigator, &"storage".into())?;
        if storage.is_undefined() || storage.is_null() {
            return Err(JsValue::from_str("this browser has no storage manager (navigator.storage)"));
        }
        let persist: Function = Reflect::get(&storage, &"persist".into())?.dyn_into()?;
        let promise: Promise = persist.call0(&storage)?.dyn_into()?;
        Ok(JsFuture::from(promise).await?.is_truthy())
    };
    result.await.map_err(|e: JsValue| describe_js_error(&e))
}
