//! CLIP's byte-level BPE tokenizer, id for id what transformers' `CLIPTokenizer` gives diffusers.
//!
//! transformers 5 has no Python CLIP tokenizer any more (and so no ftfy clean-up path): the class
//! builds a Hugging Face `tokenizers` pipeline, and this module replays that pipeline step by step:
//!
//! 1. **Added tokens** (`<|startoftext|>`, `<|endoftext|>`, a checkpoint's `!` pad token) are cut
//!    out of the text first: the ones flagged `normalized: false` from the raw text, the others
//!    from the normalized text of what is left, leftmost-longest.
//! 2. **Normalizer**: NFC, every run of whitespace to one space, lowercase (character by
//!    character, as `tokenizers` does: `Σ` is always `σ`, never the final `ς`).
//! 3. **Pre-tokenizer**: the CLIP split regex keeps contractions, letter runs, single digits and
//!    runs of other symbols, and drops the spaces; then the byte-level pre-tokenizer splits each
//!    piece again with GPT-2's regex (which only matters for a typed `<|endoftext|>`, cut into
//!    `<|`, `endoftext`, `|>`) and maps every UTF-8 byte to its printable stand-in.
//! 4. **BPE** on each piece, its last symbol carrying the `</w>` end-of-word suffix, merging the
//!    best-ranked pair first (leftmost on ties), exactly as the `tokenizers` crate's priority
//!    queue does; a symbol the vocabulary lacks becomes the unknown token.
//! 5. **Post-processing** as `tokenizer(prompt, padding="max_length", max_length=77,
//!    truncation=True)`: at most `max_length - 2` tokens, then BOS … EOS, then the pad token.
//!
//! Which special tokens are matched before or after normalization depends on how transformers
//! resolves `tokenizer_config.json` and `special_tokens_map.json` (see [`resolve_added_tokens`]);
//! for SD1.5's files a typed `<|endoftext|>` is the EOS token, `<|ENDOFTEXT|>` is plain text,
//! and `<|STARTOFTEXT|>` is the BOS token.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

/// transformers' CLIP defaults, used where the configuration names no token.
const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";
/// CLIP's context length: the text encoder has 77 position embeddings. transformers' own default
/// (no `model_max_length` at all) is 10³⁰, with which `padding="max_length"` fails.
const DEFAULT_MAX_LENGTH: usize = 77;
/// The `tokenizers` BPE cache holds this many words, then stops adding.
const CACHE_CAPACITY: usize = 10_000;
/// Words longer than this (in bytes) are not cached, as in `tokenizers`.
const CACHE_MAX_WORD_BYTES: usize = 256;

/// CLIP's pre-tokenizer pattern (`Split(..., behavior="removed", invert=True)`: the matches are
/// the pieces, everything between them, i.e. whitespace, is dropped).
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// GPT-2's pattern as the byte-level pre-tokenizer applies it. Its space-prefixed alternatives
/// and its `\s+(?!\S)` never see a space here (the CLIP split removed them all), so they are left
/// out; what remains is the same split on whitespace-free text.
const BYTE_LEVEL_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+|\s+";

/// Why a tokenizer could not be built.
#[derive(Debug)]
pub enum TokenizerError {
    /// A file could not be read.
    Io { path: PathBuf, message: String },
    /// A JSON file is not valid JSON, or not shaped as expected.
    Json { file: &'static str, message: String },
    /// `vocab.json` maps a token to something other than an id.
    Vocab(String),
    /// A line of `merges.txt` (1-based) is not two tokens whose merge is in the vocabulary.
    Merges { line: usize, message: String },
    /// The configuration names tokens or lengths this tokenizer cannot use.
    Config(String),
}

impl std::fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerError::Io { path, message } => write!(f, "cannot read {}: {message}", path.display()),
            TokenizerError::Json { file, message } => write!(f, "{file}: {message}"),
            TokenizerError::Vocab(message) => write!(f, "vocab.json: {message}"),
            TokenizerError::Merges { line, message } => write!(f, "merges.txt, line {line}: {message}"),
            TokenizerError::Config(message) => write!(f, "tokenizer configuration: {message}"),
        }
    }
}

impl std::error::Error for TokenizerError {}

/// A token cut out of the text before BPE (`tokenizers`' `AddedToken`).
#[derive(Clone, Debug, PartialEq)]
struct AddedToken {
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    /// Matched in the normalized text (`true`) or in the raw text (`false`).
    normalized: bool,
}

/// A special-token value as transformers holds it: a plain string, or an `AddedToken` with flags.
#[derive(Clone, Debug, PartialEq)]
enum TokenValue {
    Plain(String),
    Added(AddedToken),
}

impl TokenValue {
    fn content(&self) -> &str {
        match self {
            TokenValue::Plain(s) => s,
            TokenValue::Added(t) => &t.content,
        }
    }
}

/// An added token with its id and the text it is matched against.
#[derive(Clone, Debug)]
struct Matcher {
    id: u32,
    /// The content, normalized when the token is matched in normalized text.
    pattern: String,
    token: AddedToken,
}

/// One BPE symbol: a token id and its neighbours in the word (`tokenizers`' `Symbol`).
#[derive(Clone, Copy, Debug)]
struct Symbol {
    id: u32,
    prev: isize,
    next: isize,
    len: usize,
}

/// A pending merge, ordered so that `BinaryHeap` pops the lowest rank, then the leftmost.
#[derive(Debug, PartialEq, Eq)]
struct Merge {
    pos: usize,
    rank: u32,
    new_id: u32,
}

impl Ord for Merge {
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The CLIP tokenizer of a Stable Diffusion checkpoint (its `tokenizer/` folder).
#[derive(Debug)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    /// `(left id, right id)` → `(rank, merged id)`.
    merges: MergeRanks,
    /// The model's unknown token, when the vocabulary has it.
    unk_id: Option<u32>,
    /// Added tokens matched in the raw text, and those matched in the normalized text.
    raw_added: Vec<Matcher>,
    normalized_added: Vec<Matcher>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_length: usize,
    truncate_left: bool,
    pad_left: bool,
    byte_chars: [char; 256],
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

/// The vocabulary and merges, however they were stored.
struct Model {
    vocab: HashMap<String, u32>,
    merges: Vec<(String, String, usize)>,
    /// `added_tokens` of a `tokenizer.json`: `(id, token)`.
    added: Vec<(u32, AddedToken)>,
}

impl ClipTokenizer {
    /// From the contents of `vocab.json`, `merges.txt` and, when the checkpoint has them,
    /// `tokenizer_config.json` and `special_tokens_map.json`.
    pub fn from_files(
        vocab_json: &str,
        merges_txt: &str,
        tokenizer_config_json: Option<&str>,
        special_tokens_map_json: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        let model =
            Model { vocab: parse_vocab(vocab_json)?, merges: parse_merges_txt(merges_txt)?, added: vec![] };
        Self::build(model, tokenizer_config_json, special_tokens_map_json)
    }

    /// From a `tokenizer.json` (what transformers 5's `save_pretrained` writes instead of
    /// `vocab.json` and `merges.txt`), with the optional configuration files.
    pub fn from_tokenizer_json(
        tokenizer_json: &str,
        tokenizer_config_json: Option<&str>,
        special_tokens_map_json: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        Self::build(parse_tokenizer_json(tokenizer_json)?, tokenizer_config_json, special_tokens_map_json)
    }

    /// From a diffusers `tokenizer/` folder: `tokenizer.json` when there is one (transformers
    /// prefers it too), else `vocab.json` and `merges.txt`; plus `tokenizer_config.json` and
    /// `special_tokens_map.json` when present.
    pub fn load(dir: &Path) -> Result<Self, TokenizerError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| TokenizerError::Io { path, message: e.to_string() })
        };
        let optional = |name: &str| if dir.join(name).is_file() { read(name).map(Some) } else { Ok(None) };
        let config = optional("tokenizer_config.json")?;
        let special = optional("special_tokens_map.json")?;
        if dir.join("tokenizer.json").is_file() {
            return Self::from_tokenizer_json(
                &read("tokenizer.json")?,
                config.as_deref(),
                special.as_deref(),
            );
        }
        Self::from_files(&read("vocab.json")?, &read("merges.txt")?, config.as_deref(), special.as_deref())
    }

    fn build(
        model: Model,
        config: Option<&str>,
        special_tokens_map: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        let config = parse_object(config, "tokenizer_config.json")?;
        let special_tokens_map = parse_object(special_tokens_map, "special_tokens_map.json")?;
        let Model { vocab, merges: merge_list, added: json_added } = model;
        let merges = merge_ranks(&vocab, &merge_list)?;
        let resolved = resolve_added_tokens(&config, &special_tokens_map, &json_added)?;
        let mut tokenizer = ClipTokenizer {
            unk_id: None,
            raw_added: vec![],
            normalized_added: vec![],
            bos_id: 0,
            eos_id: 0,
            pad_id: 0,
            max_length: DEFAULT_MAX_LENGTH,
            truncate_left: false,
            pad_left: false,
            byte_chars: byte_chars(),
            cache: Mutex::new(HashMap::new()),
            vocab,
            merges,
        };

        let added = added_token_ids(&tokenizer.vocab, resolved.tokens);
        for (id, token) in added.iter().cloned() {
            if token.normalized {
                let pattern = tokenizer.normalize(&token.content);
                tokenizer.normalized_added.push(Matcher { id, pattern, token });
            } else {
                tokenizer.raw_added.push(Matcher { id, pattern: token.content.clone(), token });
            }
        }

        let id_of = |content: &str, role: &str| {
            added
                .iter()
                .find(|(_, t)| t.content == content)
                .map(|(id, _)| *id)
                .or_else(|| tokenizer.vocab.get(content).copied())
                .ok_or_else(|| TokenizerError::Config(format!("the {role} token `{content}` has no id")))
        };
        tokenizer.bos_id = id_of(&resolved.bos, "BOS")?;
        tokenizer.eos_id = id_of(&resolved.eos, "EOS")?;
        tokenizer.pad_id = id_of(&resolved.pad, "pad")?;
        // The BPE model looks its unknown token up in the vocabulary only; `tokenizers` fails on
        // the first unknown symbol when it is missing, which byte-level vocabularies never meet.
        tokenizer.unk_id = tokenizer.vocab.get(&resolved.unk).copied();
        if tokenizer.unk_id.is_none() {
            let missing = tokenizer
                .byte_chars
                .iter()
                .flat_map(|c| [c.to_string(), format!("{c}</w>")])
                .find(|symbol| !tokenizer.vocab.contains_key(symbol));
            if let Some(symbol) = missing {
                return Err(TokenizerError::Config(format!(
                    "the vocabulary lacks the byte symbol `{symbol}` and the unknown token `{}`",
                    resolved.unk
                )));
            }
        }

        tokenizer.max_length = max_length(&config)?;
        tokenizer.truncate_left = side(&config, "truncation_side")?;
        tokenizer.pad_left = side(&config, "padding_side")?;
        Ok(tokenizer)
    }

    /// The length of every [`encode`](Self::encode)d sequence (77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id padding fills with (SD1.5: `<|endoftext|>`, 49407; SD2's tokenizer: `!`, 0).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The ids diffusers feeds the text encoder: BOS, at most `max_length - 2` tokens of `text`
    /// (the rest is cut, as `truncation=True` does), EOS, then padding to `max_length`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut tokens = self.tokenize(text);
        let room = self.max_length - 2;
        if tokens.len() > room {
            if self.truncate_left {
                tokens.drain(..tokens.len() - room);
            } else {
                tokens.truncate(room);
            }
        }
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend(tokens);
        ids.push(self.eos_id);
        let padding = std::iter::repeat_n(self.pad_id, self.max_length - ids.len());
        if self.pad_left {
            padding.chain(ids).collect()
        } else {
            ids.extend(padding);
            ids
        }
    }

    /// The token ids of `text` alone: no BOS/EOS, no truncation, no padding.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![];
        // 1. Added tokens in the raw text; 2. normalization, and added tokens in normalized text.
        for raw in split_added(text, &self.raw_added) {
            let piece = match raw {
                Piece::Token(id) => {
                    ids.push(id);
                    continue;
                }
                Piece::Text(piece) => piece,
            };
            let normalized = self.normalize(piece);
            for part in split_added(&normalized, &self.normalized_added) {
                match part {
                    Piece::Token(id) => ids.push(id),
                    // 3. Pre-tokenization and 4. BPE.
                    Piece::Text(part) => {
                        for piece in patterns().clip_split.find_iter(part) {
                            for word in patterns().byte_level_split.find_iter(piece.as_str()) {
                                let mapped: String =
                                    word.as_str().bytes().map(|b| self.byte_chars[b as usize]).collect();
                                self.bpe(&mapped, &mut ids);
                            }
                        }
                    }
                }
            }
        }
        ids
    }

    /// The normalizer: NFC, whitespace runs to one space, lowercase per character.
    fn normalize(&self, text: &str) -> String {
        let nfc: String = text.nfc().collect();
        patterns().whitespace.replace_all(&nfc, " ").chars().flat_map(char::to_lowercase).collect()
    }

    /// BPE of one pre-tokenized word (already byte-mapped), appending its ids.
    fn bpe(&self, word: &str, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if let Some(ids) = self.cache.lock().ok().and_then(|cache| cache.get(word).cloned()) {
            out.extend(ids);
            return;
        }
        let ids = self.merge_word(word);
        if word.len() <= CACHE_MAX_WORD_BYTES
            && let Ok(mut cache) = self.cache.lock()
            && cache.len() < CACHE_CAPACITY
        {
            cache.insert(word.to_owned(), ids.clone());
        }
        out.extend(ids);
    }

    /// `tokenizers`' `BPE::merge_word` and `Word::merge_all`: symbols, then merges by rank.
    fn merge_word(&self, word: &str) -> Vec<u32> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        let add = |symbols: &mut Vec<Symbol>, id: u32, len: usize| {
            let n = symbols.len() as isize;
            if let Some(last) = symbols.last_mut() {
                last.next = n;
            }
            symbols.push(Symbol { id, prev: n - 1, next: -1, len });
        };
        let mut chars = word.char_indices().peekable();
        // Unknown symbols are not fused (`fuse_unk=False`): each becomes one unknown token.
        let mut pending_unk: Option<(u32, usize)> = None;
        while let Some((start, c)) = chars.next() {
            let is_last = chars.peek().is_none();
            let len = c.len_utf8();
            let text = &word[start..start + len];
            let id = if is_last { self.vocab.get(&format!("{text}</w>")) } else { self.vocab.get(text) };
            match id {
                Some(&id) => {
                    if let Some((unk, unk_len)) = pending_unk.take() {
                        add(&mut symbols, unk, unk_len);
                    }
                    add(&mut symbols, id, len);
                }
                None => {
                    if let Some((unk, unk_len)) = pending_unk.take() {
                        add(&mut symbols, unk, unk_len);
                    }
                    pending_unk = self.unk_id.map(|unk| (unk, len));
                }
            }
        }
        if let Some((unk, unk_len)) = pending_unk {
            add(&mut symbols, unk, unk_len);
        }

        let mut queue: BinaryHeap<Merge> = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(pos, pair)| {
                let &(rank, new_id) = self.merges.get(&(pair[0].id, pair[1].id))?;
                Some(Merge { pos, rank, new_id })
            })
            .collect();
        while let Some(top) = queue.pop() {
            // Skip symbols merged away, the last symbol, and entries the merges made stale.
            if symbols[top.pos].len == 0 || symbols[top.pos].next == -1 {
                continue;
            }
            let next_pos = symbols[top.pos].next as usize;
            let right = symbols[next_pos];
            match self.merges.get(&(symbols[top.pos].id, right.id)) {
                Some(&(_, new_id)) if new_id == top.new_id => {}
                _ => continue,
            }
            let current = &mut symbols[top.pos];
            current.id = top.new_id;
            current.len += right.len;
            current.next = right.next;
            symbols[next_pos].len = 0;
            if right.next > -1 && (right.next as usize) < symbols.len() {
                symbols[right.next as usize].prev = top.pos as isize;
            }
            let current = symbols[top.pos];
            if current.prev >= 0 {
                let prev = current.prev as usize;
                if let Some(&(rank, new_id)) = self.merges.get(&(symbols[prev].id, current.id)) {
                    queue.push(Merge { pos: prev, rank, new_id });
                }
            }
            let next = current.next;
            if next >= 0
                && (next as usize) < symbols.len()
                && let Some(&(rank, new_id)) = self.merges.get(&(current.id, symbols[next as usize].id))
            {
                queue.push(Merge { pos: top.pos, rank, new_id });
            }
        }
        symbols.iter().filter(|s| s.len != 0).map(|s| s.id).collect()
    }
}

/// A stretch of text, or an added token found in it.
enum Piece<'a> {
    Text(&'a str),
    Token(u32),
}

/// `tokenizers`' `AddedVocabulary::find_matches`: leftmost-longest matches of the added tokens,
/// honouring `single_word`, `lstrip` and `rstrip`; empty stretches are dropped.
fn split_added<'a>(text: &'a str, matchers: &[Matcher]) -> Vec<Piece<'a>> {
    let mut pieces = vec![];
    if matchers.is_empty() {
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        return pieces;
    }
    let mut done = 0; // end of the last match
    let mut at = 0; // where the search goes on
    while at < text.len() {
        let rest = &text[at..];
        let found = matchers
            .iter()
            .filter(|m| !m.pattern.is_empty() && rest.starts_with(m.pattern.as_str()))
            .max_by_key(|m| m.pattern.len());
        let Some(matcher) = found else {
            at += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let (mut start, mut stop) = (at, at + matcher.pattern.len());
        at = stop;
        let token = &matcher.token;
        if token.single_word {
            let start_space = start == 0 || !patterns().word_end.is_match(&text[..start]);
            let stop_space = stop == text.len() || !patterns().word_start.is_match(&text[stop..]);
            if !start_space || !stop_space {
                continue;
            }
        }
        if token.lstrip {
            let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
            start = trimmed.max(done);
        }
        if token.rstrip {
            stop += text[stop..].len() - text[stop..].trim_start_matches(char::is_whitespace).len();
            at = stop;
        }
        if start > done {
            pieces.push(Piece::Text(&text[done..start]));
        }
        pieces.push(Piece::Token(matcher.id));
        done = stop;
    }
    if done < text.len() {
        pieces.push(Piece::Text(&text[done..]));
    }
    pieces
}

/// The special tokens as transformers 5 resolves them, in the order it adds them.
/// `model_max_length` of a tokenizer config; CLIP's 77 where it names none, or no limit (1e30).
fn max_length(config: &Map<String, Value>) -> Result<usize, TokenizerError> {
    let Some(value) = config.get("model_max_length") else { return Ok(DEFAULT_MAX_LENGTH) };
    let max = value.as_f64().filter(|v| *v >= 2.0).ok_or_else(|| {
        TokenizerError::Config(format!("`model_max_length` = {value} (2 at least: BOS and EOS)"))
    })?;
    // Configs without a limit say 1e30; only the text encoder's 77 positions make sense then.
    Ok(if max > 1e9 { DEFAULT_MAX_LENGTH } else { max as usize })
}

/// BPE merges by ids: `(left, right)` → `(rank, merged)`.
type MergeRanks = HashMap<(u32, u32), (u32, u32)>;

/// The BPE merges as ids: `(left, right)` → `(rank, merged)`, every part looked up in `vocab`.
fn merge_ranks(
    vocab: &HashMap<String, u32>,
    merges: &[(String, String, usize)],
) -> Result<MergeRanks, TokenizerError> {
    let mut ranks = HashMap::with_capacity(merges.len());
    for (rank, (a, b, line)) in merges.iter().enumerate() {
        let id = |token: &str| {
            vocab.get(token).copied().ok_or_else(|| TokenizerError::Merges {
                line: *line,
                message: format!("`{token}` is not in the vocabulary"),
            })
        };
        let pair = (id(a)?, id(b)?);
        let merged = id(&format!("{a}{b}"))?;
        // A repeated pair keeps its last rank, as `tokenizers` collects them into a map.
        ranks.insert(pair, (rank as u32, merged));
    }
    Ok(ranks)
}

/// The added tokens with their ids: the vocabulary's id, or the next free one (`tokenizers`'
/// rule); a token added again replaces the earlier flags, an empty one is passed over.
fn added_token_ids(vocab: &HashMap<String, u32>, tokens: Vec<AddedToken>) -> Vec<(u32, AddedToken)> {
    let vocab_size = vocab.len() as u32;
    let mut added: Vec<(u32, AddedToken)> = vec![];
    for token in tokens {
        if token.content.is_empty() {
            continue;
        }
        if let Some(slot) = added.iter_mut().find(|(_, t)| t.content == token.content) {
            slot.1 = token;
            continue;
        }
        let id = vocab.get(&token.content).copied().unwrap_or_else(|| {
            added.iter().map(|(id, _)| id + 1).filter(|&id| id >= vocab_size).max().unwrap_or(vocab_size)
        });
        added.push((id, token));
    }
    added
}

struct Resolved {
    /// Added to the vocabulary in this order; a later entry for the same content wins.
    tokens: Vec<AddedToken>,
    bos: String,
    eos: String,
    unk: String,
    pad: String,
}

/// transformers' `from_pretrained` + `TokenizersBackend.__init__`, reduced to what decides ids:
///
/// - `added_tokens_decoder` of `tokenizer_config.json` (or, without it, `tokenizer.json`'s
///   `added_tokens`) comes first, in id order;
/// - then the named special tokens, `bos, eos, unk, sep, pad, cls, mask`, each from
///   `special_tokens_map.json` (read only when the config has no `added_tokens_decoder`), else
///   from `tokenizer_config.json`, else CLIPTokenizer's default, and replaced by the decoder's
///   entry of the same content; one whose content is already there, or that equals one already
///   listed, is skipped. A plain string becomes a special token matched in the raw text
///   (`normalized: false`); an object keeps its flags.
///
/// For SD1.5's files this makes `<|startoftext|>` normalized (its object says so) and
/// `<|endoftext|>` raw (the plain-string `pad_token` comes last).
fn resolve_added_tokens(
    config: &Map<String, Value>,
    special_tokens_map: &Map<String, Value>,
    json_added: &[(u32, AddedToken)],
) -> Result<Resolved, TokenizerError> {
    let mut decoder: Vec<(u32, AddedToken)> = match config.get("added_tokens_decoder") {
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(id, token)| {
                let id = id.parse::<u32>().map_err(|_| {
                    TokenizerError::Config(format!("`added_tokens_decoder` key `{id}` is not an id"))
                })?;
                Ok((id, added_token(token, false, "added_tokens_decoder")?))
            })
            .collect::<Result<_, TokenizerError>>()?,
        Some(other) => {
            return Err(TokenizerError::Config(format!("`added_tokens_decoder` is not an object: {other}")));
        }
        None => json_added.to_vec(),
    };
    decoder.sort_by_key(|(id, _)| *id);
    let legacy = !config.contains_key("added_tokens_decoder");

    let named = |key: &str, default: Option<&str>| -> Result<Option<TokenValue>, TokenizerError> {
        let value = match special_tokens_map.get(key).filter(|_| legacy).filter(|v| !v.is_null()) {
            // special_tokens_map.json's objects are made special tokens: not normalized by default.
            Some(value) => Some(token_value(value, true, key)?),
            None => match config.get(key).filter(|v| !v.is_null()) {
                Some(value) => Some(token_value(value, false, key)?),
                None => default.map(|d| TokenValue::Plain(d.to_owned())),
            },
        };
        // Named tokens the decoder knows are the decoder's tokens.
        Ok(value.map(|v| match decoder.iter().find(|(_, t)| t.content == v.content()) {
            Some((_, token)) => TokenValue::Added(token.clone()),
            None => v,
        }))
    };
    let keys: [(&str, Option<&str>); 7] = [
        ("bos_token", Some(DEFAULT_BOS)),
        ("eos_token", Some(DEFAULT_EOS)),
        ("unk_token", Some(DEFAULT_EOS)),
        ("sep_token", None),
        ("pad_token", Some(DEFAULT_EOS)),
        ("cls_token", None),
        ("mask_token", None),
    ];
    let mut values = Vec::with_capacity(keys.len());
    for (key, default) in keys {
        values.push(named(key, default)?);
    }

    let known: Vec<String> = decoder.iter().map(|(_, t)| t.content.clone()).collect();
    let mut listed: Vec<TokenValue> = decoder.iter().map(|(_, t)| TokenValue::Added(t.clone())).collect();
    for value in values.iter().flatten() {
        if !known.iter().any(|k| k == value.content()) && !listed.contains(value) {
            listed.push(value.clone());
        }
    }
    let tokens = listed
        .into_iter()
        .map(|value| match value {
            TokenValue::Added(token) => token,
            TokenValue::Plain(content) => {
                AddedToken { content, single_word: false, lstrip: false, rstrip: false, normalized: false }
            }
        })
        .collect();
    let content = |i: usize| values[i].as_ref().map(|v| v.content().to_owned()).unwrap_or_default();
    Ok(Resolved { tokens, bos: content(0), eos: content(1), unk: content(2), pad: content(4) })
}

/// A special-token value: a string, or an `AddedToken` object (with or without `__type`).
fn token_value(value: &Value, special: bool, key: &str) -> Result<TokenValue, TokenizerError> {
    match value {
        Value::String(s) => Ok(TokenValue::Plain(s.clone())),
        Value::Object(_) => Ok(TokenValue::Added(added_token(value, special, key)?)),
        other => Err(TokenizerError::Config(format!("`{key}` is neither a string nor a token: {other}"))),
    }
}

/// An `AddedToken` object. `normalized` defaults to `!special`, as in `tokenizers`.
fn added_token(value: &Value, special: bool, key: &str) -> Result<AddedToken, TokenizerError> {
    let content = value
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenizerError::Config(format!("`{key}` has no string `content`")))?;
    let flag = |name: &str, default: bool| value.get(name).and_then(Value::as_bool).unwrap_or(default);
    let special = flag("special", special);
    Ok(AddedToken {
        content: content.to_owned(),
        single_word: flag("single_word", false),
        lstrip: flag("lstrip", false),
        rstrip: flag("rstrip", false),
        normalized: flag("normalized", !special),
    })
}

fn side(config: &Map<String, Value>, key: &str) -> Result<bool, TokenizerError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(s)) if s == "right" => Ok(false),
        Some(Value::String(s)) if s == "left" => Ok(true),
        Some(other) => {
            Err(TokenizerError::Config(format!("`{key}` = {other} (expected \"left\" or \"right\")")))
        }
    }
}

fn parse_object(json: Option<&str>, file: &'static str) -> Result<Map<String, Value>, TokenizerError> {
    match json {
        None => Ok(Map::new()),
        Some(json) => match serde_json::from_str(json) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(TokenizerError::Json { file, message: "not a JSON object".into() }),
            Err(e) => Err(TokenizerError::Json { file, message: e.to_string() }),
        },
    }
}

/// `vocab.json`: token → id.
fn parse_vocab(json: &str) -> Result<HashMap<String, u32>, TokenizerError> {
    let map = match serde_json::from_str(json) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(TokenizerError::Vocab("not a JSON object of token → id".into())),
        Err(e) => return Err(TokenizerError::Vocab(e.to_string())),
    };
    vocab_from_map(map)
}

fn vocab_from_map(map: Map<String, Value>) -> Result<HashMap<String, u32>, TokenizerError> {
    if map.is_empty() {
        return Err(TokenizerError::Vocab("the vocabulary is empty".into()));
    }
    map.into_iter()
        .map(|(token, id)| match id.as_u64().and_then(|id| u32::try_from(id).ok()) {
            Some(id) => Ok((token, id)),
            None => Err(TokenizerError::Vocab(format!("`{token}` maps to {id}, not an id"))),
        })
        .collect()
}

/// `merges.txt`: one `left right` pair per line, best first; `#version` lines are skipped, as
/// `tokenizers` does. Returns the pairs with their line numbers.
fn parse_merges_txt(text: &str) -> Result<Vec<(String, String, usize)>, TokenizerError> {
    let mut merges = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#version") {
            continue;
        }
        match line.split(' ').collect::<Vec<_>>()[..] {
            [a, b] => merges.push((a.to_owned(), b.to_owned(), i + 1)),
            _ => {
                return Err(TokenizerError::Merges {
                    line: i + 1,
                    message: format!("`{line}` is not two tokens separated by one space"),
                });
            }
        }
    }
    Ok(merges)
}

/// `tokenizer.json`: its BPE model's vocabulary and merges, and its added tokens.
fn parse_tokenizer_json(json: &str) -> Result<Model, TokenizerError> {
    const FILE: &str = "tokenizer.json";
    let err = |message: String| TokenizerError::Json { file: FILE, message };
    let root: Value = serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
    let model = root.get("model").ok_or_else(|| err("no `model`".into()))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str)
        && kind != "BPE"
    {
        return Err(err(format!("a {kind} model, not BPE")));
    }
    let vocab = match model.get("vocab") {
        Some(Value::Object(map)) => vocab_from_map(map.clone())?,
        _ => return Err(err("`model.vocab` is not an object".into())),
    };
    let entries =
        model.get("merges").and_then(Value::as_array).ok_or_else(|| err("no `model.merges`".into()))?;
    let mut merges = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let pair: Option<(String, String)> = match entry {
            Value::String(s) => match s.split(' ').collect::<Vec<_>>()[..] {
                [a, b] => Some((a.to_owned(), b.to_owned())),
                _ => None,
            },
            Value::Array(pair) => match &pair[..] {
                [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                _ => None,
            },
            _ => None,
        };
        let (a, b) = pair.ok_or_else(|| TokenizerError::Merges {
            line: i + 1,
            message: format!("merge {entry} is not a pair of tokens"),
        })?;
        merges.push((a, b, i + 1));
    }
    let mut added = vec![];
    for token in root.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
        let id = token
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| err(format!("added token without an id: {token}")))?;
        added.push((id, added_token(token, false, "added_tokens")?));
    }
    Ok(Model { vocab, merges, added })
}

/// GPT-2's reversible byte → printable character table (`bytes_to_unicode`).
fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("256..512 are characters")
        };
    }
    table
}

/// The tokenizer's fixed patterns, compiled once per process (compiling the Unicode classes of
/// the split patterns costs more than reading a small vocabulary).
struct Patterns {
    whitespace: Regex,
    clip_split: Regex,
    byte_level_split: Regex,
    word_start: Regex,
    word_end: Regex,
}

fn patterns() -> &'static Patterns {
    static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
        let regex = |pattern| Regex::new(pattern).expect("the tokenizer's patterns are valid");
        Patterns {
            whitespace: regex(r"\s+"),
            clip_split: regex(CLIP_SPLIT),
            byte_level_split: regex(BYTE_LEVEL_SPLIT),
            word_start: regex(r"^\w"),
            word_end: regex(r"\w$"),
        }
    });
    &PATTERNS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let table = byte_chars();
        assert_eq!(table[b'a' as usize], 'a');
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[0xAD], 'Ń'); // U+0143: the 68th byte without a printable self
        let mut sorted = table.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256, "the table is a bijection");
    }

    /// A toy vocabulary: the 512 byte symbols, a few merges, CLIP's special tokens.
    fn toy(config: Option<&str>) -> ClipTokenizer {
        let table = byte_chars();
        let mut vocab: Vec<String> = table.iter().map(|c| c.to_string()).collect();
        vocab.extend(table.iter().map(|c| format!("{c}</w>")));
        let merges = ["a b", "ab c</w>", "c a", "ca t</w>"];
        vocab.extend(merges.iter().map(|m| m.replace(' ', "")));
        vocab.extend([DEFAULT_BOS.to_owned(), DEFAULT_EOS.to_owned()]);
        let vocab: Map<String, Value> =
            vocab.into_iter().enumerate().map(|(i, t)| (t, Value::from(i as u64))).collect();
        let merges_txt = format!("#version: 0.2\n{}\n", merges.join("\n"));
        ClipTokenizer::from_files(&Value::Object(vocab).to_string(), &merges_txt, config, None).unwrap()
    }

    #[test]
    fn merges_by_rank_and_pads() {
        let tok = toy(Some(r#"{"model_max_length": 8}"#));
        let id = |t: &str| tok.vocab[t];
        assert_eq!(tok.tokenize("ABC  cat"), vec![id("abc</w>"), id("cat</w>")]);
        assert_eq!(
            tok.encode("x"),
            vec![
                id(DEFAULT_BOS),
                id("x</w>"),
                id(DEFAULT_EOS),
                id(DEFAULT_EOS),
                id(DEFAULT_EOS),
                id(DEFAULT_EOS),
                id(DEFAULT_EOS),
                id(DEFAULT_EOS)
            ]
        );
        assert_eq!(tok.encode("a b c d e f g h").len(), 8);
        assert_eq!(tok.encode("a b c d e f g h")[6], id("f</w>"));
    }

    #[test]
    fn typed_special_tokens_follow_the_config() {
        // No config: every special token is a plain string, matched in the raw text only.
        let tok = toy(None);
        let eos = tok.vocab[DEFAULT_EOS];
        assert_eq!(tok.tokenize("<|endoftext|>"), vec![eos]);
        assert_ne!(tok.tokenize("<|ENDOFTEXT|>"), vec![eos]);
        let tok = toy(Some(r#"{"eos_token": {"content": "<|endoftext|>", "normalized": true}}"#));
        // `pad_token` (default: the same text, plain) comes later and wins: still raw.
        assert_ne!(tok.tokenize("<|ENDOFTEXT|>"), vec![eos]);
        let tok = toy(Some(r#"{"bos_token": {"content": "<|startoftext|>", "normalized": true}}"#));
        assert_eq!(tok.tokenize("<|STARTOFTEXT|>"), vec![tok.vocab[DEFAULT_BOS]]);
    }
}
