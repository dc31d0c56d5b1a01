//! The shapes models: a pipeline and two ControlNets the project trains on its own world
//! (`controlnet world recipe`), fp16, 64² images, shipped with the site and the source tree. The
//! page loads them from the site, the CLI from the source tree; both by these names.

/// The repository's name, in the Hub's `owner/name` form.
pub const REPO: &str = "controlnet-web/shapes";

/// The models' version: a retrained set is committed under a new one, so that a URL never
/// changes meaning (and a browser's cached copy is never stale).
pub const REVISION: &str = "v2";

/// Where the site serves its own models, in the Hub's layout, relative to the page
/// (`{SITE_HUB}/{REPO}/resolve/{REVISION}/{file}`); `public/{SITE_HUB}` in the source tree.
pub const SITE_HUB: &str = "hub";

/// The pipeline's folder in the repository.
pub const PIPELINE: &str = "pipeline";

/// The ControlNets' folders, each with the preprocessor whose maps it was trained on.
pub const CONTROLNETS: [(&str, super::Preprocessor); 2] = [
    ("controlnet-canny", super::Preprocessor::Canny),
    ("controlnet-scribble", super::Preprocessor::Scribble),
];

/// The recipe's training runs' logs and samples beside the models, a folder per run
/// (`{LOGS}/{run}/`, `training::LOG_FILE` and `training::sample_file`); a ControlNet's run is
/// named as its folder in [`CONTROLNETS`].
pub const LOGS: &str = "logs";

/// The side of the world's images, which the models make.
pub const SIDE: u32 = 64;

/// The recipe's ControlNet stage (`controlnet world recipe`'s full preset), which a run in the
/// page's Learn view starts from too: the world's examples drawn from, the batch, the learning
/// rate and the steps.
pub mod recipe {
    pub const EXAMPLES: u64 = 8000;
    pub const BATCH: usize = 16;
    pub const CONTROLNET_LR: f64 = 2e-4;
    pub const CONTROLNET_STEPS: u64 = 1000;
    /// Checkpoints and sample images every this many steps.
    pub const EVERY: u64 = 250;
}

/// A caption of the world to start from: the words the models were trained on.
pub const PROMPT: &str = "a yellow star and a red circle on a navy background";

/// The repository's folder relative to the source tree's root.
pub fn source_dir() -> String {
    format!("public/{SITE_HUB}/{REPO}/resolve/{REVISION}")
}

/// The ControlNet folder for a preprocessor's maps, if one was trained on them.
pub fn controlnet_for(preprocessor: super::Preprocessor) -> Option<&'static str> {
    CONTROLNETS.iter().find(|(_, p)| *p == preprocessor).map(|(folder, _)| *folder)
}
