//! Full-text search without a server: a tantivy index whose immutable segment files live in S3
//! (`search/<file>` in the media bucket) and whose current version is one DynamoDB item (the
//! pointer: a generation number and tantivy's `meta.json`). One writer at a time applies changes
//! (a function with a concurrency of one, and the pointer's conditional write if two ever ran)
//! and publishes a new generation; every reader keeps a copy under /tmp, fetches the files of a
//! new generation when the pointer moves, and searches it memory-mapped. Nothing runs while no
//! one searches or writes: the cost at rest is the files in S3.
//!
//! Text is analysed for Korean and English alike, without a dictionary: Latin-script words are
//! lower-cased and stemmed (Snowball English: `cats` finds `cat`); Hangul, Han and Kana runs are
//! cut into overlapping bigrams (a one-syllable word stays whole), so `고양이` is the phrase
//! `고양 양이` and finds `고양이가`, and `고양` finds it too. Every word's leading 1–15 characters
//! are indexed again in a prefix field for as-you-type queries (`ca` finds `cat`, `고` finds
//! `고양이`). What is searchable, and what a hit shows, is the caller's (the social layer).

pub mod index;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use futures::{StreamExt as _, TryStreamExt as _};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value as _,
};
use tantivy::tokenizer::{
    LowerCaser, RawTokenizer, TextAnalyzer, Token, TokenStream, Tokenizer, TokenizerManager,
};
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::db::{Db, get_s, n, s};

/// The pointer's partition and sort key.
pub(crate) const POINTER: (&str, &str) = ("SEARCHINDEX", "HEAD");
/// Changed documents waiting for the writer: `SEARCHDIRTY#<shard>`, sort key the document's id.
const DIRTY_PREFIX: &str = "SEARCHDIRTY#";
/// Shards of the waiting list: a partition takes about 1,000 writes a second.
pub const DIRTY_SHARDS: u32 = 4;
/// Where the index's files live in the media bucket.
pub(crate) const FILES_PREFIX: &str = "search/";
/// The longest prefix indexed for as-you-type, in characters.
const MAX_EDGE: usize = 15;
/// The most words of a query that count.
const MAX_QUERY_WORDS: usize = 8;
/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// How often a reader asks whether the index moved.
pub(crate) const POINTER_CHECK: Duration = Duration::from_millis(500);
/// The writer's indexing memory (tantivy's minimum per thread is 15 MB).
const WRITER_MEMORY: usize = 50_000_000;

/// A document to index: `id` is the caller's (`post:<id>`), `kind` what it is (`post`, `user`).
#[derive(Clone, Debug)]
pub struct Doc {
    pub id: String,
    pub kind: &'static str,
    /// Whose it is: results can leave an account's documents out.
    pub owner: String,
    /// The words searched (a caption, a name).
    pub text: String,
    /// Exact terms (hashtags, without `#`).
    pub tags: Vec<String>,
    /// When it was made (ms).
    pub at: i64,
    /// What a hit shows without another read (kept, not searched).
    pub card: Option<String>,
}

/// A change to the index.
#[derive(Clone, Debug)]
pub enum Change {
    /// Add or replace the document with this id.
    Put(Doc),
    /// Remove the document with this id, if indexed.
    Remove(String),
}

/// What a query found: the number of matching documents and one page of them, best first.
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub total: usize,
    pub hits: Vec<Hit>,
}

/// A document found: its id and its card.
#[derive(Clone, Debug)]
pub struct Hit {
    pub id: String,
    pub card: Option<String>,
}

/// A query: words, the kind of document, accounts to leave out, and the page.
pub struct Search<'a> {
    pub text: &'a str,
    pub kind: &'static str,
    pub exclude_owners: &'a HashSet<String>,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    kind: Field,
    owner: Field,
    text: Field,
    prefix: Field,
    tags: Field,
    at: Field,
    card: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(WORDS)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let edges = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(EDGES)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let tags = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TAG)
            .set_index_option(IndexRecordOption::Basic),
    );
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED),
        kind: builder.add_text_field("kind", STRING),
        owner: builder.add_text_field("owner", STRING),
        text: builder.add_text_field("text", words),
        prefix: builder.add_text_field("prefix", edges),
        tags: builder.add_text_field("tags", tags),
        at: builder.add_i64_field("at", INDEXED | STORED),
        card: builder.add_text_field("card", STORED),
    };
    (builder.build(), fields)
}

fn fields_of(schema: &Schema) -> anyhow::Result<Fields> {
    let field = |name| schema.get_field(name).context("the index's schema");
    Ok(Fields {
        id: field("id")?,
        kind: field("kind")?,
        owner: field("owner")?,
        text: field("text")?,
        prefix: field("prefix")?,
        tags: field("tags")?,
        at: field("at")?,
        card: field("card")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Analysis

const WORDS: &str = "lambent_words";
const EDGES: &str = "lambent_edges";
const TAG: &str = "lambent_tag";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Hangul, Han, Kana: no spaces between morphemes, cut into bigrams.
    Cjk,
    /// Every other letter or digit.
    Word,
}

fn script(c: char) -> Option<Script> {
    let cjk = matches!(c as u32,
        0x1100..=0x11FF | 0x3130..=0x318F | 0xA960..=0xA97F | 0xAC00..=0xD7AF | 0xD7B0..=0xD7FF
        | 0x3040..=0x30FF | 0x31F0..=0x31FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF
        | 0xFF66..=0xFF9F | 0x20000..=0x2FA1F);
    if cjk {
        Some(Script::Cjk)
    } else if c.is_alphanumeric() {
        Some(Script::Word)
    } else {
        None
    }
}

/// The runs of one script in `text`, lower-cased: `AI고양이 cats!` is `ai`, `고양이`, `cats`.
fn runs(text: &str) -> Vec<(Script, String)> {
    let mut out: Vec<(Script, String)> = Vec::new();
    let mut current: Option<(Script, String)> = None;
    for c in text.chars() {
        match (script(c), current.as_mut()) {
            (Some(kind), Some((run_kind, run))) if *run_kind == kind => {
                run.extend(c.to_lowercase())
            }
            (Some(kind), _) => {
                out.extend(current.take());
                current = Some((kind, c.to_lowercase().collect()));
            }
            (None, _) => out.extend(current.take()),
        }
    }
    out.extend(current);
    out
}

thread_local! {
    static STEMMER: rust_stemmers::Stemmer =
        rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
}

/// The searched terms of `text`, in order: stems of words, bigrams of CJK runs.
fn word_terms(text: &str) -> Vec<String> {
    let mut terms = Vec::new();
    for (kind, run) in runs(text) {
        match kind {
            Script::Word => terms.push(STEMMER.with(|s| s.stem(&run).into_owned())),
            Script::Cjk => {
                let chars: Vec<char> = run.chars().collect();
                if chars.len() == 1 {
                    terms.push(run);
                } else {
                    terms.extend(chars.windows(2).map(|pair| pair.iter().collect::<String>()));
                }
            }
        }
    }
    terms
}

/// The prefixes of each word of `text` (1 to [`MAX_EDGE`] characters), a position per word.
fn edge_terms(text: &str) -> Vec<Vec<String>> {
    runs(text)
        .into_iter()
        .map(|(_, run)| {
            let ends = run.char_indices().map(|(i, c)| i + c.len_utf8());
            ends.take(MAX_EDGE)
                .map(|end| run[..end].to_owned())
                .collect()
        })
        .collect()
}

/// A tokenizer over precomputed terms: `edges` gives every prefix of a word one position.
#[derive(Clone, Copy)]
struct Analysis {
    edges: bool,
}

struct Terms {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for Analysis {
    type TokenStream<'a> = Terms;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Terms {
        let token = |position, text: String| Token {
            position,
            text,
            ..Token::default()
        };
        let tokens = if self.edges {
            edge_terms(text)
                .into_iter()
                .enumerate()
                .flat_map(|(position, prefixes)| prefixes.into_iter().map(move |p| (position, p)))
                .map(|(position, p)| token(position, p))
                .collect()
        } else {
            word_terms(text)
                .into_iter()
                .enumerate()
                .map(|(position, t)| token(position, t))
                .collect()
        };
        Terms { tokens, next: 0 }
    }
}

impl TokenStream for Terms {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

fn tokenizers() -> TokenizerManager {
    let manager = TokenizerManager::default();
    manager.register(WORDS, Analysis { edges: false });
    manager.register(EDGES, Analysis { edges: true });
    manager.register(
        TAG,
        TextAnalyzer::builder(RawTokenizer::default())
            .filter(LowerCaser)
            .build(),
    );
    manager
}

/// The query for `text`: every word must match, as a word (stem or bigram phrase), a prefix of
/// a word, or a tag; a whole word weighs more than a prefix.
fn query(fields: Fields, search: &Search<'_>) -> Option<Box<dyn Query>> {
    let text: String = search.text.chars().take(MAX_QUERY_CHARS).collect();
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for (kind, run) in runs(&text).into_iter().take(MAX_QUERY_WORDS) {
        let mut either: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let terms: Vec<Term> = word_terms(&run)
            .iter()
            .map(|t| Term::from_field_text(fields.text, t))
            .collect();
        let word: Box<dyn Query> = match terms.len() {
            0 => continue,
            1 => Box::new(TermQuery::new(
                terms[0].clone(),
                IndexRecordOption::WithFreqs,
            )),
            _ => Box::new(PhraseQuery::new(terms)),
        };
        either.push((Occur::Should, Box::new(BoostQuery::new(word, 3.0))));
        let prefix: String = run.chars().take(MAX_EDGE).collect();
        either.push((
            Occur::Should,
            Box::new(TermQuery::new(
                Term::from_field_text(fields.prefix, &prefix),
                IndexRecordOption::WithFreqs,
            )),
        ));
        if kind == Script::Word || kind == Script::Cjk {
            either.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(
                        Term::from_field_text(fields.tags, &run),
                        IndexRecordOption::Basic,
                    )),
                    2.0,
                )),
            ));
        }
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(either))));
    }
    if clauses.is_empty() {
        return None;
    }
    clauses.push((
        Occur::Must,
        Box::new(TermQuery::new(
            Term::from_field_text(fields.kind, search.kind),
            IndexRecordOption::Basic,
        )),
    ));
    for owner in search.exclude_owners {
        clauses.push((
            Occur::MustNot,
            Box::new(TermQuery::new(
                Term::from_field_text(fields.owner, owner),
                IndexRecordOption::Basic,
            )),
        ));
    }
    Some(Box::new(BooleanQuery::new(clauses)))
}

// ---------------------------------------------------------------------------------------------
// An index in a folder: what the writer and the readers share.

/// An opened index folder.
pub struct Local {
    index: Index,
    fields: Fields,
    dir: PathBuf,
}

impl Local {
    /// Opens the index in `dir`, creating an empty one there when it has none.
    pub fn open_or_create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut index = if dir.join("meta.json").is_file() {
            Index::open_in_dir(dir).with_context(|| format!("opening {}", dir.display()))?
        } else {
            Index::create_in_dir(dir, schema().0)
                .with_context(|| format!("creating an index in {}", dir.display()))?
        };
        index.set_tokenizers(tokenizers());
        let fields = fields_of(&index.schema())?;
        Ok(Self {
            index,
            fields,
            dir: dir.to_owned(),
        })
    }

    /// Applies `changes` in one commit, merges finished; the files of the new version.
    pub fn apply(&self, changes: &[Change]) -> anyhow::Result<BTreeSet<String>> {
        let mut writer: tantivy::IndexWriter<TantivyDocument> =
            self.index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let f = self.fields;
        for change in changes {
            let id = match change {
                Change::Put(doc) => &doc.id,
                Change::Remove(id) => id,
            };
            writer.delete_term(Term::from_field_text(f.id, id));
            if let Change::Put(doc) = change {
                let mut d = TantivyDocument::default();
                d.add_text(f.id, &doc.id);
                d.add_text(f.kind, doc.kind);
                d.add_text(f.owner, &doc.owner);
                d.add_text(f.text, &doc.text);
                d.add_text(f.prefix, &doc.text);
                for tag in &doc.tags {
                    d.add_text(f.tags, tag);
                }
                d.add_i64(f.at, doc.at);
                if let Some(card) = &doc.card {
                    d.add_text(f.card, card);
                }
                writer.add_document(d)?;
            }
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        self.files()
    }

    /// The files of the version in `meta.json` (a segment's list names its deletes' file even
    /// where none was written).
    pub fn files(&self) -> anyhow::Result<BTreeSet<String>> {
        let metas = self.index.load_metas()?;
        let mut files = BTreeSet::new();
        for segment in metas.segments {
            for path in segment.list_files() {
                if let Some(name) = path.to_str()
                    && self.dir.join(name).is_file()
                {
                    files.insert(name.to_owned());
                }
            }
        }
        Ok(files)
    }

    /// A reader of the version in `meta.json` (reloaded only by opening the folder again).
    pub fn reader(&self) -> anyhow::Result<IndexReader> {
        Ok(self
            .index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?)
    }

    /// Runs `search` on `reader`.
    pub fn search(&self, reader: &IndexReader, search: &Search<'_>) -> anyhow::Result<Found> {
        let Some(query) = query(self.fields, search) else {
            return Ok(Found::default());
        };
        let searcher = reader.searcher();
        let top = TopDocs::with_limit(search.limit.max(1)).and_offset(search.offset);
        let (total, top) = searcher.search(&query, &(Count, top))?;
        let mut hits = Vec::with_capacity(top.len());
        for (_, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            if let Some(id) = text(self.fields.id) {
                hits.push(Hit {
                    id,
                    card: text(self.fields.card),
                });
            }
        }
        Ok(Found { total, hits })
    }
}

// ---------------------------------------------------------------------------------------------
// The waiting list: documents whose searchable state changed.

fn dirty_shard(id: &str) -> u32 {
    // FNV-1a: spread over the shards, the same shard for the same document every time.
    let hash = id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % DIRTY_SHARDS
}

/// The action, for the transaction that changes a searchable document, that puts it on the
/// writer's list: the change reaches the index even if the process stops right after.
pub fn dirty(db: &Db, id: &str, at: i64) -> anyhow::Result<TransactWriteItem> {
    crate::db::tx::put(db, waiting_item(id, at), None)
}

/// A document's entry on the writer's list, listed at `at` (ms).
fn waiting_item(id: &str, at: i64) -> Vec<(&'static str, AttributeValue)> {
    vec![
        ("pk", s(format!("{DIRTY_PREFIX}{}", dirty_shard(id)))),
        ("sk", s(id)),
        ("at", n(at)),
    ]
}

/// Puts `id` on the writer's list now, for a change written after it by a call of its own (if
/// that write fails, the writer finds the document unchanged: no harm).
pub async fn mark(db: &Db, id: &str) -> anyhow::Result<()> {
    db.put(
        waiting_item(id, chrono::Utc::now().timestamp_millis()),
        "listing a document for the search index",
    )
    .await
}

/// A document waiting for the writer, as read.
#[derive(Clone, Debug)]
pub struct Waiting {
    pub id: String,
    pk: String,
    at: AttributeValue,
}

/// Up to `limit` waiting documents of each shard.
pub async fn waiting(db: &Db, limit: i32) -> anyhow::Result<Vec<Waiting>> {
    let mut out = Vec::new();
    for shard in 0..DIRTY_SHARDS {
        let pk = format!("{DIRTY_PREFIX}{shard}");
        let page = db
            .client
            .query()
            .table_name(&db.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(&pk))
            // What a wake-up's sender listed is read (see `index::Runtime::answered`).
            .consistent_read(true)
            .limit(limit)
            .send()
            .await
            .context("reading the search index's waiting list")?;
        for item in page.items.unwrap_or_default() {
            if let (Some(id), Some(at)) = (get_s(&item, "sk"), item.get("at")) {
                out.push(Waiting {
                    id: id.to_owned(),
                    pk: pk.clone(),
                    at: at.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Takes `done` off the list, each only if it did not change again meanwhile.
pub async fn done(db: &Db, done: &[Waiting]) -> anyhow::Result<()> {
    let deletes: Vec<_> = done.iter().map(|w| take_off(db, w)).collect();
    futures::stream::iter(deletes)
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
}

async fn take_off(db: &Db, w: &Waiting) -> anyhow::Result<()> {
    let result = db
        .client
        .delete_item()
        .table_name(&db.table)
        .key("pk", s(&w.pk))
        .key("sk", s(&w.id))
        .condition_expression("#at = :at")
        .expression_attribute_names("#at", "at")
        .expression_attribute_values(":at", w.at.clone())
        .send()
        .await;
    crate::db::unless_condition_failed(result).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn korean_is_cut_into_bigrams_and_english_is_stemmed() {
        assert_eq!(
            word_terms("고양이가 좋아"),
            ["고양", "양이", "이가", "좋아"]
        );
        assert_eq!(word_terms("개"), ["개"]);
        assert_eq!(word_terms("Running cats!"), ["run", "cat"]);
        assert_eq!(word_terms("AI고양이"), ["ai", "고양", "양이"]);
        assert_eq!(
            edge_terms("고양이 Cat"),
            [vec!["고", "고양", "고양이"], vec!["c", "ca", "cat"]]
        );
    }

    fn index_of(docs: &[(&str, &str, &str, &[&str])]) -> (tempdir::Dir, Local) {
        let dir = tempdir::Dir::new();
        let local = Local::open_or_create(&dir.0).expect("index");
        let changes: Vec<Change> = docs
            .iter()
            .map(|(id, owner, text, tags)| {
                Change::Put(Doc {
                    id: (*id).into(),
                    kind: "post",
                    owner: (*owner).into(),
                    text: (*text).into(),
                    tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                    at: 0,
                    card: None,
                })
            })
            .collect();
        local.apply(&changes).expect("apply");
        (dir, local)
    }

    fn find(local: &Local, text: &str, exclude: &[&str]) -> Vec<String> {
        let exclude: HashSet<String> = exclude.iter().map(|e| (*e).to_owned()).collect();
        let reader = local.reader().expect("reader");
        local
            .search(
                &reader,
                &Search {
                    text,
                    kind: "post",
                    exclude_owners: &exclude,
                    offset: 0,
                    limit: 10,
                },
            )
            .expect("search")
            .hits
            .into_iter()
            .map(|h| h.id)
            .collect()
    }

    #[test]
    fn words_prefixes_tags_and_exclusions_are_found() {
        let (_dir, local) = index_of(&[
            ("p1", "ann", "우리 고양이가 귀여워요 #고양이", &["고양이"]),
            ("p2", "bob", "Two cats running on the beach", &["beach"]),
            ("p3", "ann", "양이 먹었다", &[]),
        ]);
        assert_eq!(find(&local, "고양이", &[]), ["p1"]);
        assert_eq!(find(&local, "고양", &[]), ["p1"]);
        assert_eq!(find(&local, "고", &[]), ["p1"]);
        assert_eq!(find(&local, "cat", &[]), ["p2"]);
        assert_eq!(find(&local, "run beach", &[]), ["p2"]);
        assert_eq!(find(&local, "ca", &[]), ["p2"]);
        assert_eq!(find(&local, "#beach", &[]), ["p2"]);
        assert!(find(&local, "dog", &[]).is_empty());
        assert!(find(&local, "고양이", &["ann"]).is_empty());
        assert!(find(&local, "  !!", &[]).is_empty());
        local.apply(&[Change::Remove("p1".into())]).expect("remove");
        assert!(find(&local, "고양이", &[]).is_empty());
    }

    /// A folder removed when dropped.
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir()
                    .join(format!("lambent-search-test-{}", uuid::Uuid::new_v4()));
                Self(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
