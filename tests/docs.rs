//! Keeps `docs/configuration.md` true to the code: every ```toml block in it
//! is a complete config that must build, and so must every example config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use apimesh::core::{Config, Snapshot};

/// The contents of every block fenced with ```toml, with its first line.
fn toml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim();
        match current.take() {
            None => {
                if fence.starts_with("```") && fence.trim_start_matches('`').trim() == "toml" {
                    current = Some((i + 2, String::new()));
                }
            }
            Some((start, mut text)) => {
                if fence.starts_with("```") {
                    blocks.push((start, text));
                } else {
                    text.push_str(line);
                    text.push('\n');
                    current = Some((start, text));
                }
            }
        }
    }
    assert!(current.is_none(), "a ```toml block is never closed");
    blocks
}

/// Parses and builds `text`, describing the failure if it does not build.
fn check(what: &str, text: &str) -> Result<(), String> {
    match Config::from_toml(text).and_then(|c| Snapshot::build(c, 1)) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "{what} does not build:\n--- config ---\n{text}--- errors ---\n{e}\n"
        )),
    }
}

#[test]
fn every_toml_block_in_the_configuration_reference_builds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let markdown = std::fs::read_to_string(path).expect("docs/configuration.md is readable");
    let blocks = toml_blocks(&markdown);
    assert!(
        blocks.len() >= 10,
        "expected the reference to have examples, found {} ```toml blocks",
        blocks.len()
    );
    let failures: Vec<String> = blocks
        .iter()
        .filter_map(|(line, text)| {
            check(&format!("the ```toml block at line {line} of {path}"), text).err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} blocks fail:\n\n{}",
        failures.len(),
        blocks.len(),
        failures.join("\n")
    );
}

#[test]
fn every_example_config_builds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/config is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .toml files in {}", dir.display());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).expect("an example config is readable");
            check(&f.display().to_string(), &text).err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_toml_block_in_the_other_guides_builds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut failures = Vec::new();
    let mut guides: Vec<_> = std::fs::read_dir(&dir)
        .expect("docs/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .filter(|p| !p.ends_with("configuration.md"))
        .collect();
    guides.sort();
    for guide in guides {
        let markdown = std::fs::read_to_string(&guide).expect("a readable guide");
        for (line, text) in toml_blocks(&markdown) {
            if let Err(e) = check(
                &format!("the ```toml block at line {line} of {}", guide.display()),
                &text,
            ) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
