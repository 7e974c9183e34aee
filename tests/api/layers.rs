//! The library's layers, enforced: no module of `shared/src` names a module of a layer above it,
//! and no feature names another feature (they meet in the layers below, or in the root).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use lambent_local::repo_root;

/// From the bottom. A module belongs to the entry with the longest matching prefix.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "domain",
        &[
            "domain",
            "error",
            "backoff",
            "images",
            "bestcut",
            "pdf",
            "video",
            "upscale",
            "telemetry",
        ],
    ),
    ("configuration", &["config"]),
    (
        "adapters",
        &[
            "db",
            "keys",
            "http",
            "cursor",
            "ratelimit",
            "net",
            "users",
            "persona",
            "follow",
            "post",
            "notification",
            "search",
            "auth::keys",
            "auth::password",
        ],
    ),
    (
        "jobs core",
        &[
            "jobs",
            "state",
            "media",
            "credits",
            "oauth",
            "sealed",
            "search::index",
        ],
    ),
    (
        "features",
        &[
            "auth",
            "uploads",
            "photos",
            "generation",
            "webhooks",
            "personas",
            "social",
            "commerce",
            "conversations",
            "videos",
            "console",
        ],
    ),
    (
        "composition root",
        &["lib", "compose", "routes", "lambda", "openapi", "meta"],
    ),
];

const FEATURES: usize = 4;

/// `(layer index, prefix)` of a module.
fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, prefixes))| prefixes.iter().map(move |p| (i, *p)))
        .filter(|(_, p)| module == *p || module.starts_with(&format!("{p}::")))
        .max_by_key(|(_, p)| p.len())
}

/// The module a file under `src` defines: `jobs/mod.rs` is `jobs`, `jobs/store.rs` is `jobs::store`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::a::b` path a source names outside its tests, `use crate::{a, b::c}` groups
/// included, as module paths (`a`, `b::c`, and the items under them).
fn crate_paths(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let end = rest
            .find(|c: char| {
                !(c.is_alphanumeric()
                    || c == '_'
                    || c == ':'
                    || c == '{'
                    || c == '}'
                    || c == ','
                    || c == ' '
                    || c == '\n')
            })
            .unwrap_or(rest.len());
        let mut expression = &rest[..end];
        // A `{ ... }` group: each branch is a path of its own.
        if let Some(open) = expression.find('{') {
            let prefix = expression[..open].trim_end_matches("::").to_owned();
            let close = expression.find('}').unwrap_or(expression.len());
            for branch in expression[open + 1..close].split(',') {
                let branch = branch.trim();
                if branch.is_empty() || branch == "self" {
                    paths.push(prefix.clone());
                } else if prefix.is_empty() {
                    paths.push(branch.to_owned());
                } else {
                    paths.push(format!("{prefix}::{branch}"));
                }
            }
        } else {
            expression = expression
                .split(|c: char| c.is_whitespace() || c == ',' || c == '}')
                .next()
                .unwrap_or("");
            paths.push(expression.trim_end_matches(':').to_owned());
        }
    }
    paths
}

/// The longest prefix of `path` that is a module.
fn resolve<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| modules.get(&parts[..n].join("::")))
}

#[test]
fn no_module_names_a_module_of_a_layer_above_it_nor_another_feature() {
    let src = repo_root().join("shared/src");
    let mut sources = Vec::new();
    files(&src, &mut sources);
    let texts: BTreeMap<String, String> = sources
        .iter()
        .map(|f| {
            (
                module_of(&src, f),
                std::fs::read_to_string(f).expect("read"),
            )
        })
        .collect();
    let modules: BTreeSet<String> = texts.keys().cloned().collect();
    let mut violations = Vec::new();
    for (module, text) in &texts {
        let Some((layer, feature)) = layer_of(module) else {
            violations.push(format!(
                "{module} belongs to no layer (tests/api/layers.rs)"
            ));
            continue;
        };
        for path in crate_paths(text) {
            let Some(target) = resolve(&path, &modules) else {
                continue;
            };
            if target == module {
                continue;
            }
            let Some((target_layer, target_feature)) = layer_of(target) else {
                continue;
            };
            if target_layer > layer {
                violations.push(format!(
                    "{module} ({}) names {target} ({})",
                    LAYERS[layer].0, LAYERS[target_layer].0
                ));
            } else if layer == FEATURES && target_layer == FEATURES && feature != target_feature {
                violations.push(format!(
                    "{module} (feature {feature}) names {target} (feature {target_feature})"
                ));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_sees_a_violation() {
    let modules: BTreeSet<String> = ["jobs", "jobs::store", "photos", "photos::work", "routes"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let paths =
        crate_paths("use crate::photos::work::{self, upscale};\nlet x = crate::routes::ROUTES;");
    let targets: Vec<_> = paths.iter().filter_map(|p| resolve(p, &modules)).collect();
    assert_eq!(targets, ["photos::work", "photos::work", "routes"]);
    // The jobs core naming a feature is a violation; a feature naming the core is not.
    assert!(layer_of("photos::work").expect("layer").0 > layer_of("jobs::store").expect("layer").0);
}

/// DynamoDB cancels transactions that race on an item (`TransactionConflict`); `db::transact`
/// retries those. A transaction sent any other way would answer such a race with a 500.
#[test]
fn every_transaction_goes_through_the_retrying_helper() {
    let src = repo_root().join("shared/src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let direct: Vec<String> = all
        .iter()
        .filter(|file| module_of(&src, file) != "db")
        .filter(|file| {
            std::fs::read_to_string(file)
                .expect("source")
                .contains(".transact_write_items()")
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(direct.is_empty(), "transactions sent directly: {direct:?}");
}
