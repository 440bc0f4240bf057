//! The docs and the layout they describe hold together: every relative link of README.md and docs/*.md
//! points at a file that exists, and every `#anchor` at a heading of that file (GitHub's slugs); the OpenAPI
//! names path parameters as the contract does; no module imports the composition root (docs/architecture.md).

use std::path::{Path, PathBuf};

/// README.md and every docs/*.md.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "md") {
            documents.push(path);
        }
    }
    documents
}

/// Targets of `[text](target)` links, outside code blocks.
fn links(markdown: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            links.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    links
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    markdown.lines().filter_map(|line| line.strip_prefix('#')).map(|h| slug(h.trim_start_matches('#'))).collect()
}

#[test]
fn every_relative_link_and_anchor_of_the_docs_resolves() {
    let mut dead = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() { document.clone() } else { document.parent().unwrap().join(file) };
            if !target.exists() {
                dead.push(format!("{}: {link} (no such file)", document.display()));
                continue;
            }
            if !anchor.is_empty() && target.extension().is_some_and(|ext| ext == "md") {
                let heads = anchors(&std::fs::read_to_string(&target).unwrap());
                if !heads.iter().any(|head| head == anchor) {
                    dead.push(format!("{}: {link} (no such heading)", document.display()));
                }
            }
        }
    }
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
}

#[test]
fn the_readme_stays_a_front_door() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(readme.lines().count() <= 200, "README.md has {} lines; depth belongs in docs/", readme.lines().count());
}

#[tokio::test]
async fn the_openapi_names_path_parameters_as_the_contract_does() {
    let app = crate::support::TestApp::spawn().await;
    let (_, spec) = app.get("/openapi.json").await;
    let paths: Vec<&String> = spec["paths"].as_object().unwrap().keys().collect();
    for path in &paths {
        assert!(!path.contains('_'), "{path}: path parameters are camelCase ({{orderId}}, {{userId}})");
    }
    for expected in ["/api/v1/orders/{orderId}/pay", "/api/v1/users/{userId}/balance/charge"] {
        assert!(paths.iter().any(|p| *p == expected), "{expected} missing from {paths:?}");
    }
}

/// Every `.rs` file under `src/<folder>`, with its text.
fn sources(folder: &str) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut folders = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(folder)];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    found
}

/// The `src/` files of `folder` that name one of `modules` (`crate::<module>::` or `use crate::<module>;`).
fn importing(folder: &str, modules: &[&str]) -> Vec<String> {
    sources(folder)
        .into_iter()
        .filter(|(_, text)| {
            modules.iter().any(|module| {
                text.contains(&format!("crate::{module}::"))
                    || text.contains(&format!("crate::{module};"))
                    || text.contains(&format!("crate::{{{module}"))
            })
        })
        .map(|(path, _)| path.display().to_string())
        .collect()
}

#[test]
fn no_module_but_main_imports_the_composition_root() {
    let main = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs").display().to_string();
    let offenders: Vec<String> = importing("", &["app"]).into_iter().filter(|path| *path != main).collect();
    assert!(offenders.is_empty(), "import crate::app (only main may): {offenders:?}");
}

#[test]
fn dependencies_run_one_way_from_http_through_the_domains_to_the_store() {
    for domain in ["coupon", "order", "balance", "product", "ranking", "user", "platform"] {
        let offenders = importing(domain, &["app", "state", "http"]);
        assert!(offenders.is_empty(), "the {domain} domain imports the layer above it: {offenders:?}");
    }
    let domains = ["coupon", "order", "balance", "product", "ranking", "user", "platform", "http", "state", "app"];
    let offenders = importing("store", &domains);
    assert!(offenders.is_empty(), "the store imports a domain or a layer above: {offenders:?}");
}
