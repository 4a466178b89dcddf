//! Every relative link in README.md and docs/*.md leads somewhere: the file exists, and an `#anchor` names a
//! heading of that file (as GitHub derives anchors from headings). Links to other sites are not followed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The markdown files checked: README.md and every docs/*.md.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let docs = std::fs::read_dir(root.join("docs")).unwrap_or_else(|e| panic!("docs/: {e}"));
    let mut found: Vec<PathBuf> = docs
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .filter_map(|path| path.strip_prefix(root).ok().map(Path::to_path_buf))
        .collect();
    found.sort();
    files.extend(found);
    files
}

/// The text outside fenced code blocks, line by line (code blocks hold no links, and `#` there is a comment).
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_code = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                return false;
            }
            !in_code
        })
        .collect()
}

/// A line without its inline code spans (`` `...` ``), which hold no links either.
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (letters, digits, `-` and `_` kept), spaces as
/// `-`; a repeated heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    prose_lines(text)
        .into_iter()
        .filter(|line| line.starts_with('#'))
        .map(|line| {
            let title = line.trim_start_matches('#').trim();
            let slug: String = title
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            let n = seen.entry(slug.clone()).or_insert(0);
            let anchor = if *n == 0 { slug.clone() } else { format!("{slug}-{n}") };
            *n += 1;
            anchor
        })
        .collect()
}

/// The targets of the inline links `[text](target)` of a document, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut in_code = false;
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            found.push((n + 1, after[..end].trim().to_owned()));
            rest = &after[end..];
        }
    }
    found
}

/// `dir/../x` as `x`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every broken link of `files` (paths relative to `root`): `file:line: target: why`.
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut texts: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut read = |path: &Path| -> Option<String> {
        if let Some(text) = texts.get(path) {
            return Some(text.clone());
        }
        let text = std::fs::read_to_string(root.join(path)).ok()?;
        texts.insert(path.to_path_buf(), text.clone());
        Some(text)
    };
    let mut broken = Vec::new();
    for file in files {
        let Some(text) = read(file) else {
            broken.push(format!("{}: cannot be read", file.display()));
            continue;
        };
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').map_or((target.as_str(), None), |(p, a)| (p, Some(a)));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                normalize(&file.parent().unwrap_or(Path::new("")).join(path))
            };
            let at = format!("{}:{line}: ({target})", file.display());
            if !root.join(&linked).exists() {
                broken.push(format!("{at}: {} does not exist", linked.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if linked.extension().is_none_or(|ext| ext != "md") {
                broken.push(format!("{at}: an anchor into a file that is not markdown"));
                continue;
            }
            let Some(linked_text) = read(&linked) else {
                broken.push(format!("{at}: {} cannot be read", linked.display()));
                continue;
            };
            if !anchors(&linked_text).iter().any(|a| a == anchor) {
                broken.push(format!("{at}: {} has no heading with the anchor #{anchor}", linked.display()));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_and_anchor_of_the_docs_resolves() {
    let root = repo_root();
    let files = documents(&root);
    assert!(files.len() > 1, "docs/ holds no markdown: {files:?}");
    let broken = broken_links(&root, &files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_derived_as_github_derives_them() {
    let text = "# The CLI: `shadow-fleet`\n## cargo-lambda's dev loop\n```sh\n# a comment\n```\n## Drift\n## Drift\n";
    assert_eq!(anchors(text), ["the-cli-shadow-fleet", "cargo-lambdas-dev-loop", "drift", "drift-1"]);
}

#[test]
fn a_missing_file_and_a_missing_anchor_are_reported() {
    let dir = std::env::temp_dir().join(format!("doc-links-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("docs")).unwrap_or_else(|e| panic!("{e}"));
    let readme = "# Top\n\n[ok](docs/a.md#part-one) [self](#top) [gone](docs/b.md) [no anchor](docs/a.md#part-two)\n\
                  `[in code](docs/c.md)` [web](https://example.com/x)\n```\n[in a block](docs/d.md)\n```\n";
    std::fs::write(dir.join("README.md"), readme).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("docs/a.md"), "# A\n## Part one\n[back](../README.md#top)\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let broken = broken_links(&dir, &[PathBuf::from("README.md"), PathBuf::from("docs/a.md")]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(broken.len(), 2, "{broken:#?}");
    assert!(broken[0].contains("docs/b.md does not exist"), "{broken:#?}");
    assert!(broken[1].contains("no heading with the anchor #part-two"), "{broken:#?}");
}
