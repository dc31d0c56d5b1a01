//! Small controls the panels share.

use leptos::prelude::*;
use web::protocol::vocabulary::Named;

/// A `<select>` of every value of a [`Named`] type, labelled as the page shows them, bound to
/// `value`; `data-testid` is `testid` and each option's value is the machine name.
#[component]
pub fn NamedSelect<T: Named + Send + Sync>(value: RwSignal<T>, testid: &'static str) -> impl IntoView {
    view! {
        <select
            data-testid=testid
            on:change=move |event| {
                if let Some(chosen) = T::from_name(&event_target_value(&event)) {
                    value.set(chosen);
                }
            }
        >
            {T::ALL
                .iter()
                .map(|&choice| view! {
                    <option value=choice.name() selected=move || value.get() == choice>{choice.label()}</option>
                })
                .collect_view()}
        </select>
    }
}
