//! The tests read nothing outside the repository but the parts `scripts/setup` installs into its
//! cache: a clone in a new directory, with nothing beside it, passes the README's test command.
//!
//! Reads every Rust source, script and Python file of the repository and checks each relative path
//! literal (`"../…"`) stays inside it — resolved against the crate's manifest directory, where
//! `env!("CARGO_MANIFEST_DIR")` paths start, or against the file's own directory for `#[path]` —
//! and that nothing names the development workspace's fact folder (whose files the tests read from
//! `testdata/`).

use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the examples crate sits in the repository")
        .to_owned()
}

/// Every file worth scanning, skipping build output and VCS data.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | "testdata" | "corpus" | "artifacts"
            ) {
                sources(&path, out);
            }
        } else if path
            .extension()
            .is_some_and(|e| ["rs", "py", "sh"].iter().any(|x| e.eq_ignore_ascii_case(x)))
            || path.parent().is_some_and(|p| p.ends_with("scripts"))
            || path.ends_with(".ci/run")
        {
            out.push(path);
        }
    }
}

/// The directory holding the nearest `Cargo.toml` at or above `file`.
fn crate_dir(file: &Path) -> PathBuf {
    let mut dir = file.parent().unwrap();
    loop {
        if dir.join("Cargo.toml").exists() {
            return dir.to_owned();
        }
        dir = dir.parent().unwrap();
    }
}

/// `base/rel`, with `..` resolved lexically.
fn resolve(base: &Path, rel: &str) -> PathBuf {
    let mut out = base.to_owned();
    for part in Path::new(rel).components() {
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

/// The relative path literals of one line: `"../…"`.
fn relative_literals(line: &str) -> impl Iterator<Item = &str> {
    line.match_indices("\"../").filter_map(move |(at, _)| {
        let rest = line.get(at + 1..)?;
        let end = rest.find('"')?;
        rest.get(..end)
    })
}

#[test]
fn tests_read_nothing_outside_the_repository() {
    let root = root();
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(
        files.len() > 50,
        "expected the repository's sources under {}",
        root.display()
    );
    // Built from pieces so this file does not match itself.
    let forbidden = [["shared", "/facts"].concat(), ["../", "shared"].concat()];
    let mut problems = Vec::new();
    // This file names paths that leave, to show the check sees them.
    let this = root.join(file!());
    for file in files.iter().filter(|f| **f != this) {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        for (n, line) in text.lines().enumerate() {
            for word in &forbidden {
                if line.contains(word.as_str()) {
                    problems.push(format!(
                        "{shown}:{}: names `{word}`, outside the repository (copy the file into testdata/)",
                        n + 1
                    ));
                }
            }
            for rel in relative_literals(line) {
                let base = if line.contains("#[path") {
                    file.parent().unwrap().to_owned()
                } else {
                    crate_dir(file)
                };
                if !resolve(&base, rel).starts_with(&root) {
                    problems.push(format!("{shown}:{}: `{rel}` leaves the repository", n + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "paths outside the repository:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_sees_a_path_that_leaves() {
    let root = root();
    let file = root.join("cortex-engines/tests/errors/main.rs");
    assert!(!resolve(&crate_dir(&file), "../../elsewhere/x.txt").starts_with(&root));
    assert!(resolve(&crate_dir(&file), "../testdata/x.txt").starts_with(&root));
    let line = r#"    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../elsewhere")"#;
    assert_eq!(
        relative_literals(line).collect::<Vec<_>>(),
        ["../../elsewhere"]
    );
}
