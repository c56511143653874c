//! Replays the regression corpus (tests/corpus/request/) through the input agent's contract,
//! reading each file exactly as the fuzz target (rust/fuzz) reads its input, so that a fuzzer
//! artifact can be dropped into the directory as it is.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use endosec_dataplane::http::contract;

/// The fuzz target's reading: the first byte picks the piece size (1..=64), the rest is sent.
fn replay(data: &[u8]) {
    if let Some((&first, rest)) = data.split_first() {
        contract::check(rest, usize::from(first % 64) + 1);
    }
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|p| p.is_file()
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    paths.sort();
    paths
}

#[test]
fn request_corpus_keeps_the_contract() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/request");
    let paths = inputs(&dir);
    assert!(!paths.is_empty(), "no input in {}", dir.display());
    // Every file is replayed, so one run names all the inputs that break the contract.
    let broken: Vec<String> = paths.iter()
        .filter(|path| {
            let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            panic::catch_unwind(|| replay(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(broken.is_empty(), "{} of {} inputs break the contract: {broken:#?}",
            broken.len(), paths.len());
}
