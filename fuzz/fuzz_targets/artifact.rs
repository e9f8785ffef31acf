//! The artifact reader and the unpacker on hostile artifacts (see
//! `berth_fuzz_seeds` for how an input becomes artifact bytes).
//!
//! - `archive::read` and `archive::read_manifest` never panic, and agree:
//!   an artifact that reads has that manifest as its first entry.
//! - `unpack` into a fresh staging directory in a fresh parent: on error
//!   the staging directory is gone and the parent is empty again (nothing
//!   was left or created beside it), and it fails only where the reader
//!   does or for its own limits and mode rules; on success the parent holds
//!   only the staging directory, whose tree is exactly the manifest:
//!   `MANIFEST.toml` (parsing to the same manifest), `hooks/` with the
//!   listed hooks, `files/` with the listed entries, each of its type,
//!   size, mode and symlink target, and nothing else.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use berth_core::archive::{self, CheckOnly};
use berth_core::manifest::{Entry, Manifest, Mode};
use berth_core::progress::Silent;
use berth_core::unpack::{UnpackError, UnpackOptions, unpack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = berth_fuzz_seeds::artifact_bytes(data);
    let read = archive::read(&bytes[..], &mut CheckOnly);
    if let Ok(manifest) = &read {
        match archive::read_manifest(&bytes[..]) {
            Ok(first) => assert_eq!(&first, manifest, "read_manifest disagrees with read"),
            Err(e) => panic!("read accepts the artifact, read_manifest says: {e}"),
        }
    }

    // tmpfs when there is one: unpacking fsyncs every file.
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_owned()
    } else {
        std::env::temp_dir()
    };
    let parent = tempfile::Builder::new()
        .prefix("berth-fuzz-")
        .tempdir_in(base)
        .expect("a temporary directory");
    let staging = parent.path().join("staging");
    let unpacked = unpack(&bytes[..], &staging, &UnpackOptions::default(), &Silent);
    let left: Vec<_> = fs::read_dir(parent.path())
        .expect("the parent lists")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    match unpacked {
        Err(e) => {
            assert!(left.is_empty(), "unpack failed ({e}) and left {left:?}");
            assert!(
                !matches!(e, UnpackError::Cleanup { .. }),
                "unpack could not clean up: {e}"
            );
            if let Ok(manifest) = &read {
                assert!(
                    matches!(
                        e,
                        UnpackError::Limit { .. } | UnpackError::SpecialMode { .. }
                    ),
                    "the reader accepts the artifact of {}, unpack refuses it: {e}",
                    manifest.release()
                );
            }
        }
        Ok(unpacked) => {
            assert_eq!(
                left,
                ["staging"],
                "unpack created more than its staging dir"
            );
            match &read {
                Ok(manifest) => assert_eq!(&unpacked.manifest, manifest),
                Err(e) => panic!("unpack accepts what the reader refuses: {e}"),
            }
            check_tree(&staging, &unpacked.manifest);
        }
    }
});

/// The release directory holds exactly what `manifest` lists.
fn check_tree(staging: &Path, manifest: &Manifest) {
    let mut top: Vec<_> = fs::read_dir(staging)
        .expect("staging lists")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    top.sort();
    assert_eq!(top, ["MANIFEST.toml", "files", "hooks"]);
    let text = fs::read_to_string(staging.join("MANIFEST.toml")).expect("the manifest");
    assert_eq!(&Manifest::parse(&text).expect("it parses"), manifest);

    let mut found = BTreeMap::new();
    walk(&staging.join("hooks"), "", &mut found);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        manifest.hook_files.keys().collect::<Vec<_>>(),
        "hooks/ is not the manifest's hooks"
    );
    for (name, entry) in &manifest.hook_files {
        same(&staging.join("hooks").join(name), &found[name], entry);
    }
    found.clear();
    walk(&staging.join("files"), "", &mut found);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        manifest.files.keys().collect::<Vec<_>>(),
        "files/ is not the manifest's files"
    );
    for (rel, entry) in &manifest.files {
        same(&staging.join("files").join(rel), &found[rel], entry);
    }
}

/// Every entry below `dir`, by path relative to where the walk started,
/// without following symlinks.
fn walk(dir: &Path, prefix: &str, found: &mut BTreeMap<String, fs::Metadata>) {
    for entry in fs::read_dir(dir).expect("a directory lists") {
        let entry = entry.expect("an entry");
        let name = entry.file_name().into_string().expect("UTF-8 names");
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(entry.path()).expect("metadata");
        if meta.is_dir() {
            walk(&entry.path(), &rel, found);
        }
        found.insert(rel, meta);
    }
}

fn same(path: &Path, meta: &fs::Metadata, entry: &Entry) {
    let mode = Mode(meta.permissions().mode() & 0o7777);
    match entry {
        Entry::File {
            size, mode: want, ..
        } => {
            assert!(meta.is_file(), "{} is not a file", path.display());
            assert_eq!(meta.len(), *size, "{}", path.display());
            assert_eq!(mode, *want, "{}", path.display());
        }
        Entry::Dir { mode: want } => {
            assert!(meta.is_dir(), "{} is not a directory", path.display());
            assert_eq!(mode, *want, "{}", path.display());
        }
        Entry::Symlink { target } => {
            assert!(meta.is_symlink(), "{} is not a symlink", path.display());
            let link = fs::read_link(path).expect("a link");
            assert_eq!(link, Path::new(target), "{}", path.display());
        }
    }
}
