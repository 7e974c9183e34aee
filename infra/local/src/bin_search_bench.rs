//! `lambent-search-bench` (make bench): the search index at scale, printed as JSON for
//! infra/bench/search.py to set beside its peer.
//!
//! Builds an index of `--docs` synthetic posts (captions of Korean and English words drawn with
//! a Zipf-like skew, hashtags) with the writer's own code, then times `--queries` searches with
//! the readers' own code (the same analysis, query and page of 20 the route runs; the route adds
//! one pointer read and the hits' rows, which are not the index's). With `--export DIR` it writes
//! the captions and the queries for the peer.

use std::collections::HashSet;
use std::io::Write as _;
use std::time::Instant;

use anyhow::Context as _;
use lambent::search::{Change, Doc, Local, Search};
use lambent_local::arg;

/// xorshift64*: the same corpus on every run, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An index in 0..n, rank r drawn about as often as 1/r (Zipf, s = 1).
    fn zipf(&mut self, n: usize) -> usize {
        let x = (n as f64).powf(self.unit());
        (x as usize).saturating_sub(1).min(n - 1)
    }
}

const SYLLABLES: &str = "가나다라마바사아자차카타파하고노도로모보소오조초코토포호구누두루무부수우주추쿠투푸후기니디리미비시이지치키티피히개내대래매배새애재채양강산물불꽃달별빛길숲눈밤낮봄꿈맛집빵";
const PARTICLES: &[&str] = &[
    "", "", "", "가", "이", "는", "을", "를", "의", "에서", "와", "도",
];
const LETTERS: &[u8] = b"abcdefghijklmnoprstuvwy";
const SUFFIXES: &[&str] = &["", "", "", "s", "ing", "ed", "er"];

struct Vocabulary {
    korean: Vec<String>,
    english: Vec<String>,
}

impl Vocabulary {
    fn new(rng: &mut Rng, size: usize) -> Self {
        let syllables: Vec<char> = SYLLABLES.chars().collect();
        let mut korean = HashSet::new();
        while korean.len() < size {
            let n = 2 + rng.below(2);
            korean.insert(
                (0..n)
                    .map(|_| syllables[rng.below(syllables.len())])
                    .collect::<String>(),
            );
        }
        let mut english = HashSet::new();
        while english.len() < size {
            let n = 3 + rng.below(6);
            english.insert(
                (0..n)
                    .map(|_| LETTERS[rng.below(LETTERS.len())] as char)
                    .collect::<String>(),
            );
        }
        let mut korean: Vec<String> = korean.into_iter().collect();
        let mut english: Vec<String> = english.into_iter().collect();
        korean.sort();
        english.sort();
        // Shuffled, so that rank (frequency) has nothing to do with spelling.
        for words in [&mut korean, &mut english] {
            for i in (1..words.len()).rev() {
                words.swap(i, rng.below(i + 1));
            }
        }
        Self { korean, english }
    }

    fn caption(&self, rng: &mut Rng) -> (String, Vec<String>) {
        let korean = rng.below(2) == 0;
        let words = 5 + rng.below(16);
        let mut text = Vec::with_capacity(words + 3);
        for _ in 0..words {
            if korean {
                let word = &self.korean[rng.zipf(self.korean.len())];
                text.push(format!("{word}{}", PARTICLES[rng.below(PARTICLES.len())]));
            } else {
                let word = &self.english[rng.zipf(self.english.len())];
                text.push(format!("{word}{}", SUFFIXES[rng.below(SUFFIXES.len())]));
            }
        }
        let tags: Vec<String> = (0..rng.below(4))
            .map(|_| {
                if korean {
                    self.korean[rng.zipf(200)].clone()
                } else {
                    self.english[rng.zipf(200)].clone()
                }
            })
            .collect();
        for tag in &tags {
            text.push(format!("#{tag}"));
        }
        (text.join(" "), tags)
    }

    /// A query as people type them: a word, a word's first letters, two words.
    fn query(&self, rng: &mut Rng) -> (&'static str, String) {
        let korean = rng.below(2) == 0;
        let pick = |rng: &mut Rng| -> String {
            if korean {
                self.korean[rng.zipf(self.korean.len())].clone()
            } else {
                self.english[rng.zipf(self.english.len())].clone()
            }
        };
        match rng.below(3) {
            0 => (
                if korean {
                    "korean word"
                } else {
                    "english word"
                },
                pick(rng),
            ),
            1 => {
                let word = pick(rng);
                let keep = if korean {
                    1 + rng.below(2)
                } else {
                    2 + rng.below(2)
                };
                (
                    if korean {
                        "korean prefix"
                    } else {
                        "english prefix"
                    },
                    word.chars().take(keep).collect(),
                )
            }
            _ => (
                if korean {
                    "korean two words"
                } else {
                    "english two words"
                },
                format!("{} {}", pick(rng), pick(rng)),
            ),
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

fn dir_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let docs: usize = arg("--docs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let queries: usize = arg("--queries")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let vocabulary: usize = arg("--vocabulary")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let export = arg("--export").map(std::path::PathBuf::from);
    let dir = std::env::temp_dir().join(format!("lambent-search-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let words = Vocabulary::new(&mut rng, vocabulary);
    let mut captions = export
        .as_ref()
        .map(|d| {
            std::fs::create_dir_all(d)?;
            anyhow::Ok(std::io::BufWriter::new(std::fs::File::create(
                d.join("captions.txt"),
            )?))
        })
        .transpose()?;

    // Built as the writer builds it, in commits of 100,000 (the writer's runs are smaller).
    let local = Local::open_or_create(&dir)?;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(100_000);
    for n in 0..docs {
        let (text, tags) = words.caption(&mut rng);
        if let Some(out) = captions.as_mut() {
            writeln!(out, "{text}")?;
        }
        batch.push(Change::Put(Doc {
            id: format!("post:{n}"),
            kind: "post",
            owner: format!("user{}", n % 10_000),
            text,
            tags,
            at: n as i64,
            card: None,
        }));
        if batch.len() == 100_000 || n + 1 == docs {
            local.apply(&batch)?;
            batch.clear();
        }
    }
    let build_s = started.elapsed().as_secs_f64();
    if let Some(mut out) = captions.take() {
        out.flush()?;
    }
    let files = local.files()?;
    let index_bytes = dir_bytes(&dir)?;

    // Searched as a warm reader searches: the index opened once, each query from its text.
    let reader = local.reader()?;
    let none = HashSet::new();
    let mut by_kind: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut all = Vec::with_capacity(queries);
    let mut matched = 0usize;
    let mut asked = Vec::with_capacity(queries);
    for _ in 0..queries {
        let (kind, text) = words.query(&mut rng);
        let started = Instant::now();
        let found = local.search(
            &reader,
            &Search {
                text: &text,
                kind: "post",
                exclude_owners: &none,
                offset: 0,
                limit: 20,
            },
        )?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        matched += usize::from(found.total > 0);
        by_kind.entry(kind).or_default().push(ms);
        all.push(ms);
        asked.push(serde_json::json!({"kind": kind, "q": text, "total": found.total}));
    }
    if let Some(d) = &export {
        std::fs::write(d.join("queries.json"), serde_json::to_vec(&asked)?)
            .context("writing the queries")?;
    }
    let summary = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        serde_json::json!({
            "n": times.len(),
            "p50_ms": percentile(times, 0.5),
            "p95_ms": percentile(times, 0.95),
            "p99_ms": percentile(times, 0.99),
        })
    };
    let kinds: serde_json::Map<String, serde_json::Value> = by_kind
        .iter_mut()
        .map(|(k, v)| ((*k).to_owned(), summary(v)))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "docs": docs,
            "build_s": build_s,
            "index_mb": index_bytes as f64 / 1e6,
            "files": files.len(),
            "queries": queries,
            "queries_with_hits": matched,
            "all": summary(&mut all),
            "by_kind": kinds,
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
