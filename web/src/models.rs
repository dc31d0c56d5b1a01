//! The models the page offers by default, with their revisions pinned in this one place.
//!
//! A pinned commit means that what a visitor downloads today is what the page was tested with,
//! and that the cache (keyed by repository, revision and file) never mixes two versions of a file.
//! A mirror or a self-hosted copy only has to keep the Hub's layout:
//! `{base_url}/{repo}/resolve/{revision}/{path}`.

use crate::protocol::{ModelRef, ModelSource};
use vocabulary::shapes;

/// The Hugging Face Hub.
pub const HUB: &str = "https://huggingface.co";

/// A repository at a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pinned {
    /// What the page calls it.
    pub label: &'static str,
    pub repo: &'static str,
    pub revision: &'static str,
    /// The fp16 weights (`*.fp16.safetensors`): half the download, and what an f16 device
    /// computes in anyway.
    pub variant: Option<&'static str>,
    /// The preprocessor the ControlNet was trained with (for the UI's default), if a ControlNet.
    pub preprocessor: Option<&'static str>,
    /// The download's size in bytes, as the Hub lists the files (the weights dominate).
    pub approx_bytes: u64,
}

/// Stable Diffusion 1.5, as published after runwayml's repository moved.
pub const SD15: Pinned = Pinned {
    label: "Stable Diffusion 1.5",
    repo: "stable-diffusion-v1-5/stable-diffusion-v1-5",
    revision: "f03de327dd89b501a01da37fc5240cf4fdba85a1",
    variant: Some("fp16"),
    preprocessor: None,
    // UNet 1.72 GB, text encoder 246 MB, VAE 167 MB (fp16).
    approx_bytes: 2_135_000_000,
};

/// ControlNet 1.1, Canny edges.
pub const CANNY: Pinned = Pinned {
    label: "ControlNet 1.1 Canny",
    repo: "lllyasviel/control_v11p_sd15_canny",
    revision: "115a470d547982438f70198e353a921996e2e819",
    variant: Some("fp16"),
    preprocessor: Some("canny"),
    approx_bytes: 723_000_000,
};

/// ControlNet 1.1, scribbles.
pub const SCRIBBLE: Pinned = Pinned {
    label: "ControlNet 1.1 Scribble",
    repo: "lllyasviel/control_v11p_sd15_scribble",
    // No commit of this repository could be verified offline; `main` until one is.
    revision: "main",
    variant: Some("fp16"),
    preprocessor: Some("scribble"),
    approx_bytes: 723_000_000,
};

/// The ControlNets the page offers.
pub const CONTROLNETS: [Pinned; 2] = [CANNY, SCRIBBLE];

/// The shapes models (`vocabulary::shapes`: a pipeline and two ControlNets the project trained
/// on its own world), part of the site: it serves them in the Hub's layout under
/// [`shapes::SITE_HUB`], so they load like any model, with no network beyond the site.
pub const SHAPES: Pinned = Pinned {
    label: "Shapes world (built in)",
    repo: shapes::REPO,
    revision: shapes::REVISION,
    variant: Some("fp16"),
    preprocessor: None,
    // Pipeline 10.4 MB and two ControlNets of 3.9 MB (fp16), configs and tokenizer.
    approx_bytes: 18_100_000,
};

impl Pinned {
    /// Whether the revision is a commit (40 hex digits), not a branch that may move.
    pub fn is_pinned(&self) -> bool {
        self.revision.len() == 40 && self.revision.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// This repository's root as a model folder, from `base_url` (the Hub or a mirror).
    pub fn model_ref(&self, base_url: &str, cache: bool) -> ModelRef {
        ModelRef {
            source: ModelSource {
                base_url: base_url.to_owned(),
                repo: self.repo.to_owned(),
                revision: self.revision.to_owned(),
                chunk_bytes: None,
                cache,
            },
            subfolder: String::new(),
            variant: self.variant.map(str::to_owned),
            file: None,
        }
    }

    /// A folder of this repository (`""`: its root), from `base_url`.
    pub fn folder_ref(&self, base_url: &str, subfolder: &str, cache: bool) -> ModelRef {
        ModelRef { subfolder: subfolder.to_owned(), ..self.model_ref(base_url, cache) }
    }

    /// This repository as a spec [`parse_spec`] reads: `owner/name@revision`.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.repo, self.revision)
    }
}

/// The Hub's `{base_url}` as the user typed it, checked: an `http(s)://` address without a
/// trailing slash (a mirror, or a local server in the tests).
pub fn parse_base_url(base_url: &str) -> Result<String, String> {
    let trimmed = base_url.trim().trim_end_matches('/');
    let rest =
        trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://")).ok_or_else(|| {
            format!("the base URL must start with https:// or http://, not “{}”", base_url.trim())
        })?;
    if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains(['?', '#']) {
        return Err(format!("“{}” is not a server address like {HUB}", base_url.trim()));
    }
    Ok(trimmed.to_owned())
}

/// A model from a spec the user typed: `owner/name[@revision][:path]`, e.g.
/// `lllyasviel/control_v11p_sd15_canny`, `me/tiny@v2:controlnet`. The revision defaults to
/// `main`. A path ending in `.safetensors` names a single-file model (its folder, then its file:
/// `comfyanonymous/ControlNet-v1-1_fp16_safetensors:control_v11p_sd15_canny_fp16.safetensors`),
/// which has no variant; any other path is a folder.
///
/// The parts end up in URLs and in the cache's keys, so each is checked rather than escaped:
/// names and revisions use the Hub's characters (letters, digits, `-`, `_`, `.`), and no part
/// may climb out of the repository with `..`.
pub fn parse_spec(
    spec: &str,
    base_url: &str,
    variant: Option<&str>,
    cache: bool,
) -> Result<ModelRef, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("a model is needed: owner/name[@revision][:subfolder]".to_owned());
    }
    if spec.contains(char::is_whitespace) {
        return Err(format!("“{spec}” contains spaces; a model is owner/name[@revision][:subfolder]"));
    }
    if spec.contains("..") {
        return Err(format!("“{spec}” contains “..”"));
    }
    // Git forbids `:` in branch names, so the first one starts the subfolder.
    let (repo_rev, subfolder) = match spec.split_once(':') {
        Some((repo_rev, subfolder)) => (repo_rev, Some(subfolder)),
        None => (spec, None),
    };
    let (repo, revision) = match repo_rev.split_once('@') {
        Some((repo, revision)) => (repo, Some(revision)),
        None => (repo_rev, None),
    };
    let (owner, name) =
        repo.split_once('/').ok_or_else(|| format!("“{spec}” does not name a repository as owner/name"))?;
    for (what, part) in [("owner", owner), ("name", name)] {
        if part.is_empty() {
            return Err(format!("“{spec}”: the repository's {what} is empty"));
        }
        if let Some(bad) = part.chars().find(|c| !is_name_char(*c)) {
            return Err(format!("“{spec}”: “{bad}” cannot appear in a repository's {what}"));
        }
    }
    let revision = match revision {
        None => "main",
        Some("") => return Err(format!("“{spec}”: nothing follows “@”; leave it out for main")),
        Some(revision) => {
            if let Some(bad) = revision.chars().find(|c| !is_name_char(*c)) {
                return Err(format!("“{spec}”: “{bad}” cannot appear in a revision"));
            }
            revision
        }
    };
    let subfolder = match subfolder {
        None => "",
        Some(subfolder) => {
            let subfolder = subfolder.trim_matches('/');
            if subfolder.is_empty() {
                return Err(format!("“{spec}”: nothing follows “:”; leave it out for the repository's root"));
            }
            if let Some(bad) = subfolder.chars().find(|c| !is_name_char(*c) && *c != '/') {
                return Err(format!("“{spec}”: “{bad}” cannot appear in a folder name"));
            }
            if subfolder.split('/').any(str::is_empty) {
                return Err(format!("“{spec}”: the folder has an empty part"));
            }
            subfolder
        }
    };
    let (subfolder, file) = match subfolder.rsplit_once('/') {
        _ if !subfolder.ends_with(".safetensors") => (subfolder, None),
        Some((folder, file)) => (folder, Some(file)),
        None => ("", Some(subfolder)),
    };
    // An imported folder lives only in the cache, under its own revision, whatever the mirror.
    let local = owner == LOCAL_OWNER;
    Ok(ModelRef {
        source: ModelSource {
            base_url: if local { LOCAL_BASE_URL.to_owned() } else { parse_base_url(base_url)? },
            repo: format!("{owner}/{name}"),
            revision: if local && revision == "main" { LOCAL_REVISION } else { revision }.to_owned(),
            chunk_bytes: None,
            cache: cache || local,
        },
        subfolder: subfolder.to_owned(),
        variant: if file.is_some() { None } else { variant.map(str::to_owned) },
        file: file.map(str::to_owned),
    })
}

/// The base URL of folders imported from the visitor's disk: they exist only in the cache, and a
/// load never goes to the network for them.
pub const LOCAL_BASE_URL: &str = "local:";
/// The owner of imported folders' repository names (`local/{folder name}`).
pub const LOCAL_OWNER: &str = "local";
/// The revision imported folders are stored under.
pub const LOCAL_REVISION: &str = "local";

/// The characters of the Hub's repository names, which also cover tags, branches without `/`
/// and commit hashes.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_repository_revision_and_folder() {
        let canny = parse_spec(" lllyasviel/control_v11p_sd15_canny \n", HUB, Some("fp16"), true).unwrap();
        assert_eq!(canny, CANNY.model_ref(HUB, true).with_revision("main"));
        assert_eq!(canny.source.url("config.json"), format!("{HUB}/{}/resolve/main/config.json", CANNY.repo));

        let tiny =
            parse_spec("test/tiny-sd@v1.0:controlnet2", "http://127.0.0.1:8080/", None, false).unwrap();
        assert_eq!(tiny.source.base_url, "http://127.0.0.1:8080");
        assert_eq!(tiny.source.repo, "test/tiny-sd");
        assert_eq!(tiny.source.revision, "v1.0");
        assert_eq!(tiny.subfolder, "controlnet2");
        assert_eq!(tiny.variant, None);
        assert!(!tiny.source.cache);
        assert_eq!(tiny.path("config.json"), "controlnet2/config.json");

        let nested = parse_spec(&format!("{}@{}:/unet/", SD15.repo, SD15.revision), HUB, None, true).unwrap();
        assert_eq!(nested.source.revision, SD15.revision);
        assert_eq!(nested.subfolder, "unet");
        let deep = parse_spec("a/b:x/y", HUB, None, true).unwrap();
        assert_eq!(deep.subfolder, "x/y");
        assert_eq!((deep.file.as_deref(), deep.location().as_str()), (None, "x/y"));

        // One file in the original format, at the root or in a folder: no variant applies.
        let single =
            "comfyanonymous/ControlNet-v1-1_fp16_safetensors:control_v11p_sd15_canny_fp16.safetensors";
        let single = parse_spec(single, HUB, Some("fp16"), true).unwrap();
        assert_eq!(single.subfolder, "");
        assert_eq!(single.file.as_deref(), Some("control_v11p_sd15_canny_fp16.safetensors"));
        assert_eq!(single.variant, None);
        assert_eq!(
            single.weights_name("diffusion_pytorch_model"),
            "control_v11p_sd15_canny_fp16.safetensors"
        );
        let nested = parse_spec("a/b@v2:models/cn/canny.safetensors", HUB, Some("fp16"), true).unwrap();
        assert_eq!(
            (nested.subfolder.as_str(), nested.file.as_deref()),
            ("models/cn", Some("canny.safetensors"))
        );
        assert_eq!(nested.location(), "models/cn/canny.safetensors");
        assert_eq!(nested.path(&nested.weights_name("x")), "models/cn/canny.safetensors");

        for pinned in [SD15, CANNY, SCRIBBLE] {
            let parsed = parse_spec(&pinned.spec(), HUB, pinned.variant, true).unwrap();
            assert_eq!(parsed, pinned.model_ref(HUB, true), "{}", pinned.spec());
        }
    }

    /// The names point at the files the site serves: the repository's folders under
    /// `public/{SITE_HUB}` at the revision, each with its config and fp16 weights.
    #[test]
    fn the_shapes_models_are_in_the_site() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(shapes::source_dir());
        let pipeline = SHAPES.folder_ref("http://127.0.0.1:1/hub", shapes::PIPELINE, false);
        assert_eq!(
            pipeline.source.url(&pipeline.path("model_index.json")),
            format!(
                "http://127.0.0.1:1/hub/{}/resolve/{}/pipeline/model_index.json",
                SHAPES.repo, SHAPES.revision
            )
        );
        let mut bytes = 0;
        for file in [
            "pipeline/model_index.json",
            "pipeline/unet/diffusion_pytorch_model.fp16.safetensors",
            "pipeline/vae/diffusion_pytorch_model.fp16.safetensors",
            "pipeline/text_encoder/model.fp16.safetensors",
            "pipeline/tokenizer/vocab.json",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(shapes::CONTROLNETS.iter().flat_map(|(folder, _)| {
            [format!("{folder}/config.json"), format!("{folder}/diffusion_pytorch_model.fp16.safetensors")]
        })) {
            let path = root.join(&file);
            bytes += std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len();
        }
        // The stated size is the weights' within 5 %, and the whole stays within the site's 20 MB.
        let stated = SHAPES.approx_bytes as f64;
        assert!((bytes as f64 - stated).abs() < 0.05 * stated, "{bytes} bytes against {stated}");
        assert!(bytes < 20_000_000);
        let unet: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("pipeline/unet/config.json")).unwrap()).unwrap();
        let vae: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("pipeline/vae/config.json")).unwrap()).unwrap();
        let levels = vae["block_out_channels"].as_array().unwrap().len() as u32;
        assert_eq!(unet["sample_size"].as_u64().unwrap() as u32 * (1 << (levels - 1)), shapes::SIDE);
    }

    #[test]
    fn only_commits_count_as_pinned() {
        assert!(SD15.is_pinned() && CANNY.is_pinned());
        // The page says so for this one (see the models panel's `models-unpinned`).
        assert!(!SCRIBBLE.is_pinned());
    }

    #[test]
    fn malformed_specs_are_refused_with_a_reason() {
        for (spec, expected) in [
            ("", "needed"),
            ("   ", "needed"),
            ("owner", "owner/name"),
            ("/name", "owner is empty"),
            ("owner/", "name is empty"),
            ("own er/name", "spaces"),
            ("owner/na me", "spaces"),
            ("owner/name/extra", "“/”"),
            ("owner/name@", "nothing follows “@”"),
            ("owner/name:", "nothing follows “:”"),
            ("owner/name:a//b", "empty part"),
            ("../name", ".."),
            ("owner/name:../../etc", ".."),
            ("owner/name@../x", ".."),
            ("owner/name?x=1", "“?”"),
            ("owner/name@feature/x", "revision"),
            ("owner/name:sub%2f", "folder"),
        ] {
            let error = parse_spec(spec, HUB, None, true).unwrap_err();
            assert!(error.contains(expected), "{spec:?}: {error}");
        }
    }

    #[test]
    fn base_urls_must_be_http_addresses() {
        assert_eq!(parse_base_url(" https://huggingface.co/ ").unwrap(), HUB);
        assert_eq!(parse_base_url("http://127.0.0.1:9000/mirror").unwrap(), "http://127.0.0.1:9000/mirror");
        for bad in ["", "huggingface.co", "ftp://x", "https://", "https://a b", "https://x/?q"] {
            assert!(parse_base_url(bad).is_err(), "{bad:?}");
            assert!(parse_spec("a/b", bad, None, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn imported_folders_load_from_the_cache_alone() {
        let model = parse_spec("local/my-sd15", "https://mirror.example", Some("fp16"), false).unwrap();
        assert_eq!(model.source.base_url, LOCAL_BASE_URL);
        assert_eq!(model.source.revision, LOCAL_REVISION);
        assert!(model.source.cache, "an imported folder exists only in the cache");
        let controlnet = parse_spec("local/canny:controlnet", HUB, None, true).unwrap();
        assert_eq!(
            (controlnet.source.repo.as_str(), controlnet.subfolder.as_str()),
            ("local/canny", "controlnet")
        );
    }

    impl ModelRef {
        fn with_revision(mut self, revision: &str) -> Self {
            self.source.revision = revision.to_owned();
            self
        }
    }
}
