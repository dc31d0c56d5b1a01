//! The control units: each a condition image (its own [`ConditionPanel`] and preprocessing
//! worker) and the settings that say how its ControlNet steers the generation, as A1111's
//! ControlNet extension names them.
//!
//! The list is owned by the page, which the generation panel reads; each unit's settings (not
//! its image) are kept in localStorage with the rest of the generation's.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use web::protocol::vocabulary::a1111::UnitText;
use web::protocol::{ControlMode, Limits, Preprocessor, UnitParams, UnitSettings};

use super::condition::{Condition, ConditionPanel, ConditionSettings};
use super::generate::GenSettings;
use super::widgets::NamedSelect;
use crate::session::{GpuSession, LoadedModels};
use crate::settings::GENERATE;

/// One control unit. Cheap to copy: every field is a handle.
#[derive(Clone, Copy)]
pub struct Unit {
    /// Identifies the unit in the list while others come and go.
    pub key: u32,
    pub condition: Condition,
    /// The ControlNet picked by name; `None` (or a name no longer loaded): chosen automatically.
    pub controlnet: RwSignal<Option<String>>,
    /// The conditioning scale, 0 to 2.
    pub weight: RwSignal<f64>,
    /// The fraction of the steps where the unit starts and stops acting.
    pub start: RwSignal<f64>,
    pub end: RwSignal<f64>,
    pub mode: RwSignal<ControlMode>,
    pub guess: RwSignal<bool>,
    pub enabled: RwSignal<bool>,
}

/// A unit's settings as kept between visits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct SavedSettings {
    enabled: bool,
    controlnet: Option<String>,
    weight: f64,
    start: f64,
    end: f64,
    mode: ControlMode,
    guess: bool,
    condition: ConditionSettings,
}

impl Default for SavedSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            controlnet: None,
            weight: 1.0,
            start: 0.0,
            end: 1.0,
            mode: ControlMode::default(),
            guess: false,
            condition: ConditionSettings::default(),
        }
    }
}

impl Unit {
    fn new(key: u32, saved: &SavedSettings) -> Self {
        let fraction = |value: f64, default: f64| if (0.0..=1.0).contains(&value) { value } else { default };
        Self {
            key,
            condition: Condition::new(&saved.condition),
            controlnet: RwSignal::new(saved.controlnet.clone()),
            weight: RwSignal::new(if (0.0..=Limits::MAX_CONTROL_WEIGHT).contains(&saved.weight) {
                saved.weight
            } else {
                1.0
            }),
            start: RwSignal::new(fraction(saved.start, 0.0)),
            end: RwSignal::new(fraction(saved.end, 1.0)),
            mode: RwSignal::new(saved.mode),
            guess: RwSignal::new(saved.guess),
            enabled: RwSignal::new(saved.enabled),
        }
    }

    /// Tracked: the persistence effect re-runs on any change.
    fn saved(&self) -> SavedSettings {
        SavedSettings {
            enabled: self.enabled.get(),
            controlnet: self.controlnet.get(),
            weight: self.weight.get(),
            start: self.start.get(),
            end: self.end.get(),
            mode: self.mode.get(),
            guess: self.guess.get(),
            condition: self.condition.saved(),
        }
    }

    /// The loaded ControlNet this unit (the `index`th) uses (tracked); `None` when none is loaded.
    pub fn controlnet_index(&self, index: usize, models: &LoadedModels) -> Option<usize> {
        let chosen = self.controlnet.get();
        choose_controlnet(chosen.as_deref(), self.condition.preprocessor(), index, models)
    }

    /// How this unit steers (untracked).
    fn settings(&self) -> UnitSettings {
        UnitSettings {
            scale: self.weight.get_untracked(),
            guess_mode: self.guess.get_untracked(),
            mode: self.mode.get_untracked(),
            start: self.start.get_untracked(),
            end: self.end.get_untracked(),
        }
    }

    /// What the worker needs for this unit (the `index`th) at `width × height`; an error for
    /// the user otherwise.
    pub fn params(
        &self,
        index: usize,
        models: &LoadedModels,
        width: u32,
        height: u32,
    ) -> Result<UnitParams, String> {
        let controlnet = untrack(|| self.controlnet_index(index, models)).ok_or("no ControlNet is loaded")?;
        let rgb = self
            .condition
            .control_map(width, height)?
            .ok_or("it has no control map: drop an image on it or draw on it")?;
        let (resize, thresholds) = self.condition.fit_and_thresholds();
        Ok(UnitParams {
            controlnet: controlnet as u32,
            rgb,
            settings: self.settings(),
            module: untrack(|| self.condition.preprocessor()),
            resize,
            thresholds,
        })
    }

    /// Puts back a unit read from a PNG's parameters; its ControlNet is picked by name.
    fn restore(&self, text: &UnitText) {
        let s = &text.settings;
        self.enabled.set(true);
        self.controlnet.set(Some(text.model.clone()));
        self.weight.set(s.scale.clamp(0.0, Limits::MAX_CONTROL_WEIGHT));
        self.start.set(s.start.clamp(0.0, 1.0));
        self.end.set(s.end.clamp(0.0, 1.0));
        self.mode.set(s.mode);
        self.guess.set(s.guess_mode);
        self.condition.restore(text.module, text.resize, text.thresholds);
    }
}

/// The ControlNet a unit uses: the one picked, while it is loaded; else the first trained for the
/// unit's kind of map (Canny edges, or scribbles for a drawing or a sketch); else the `index`th
/// unit's turn through the list, so that two units start on different ControlNets.
fn choose_controlnet(
    chosen: Option<&str>,
    preprocessor: Preprocessor,
    index: usize,
    models: &LoadedModels,
) -> Option<usize> {
    let count = models.controlnets.len();
    if count == 0 {
        return None;
    }
    let kind = preprocessor.control_kind();
    chosen
        .and_then(|name| models.controlnets.iter().position(|loaded| loaded == name))
        .or_else(|| {
            kind.and_then(|kind| models.preprocessors.iter().position(|p| p.as_deref() == Some(kind)))
        })
        .or(Some(index % count))
}

/// The units of the page. Cheap to copy.
#[derive(Clone, Copy)]
pub struct UnitList {
    pub units: RwSignal<Vec<Unit>>,
    /// The unit last touched: a paste and Ctrl+Z go to it.
    active: RwSignal<u32>,
    next_key: StoredValue<u32>,
    /// Each unit's signals belong to an owner of its own, a child of the list's (an event handler
    /// that adds a unit has no owner of its own), disposed when the unit is removed.
    owners: StoredValue<UnitOwners>,
}

/// The owners of the units' signals, by unit key.
struct UnitOwners {
    /// The list's owner: the parent of every unit's.
    parent: Option<Owner>,
    units: Vec<(u32, Owner)>,
}

impl UnitOwners {
    /// A unit made under an owner of its own.
    fn create(&mut self, key: u32, saved: &SavedSettings) -> Unit {
        let owner = self.parent.as_ref().map_or_else(Owner::new, Owner::child);
        let unit = owner.with(|| Unit::new(key, saved));
        self.units.push((key, owner));
        unit
    }

    /// The owner of unit `key`, no longer kept.
    fn take(&mut self, key: u32) -> Option<Owner> {
        let index = self.units.iter().position(|(unit, _)| *unit == key)?;
        Some(self.units.remove(index).1)
    }
}

impl UnitList {
    /// The units kept from the last visit (one, by default), saved again on every change.
    pub fn load() -> Self {
        let saved: Vec<SavedSettings> =
            GENERATE.load("units").unwrap_or_else(|| vec![SavedSettings::default()]);
        let mut owners = UnitOwners { parent: Owner::current(), units: Vec::new() };
        let units: Vec<Unit> =
            saved.iter().enumerate().map(|(key, saved)| owners.create(key as u32, saved)).collect();
        let list = Self {
            active: RwSignal::new(units.first().map_or(0, |unit| unit.key)),
            next_key: StoredValue::new(units.len() as u32),
            units: RwSignal::new(units),
            owners: StoredValue::new(owners),
        };
        Effect::new(move || {
            let saved: Vec<SavedSettings> = list.units.with(|units| units.iter().map(Unit::saved).collect());
            GENERATE.save("units", &saved);
        });
        list
    }

    fn add(&self) {
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        let unit = self
            .owners
            .try_update_value(|owners| owners.create(key, &SavedSettings::default()))
            .expect("the list lives as long as its views");
        self.units.update(|units| units.push(unit));
        self.active.set(key);
    }

    fn remove(&self, key: u32) {
        self.units.update(|units| units.retain(|unit| unit.key != key));
        if self.active.get_untracked() == key
            && let Some(first) = self.units.with_untracked(|units| units.first().map(|unit| unit.key))
        {
            self.active.set(first);
        }
        // Its signals go once its view is gone: that view is taken down by the list's render
        // effect, which runs after this handler (a microtask); a timer runs after both.
        if let Some(owner) = self.owners.try_update_value(|owners| owners.take(key)).flatten() {
            set_timeout(move || owner.cleanup(), std::time::Duration::ZERO);
        }
    }

    /// Makes the list the units read from a PNG's parameters: as many units as it names (at
    /// least one), each with its settings. Their images stay as they are (a PNG does not carry
    /// its control maps).
    pub fn restore(&self, texts: &[UnitText]) {
        while self.units.with_untracked(Vec::len) < texts.len().max(1) {
            self.add();
        }
        let list = self.units.get_untracked();
        for (i, unit) in list.iter().enumerate() {
            match texts.get(i) {
                Some(text) => unit.restore(text),
                None => unit.enabled.set(false),
            }
        }
    }

    /// How many units are enabled (tracked).
    pub fn enabled_count(&self) -> usize {
        self.units.with(|units| units.iter().filter(|unit| unit.enabled.get()).count())
    }
}

/// The list of units and the button that adds one.
#[component]
pub fn UnitsPanel(units: UnitList, settings: GenSettings) -> impl IntoView {
    view! {
        <section class="panel units" data-testid="control-units">
            <h2>"Control units"</h2>
            <p class="hint">
                "Each unit steers the image with a ControlNet: an image turned into a control map, \
                 a drawing, or both. Disabled units are kept but not used."
            </p>
            <For each=move || units.units.get() key=|unit| unit.key let:unit>
                <UnitView unit units settings />
            </For>
            {move || units.units.with(Vec::is_empty).then(|| view! {
                <p data-testid="no-units">"No control unit: the prompt alone makes the image."</p>
            })}
            <button data-testid="add-unit" on:click=move |_| units.add()>"Add a control unit"</button>
        </section>
    }
}

#[component]
fn UnitView(unit: Unit, units: UnitList, settings: GenSettings) -> impl IntoView {
    let key = unit.key;
    let index = Memo::new(move |_| {
        units.units.with(|list| list.iter().position(|other| other.key == key).unwrap_or(0))
    });
    let active = Signal::derive(move || units.active.get() == key);
    let width = Signal::derive(move || settings.width.get());
    let height = Signal::derive(move || settings.height.get());

    view! {
        <article
            class="control-unit"
            class:active=move || active.get() && units.units.with(|list| list.len() > 1)
            class:disabled=move || !unit.enabled.get()
            data-testid="control-unit"
            data-index=move || index.get().to_string()
            on:pointerdown=move |_| units.active.set(key)
            on:focusin=move |_| units.active.set(key)
        >
            <header class="unit-header">
                <h3>{move || format!("Unit {}", index.get() + 1)}</h3>
                <label>
                    <input
                        type="checkbox"
                        data-testid="unit-enabled"
                        prop:checked=move || unit.enabled.get()
                        on:change=move |event| unit.enabled.set(event_target_checked(&event))
                    />
                    " Enabled"
                </label>
                <button class="secondary" data-testid="remove-unit" on:click=move |_| units.remove(key)>
                    "Remove"
                </button>
            </header>
            <ConditionPanel condition=unit.condition width height active />
            <UnitSettingsView unit index />
        </article>
    }
}

/// How the unit steers: its ControlNet, weight, start and end, mode and guess mode.
#[component]
fn UnitSettingsView(unit: Unit, index: Memo<usize>) -> impl IntoView {
    view! {
        <div class="unit-settings">
            <label>"ControlNet " <ControlNetSelect unit index /></label>
            <Slider value=unit.weight testid="unit-weight" name="Control weight " max=Limits::MAX_CONTROL_WEIGHT step=0.05 />
            <Slider value=unit.start testid="unit-start" name="Starting step " max=1.0 step=0.01 />
            <Slider value=unit.end testid="unit-end" name="Ending step " max=1.0 step=0.01 />
            <label>
                "Control mode "
                <NamedSelect value=unit.mode testid="unit-mode" />
            </label>
            <label title="The ControlNet sees no prompt: it recognises the content from the map alone">
                <input
                    type="checkbox"
                    data-testid="unit-guess"
                    prop:checked=move || unit.guess.get()
                    on:change=move |event| unit.guess.set(event_target_checked(&event))
                />
                " Guess mode"
            </label>
            {move || (unit.start.get() >= unit.end.get()).then(|| view! {
                <p class="warning" data-testid="unit-range-empty">
                    "The unit starts at or after it ends: it acts on no step."
                </p>
            })}
        </div>
    }
}

/// The loaded ControlNets, the unit's selected (or why there is none to choose).
#[component]
fn ControlNetSelect(unit: Unit, index: Memo<usize>) -> impl IntoView {
    let session = GpuSession::use_session();
    move || match session.models.get() {
        Some(models) if !models.controlnets.is_empty() => {
            let chosen = unit.controlnet_index(index.get(), &models);
            let names = models.controlnets.clone();
            view! {
                <select
                    data-testid="unit-controlnet"
                    on:change=move |event| {
                        if let Ok(i) = event_target_value(&event).parse::<usize>() {
                            unit.controlnet.set(names.get(i).cloned());
                        }
                    }
                >
                    {models
                        .controlnets
                        .iter()
                        .enumerate()
                        .map(|(i, name)| view! {
                            <option value=i.to_string() selected=chosen == Some(i)>{name.clone()}</option>
                        })
                        .collect_view()}
                </select>
            }
            .into_any()
        }
        Some(_) => view! {
            <select data-testid="unit-controlnet" disabled>
                <option>"No ControlNet loaded"</option>
            </select>
        }
        .into_any(),
        None => view! {
            <select data-testid="unit-controlnet" disabled>
                <option>"Load the models first"</option>
            </select>
        }
        .into_any(),
    }
}

/// A slider from 0 to `max` bound to `value`, with its value beside it.
#[component]
fn Slider(
    value: RwSignal<f64>,
    testid: &'static str,
    name: &'static str,
    max: f64,
    step: f64,
) -> impl IntoView {
    view! {
        <label>
            {name}
            <input
                type="range"
                data-testid=testid
                min="0"
                max=max.to_string()
                step=step.to_string()
                prop:value=move || value.get().to_string()
                on:input=move |event| {
                    if let Ok(typed) = event_target_value(&event).parse::<f64>()
                        && typed.is_finite()
                    {
                        value.set(typed.clamp(0.0, max));
                    }
                }
            />
            <output>{move || format!("{:.2}", value.get())}</output>
        </label>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use web::protocol::Precision;

    fn models(names: &[&str], preprocessors: &[Option<&str>]) -> LoadedModels {
        LoadedModels {
            pipeline: "test/tiny".into(),
            controlnets: names.iter().map(|name| name.to_string()).collect(),
            preprocessors: preprocessors.iter().map(|p| p.map(str::to_owned)).collect(),
            precision: Precision::F32,
            memory: None,
        }
    }

    #[test]
    fn the_controlnet_follows_the_pick_then_the_preprocessor_then_the_index() {
        use Preprocessor::{Canny, Scribble, Xdog};
        let loaded = models(&["canny", "scribble"], &[Some("canny"), Some("scribble")]);
        assert_eq!(choose_controlnet(None, Canny, 1, &loaded), Some(0));
        assert_eq!(choose_controlnet(None, Scribble, 0, &loaded), Some(1));
        assert_eq!(choose_controlnet(Some("canny"), Scribble, 0, &loaded), Some(0), "the pick wins");
        assert_eq!(choose_controlnet(Some("gone"), Scribble, 0, &loaded), Some(1), "a pick not loaded");
        assert_eq!(choose_controlnet(None, Xdog, 0, &loaded), Some(1), "a sketch is a scribble");
        assert_eq!(choose_controlnet(None, Preprocessor::None, 3, &loaded), Some(1), "3 mod 2");
        assert_eq!(choose_controlnet(None, Preprocessor::None, 0, &models(&[], &[])), None);
        let unknown = models(&["a", "b", "c"], &[None, None, None]);
        assert_eq!(choose_controlnet(None, Canny, 4, &unknown), Some(1));
    }

    #[test]
    fn a_removed_units_signals_are_disposed_and_the_others_kept() {
        let page = Owner::new();
        page.with(|| {
            let mut owners = UnitOwners { parent: Owner::current(), units: Vec::new() };
            let first = owners.create(0, &SavedSettings::default());
            let second = owners.create(1, &SavedSettings { weight: 0.5, ..SavedSettings::default() });
            owners.take(0).expect("unit 0 has an owner").cleanup();
            assert_eq!(first.weight.try_get_untracked(), None, "the removed unit's signals are gone");
            assert_eq!(second.weight.try_get_untracked(), Some(0.5), "the other unit's are kept");
            assert!(owners.take(0).is_none(), "taken once");
        });
        // The page's owner going takes every unit's with it.
        let third = page.with(|| {
            let mut owners = UnitOwners { parent: Owner::current(), units: Vec::new() };
            owners.create(2, &SavedSettings::default())
        });
        page.cleanup();
        assert_eq!(third.enabled.try_get_untracked(), None);
    }

    #[test]
    fn saved_settings_read_old_and_partial_records() {
        let saved: SavedSettings = serde_json::from_str(r#"{"weight":0.5}"#).unwrap();
        assert_eq!(saved.weight, 0.5);
        assert!(saved.enabled);
        assert_eq!(saved.end, 1.0);
        let saved: SavedSettings = serde_json::from_str(r#"{"mode":"prompt"}"#).unwrap();
        assert_eq!(saved.mode, ControlMode::PromptMoreImportant);
    }
}
