//! The installable, offline app (the page's side of `public/sw.js`): registers the service
//! worker, says when the page works offline, offers "Install" where the browser does, asks for
//! persistent storage, and, when a new build has been deployed, offers to reload into it — only
//! when the visitor asks, so nothing reloads under a generation in progress.

use std::cell::Cell;
use std::rc::Rc;

use leptos::prelude::*;
use send_wrapper::SendWrapper;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ServiceWorker, ServiceWorkerContainer, ServiceWorkerRegistration, ServiceWorkerState};

use crate::gpu::describe_js_error;

/// The service worker's script, beside index.html.
const SCRIPT: &str = "sw.js";

/// What the page knows of its service worker and of installing.
#[derive(Clone, Copy)]
pub struct Pwa {
    /// A service worker controls the page: the app and the site's models load offline.
    pub offline_ready: RwSignal<bool>,
    /// A new build is installed and waiting for the visitor's Reload.
    pub update_ready: RwSignal<bool>,
    /// The browser's `beforeinstallprompt` event, kept for the Install button.
    install_prompt: RwSignal<Option<SendWrapper<web_sys::Event>>>,
    /// `navigator.storage.persist()`'s answer.
    pub persisted: RwSignal<Option<bool>>,
    /// Why the service worker could not be registered.
    pub failure: RwSignal<Option<String>>,
    registration: StoredValue<Option<SendWrapper<ServiceWorkerRegistration>>>,
}

impl Pwa {
    /// Registers the service worker and listens for updates and the install prompt.
    pub fn start() -> Self {
        let pwa = Self {
            offline_ready: RwSignal::new(false),
            update_ready: RwSignal::new(false),
            install_prompt: RwSignal::new(None),
            persisted: RwSignal::new(None),
            failure: RwSignal::new(None),
            registration: StoredValue::new(None),
        };
        let Some(window) = web_sys::window() else { return pwa };
        let install = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
            // The browser's own mini-infobar stays away; the page's button asks instead.
            event.prevent_default();
            pwa.install_prompt.set(Some(SendWrapper::new(event)));
        });
        let _ =
            window.add_event_listener_with_callback("beforeinstallprompt", install.as_ref().unchecked_ref());
        install.forget();
        let installed = Closure::<dyn FnMut()>::new(move || pwa.install_prompt.set(None));
        let _ = window.add_event_listener_with_callback("appinstalled", installed.as_ref().unchecked_ref());
        installed.forget();

        // `navigator.serviceWorker` is missing outside secure contexts (and in some private modes).
        let container = js_sys::Reflect::get(&window.navigator(), &"serviceWorker".into())
            .ok()
            .filter(|value| !value.is_undefined() && !value.is_null())
            .map(|value| value.unchecked_into::<ServiceWorkerContainer>());
        let Some(container) = container else {
            pwa.failure.set(Some(
                "this browser offers no service workers here: the page does not work offline".into(),
            ));
            return pwa;
        };
        pwa.offline_ready.set(container.controller().is_some());
        let reloading = Rc::new(Cell::new(false));
        let on_change = Closure::<dyn FnMut()>::new(move || {
            pwa.offline_ready.set(true);
            // The new build took over because the visitor asked for it: load it, once.
            if pwa.update_ready.get_untracked() && !reloading.replace(true) {
                let _ = web_sys::window().map(|w| w.location().reload());
            }
        });
        container.set_oncontrollerchange(Some(on_change.as_ref().unchecked_ref()));
        on_change.forget();
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = pwa.register(&container).await {
                pwa.failure.set(Some(format!("the offline app could not start: {}", describe_js_error(&e))));
            }
        });
        pwa
    }

    async fn register(self, container: &ServiceWorkerContainer) -> Result<(), JsValue> {
        let registration: ServiceWorkerRegistration =
            JsFuture::from(container.register(SCRIPT)).await?.dyn_into()?;
        let has_controller = container.controller().is_some();
        // A build already waiting from an earlier visit.
        if registration.waiting().is_some() && has_controller {
            self.update_ready.set(true);
        }
        let watched = registration.clone();
        let on_found = Closure::<dyn FnMut()>::new(move || {
            if let Some(installing) = watched.installing() {
                self.watch(installing);
            }
        });
        registration.set_onupdatefound(Some(on_found.as_ref().unchecked_ref()));
        on_found.forget();
        if let Some(installing) = registration.installing() {
            self.watch(installing);
        }
        self.registration.set_value(Some(SendWrapper::new(registration)));
        self.persist().await;
        Ok(())
    }

    /// Follows an installing worker: installed while another controls the page means a new build
    /// is waiting; on a first visit it becomes the controller by itself (`clients.claim`).
    fn watch(self, worker: ServiceWorker) {
        let watched = worker.clone();
        let on_state = Closure::<dyn FnMut()>::new(move || {
            let controlled = web_sys::window()
                .map(|w| w.navigator().service_worker())
                .is_some_and(|container| container.controller().is_some());
            if watched.state() == ServiceWorkerState::Installed && controlled {
                self.update_ready.set(true);
            }
        });
        worker.set_onstatechange(Some(on_state.as_ref().unchecked_ref()));
        on_state.forget();
    }

    /// Asks the browser not to evict this site's storage (the cached weights) under pressure.
    async fn persist(self) {
        let Some(storage) = web_sys::window().map(|w| w.navigator().storage()) else { return };
        let Ok(promise) = storage.persist() else { return };
        let persisted = JsFuture::from(promise).await.ok().and_then(|v| v.as_bool());
        self.persisted.set(persisted);
    }

    /// Lets the waiting build take over; the page reloads into it when it does.
    pub fn reload_into_update(&self) {
        let waiting = self.registration.with_value(|r| r.as_ref().and_then(|r| r.waiting()));
        match waiting {
            Some(worker) => {
                let message = js_sys::Object::new();
                let _ = js_sys::Reflect::set(&message, &"type".into(), &"skip-waiting".into());
                let _ = worker.post_message(&message);
            }
            None => {
                let _ = web_sys::window().map(|w| w.location().reload());
            }
        }
    }

    /// Shows the browser's install dialog.
    pub fn install(&self) {
        let Some(event) = self.install_prompt.get_untracked() else { return };
        let prompt = js_sys::Reflect::get(&event, &"prompt".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        if let Some(prompt) = prompt {
            let _ = prompt.call0(&event);
        }
        self.install_prompt.set(None);
    }

    pub fn can_install(&self) -> bool {
        self.install_prompt.with(Option::is_some)
    }
}

/// The app bar: "A new version is ready — Reload", "Install", and whether the page works offline.
#[component]
pub fn AppBar(pwa: Pwa) -> impl IntoView {
    view! {
        <div class="app-bar" data-testid="app-bar">
            <Show when=move || pwa.update_ready.get()>
                <p class="update" data-testid="update-ready" role="status">
                    "A new version is ready. "
                    <button data-testid="update-reload" on:click=move |_| pwa.reload_into_update()>
                        "Reload"
                    </button>
                </p>
            </Show>
            <Show when=move || pwa.can_install()>
                <button class="secondary" data-testid="install-app" on:click=move |_| pwa.install()>
                    "Install the app"
                </button>
            </Show>
            <p class="hint" data-testid="offline-status" data-ready=move || pwa.offline_ready.get().to_string()>
                {move || match (pwa.failure.get(), pwa.offline_ready.get()) {
                    (Some(message), _) => message,
                    (None, true) => "Works offline: the app and its built-in models are stored in this browser; \
                                     models from the hub work offline once cached."
                        .to_owned(),
                    (None, false) => "Preparing the offline app…".to_owned(),
                }}
                {move || pwa.persisted.get().map(|persisted| if persisted {
                    " Storage is persistent."
                } else {
                    " The browser may clear stored models when space runs short."
                })}
            </p>
        </div>
    }
}
