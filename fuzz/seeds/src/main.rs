//! Writes a few valid inputs for each fuzz target into `DIR/<target>/`
//! (`seeds DIR`): a real artifact made by `archive::pack` from a tiny
//! payload (as it is, and as its tar stream), its manifest, a minimal
//! manifest, a channel index and a signature and public key of it. The
//! same program writes the same artifact bytes every time; the key and
//! the signature are new each run.
//!
//! `seeds --tar-bombs DIR` writes instead two `artifact` inputs of about
//! 100 KiB for a known gap in reading tar headers: a GNU long-name entry
//! and a PAX header each claiming 3 GiB, followed by as many zeros, which
//! the tar crate reads whole into memory before the first entry.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use berth_core::archive::{self, PackSources};
use berth_core::manifest::{
    Entry, FORMAT, Hooks, Install, Manifest, Mode, PackageInfo, Rollback, Source,
};
use berth_core::repo::ChannelIndex;
use berth_core::sign::{self, KdfLimits, KeyPair};
use berth_core::unpack::{UnpackOptions, unpack};
use berth_fuzz_seeds::{raw_input, tar_input};

/// The channel and package the `index` target parses for.
const CHANNEL: &str = "stable";
const PACKAGE: &str = "webapp";

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if let [flag, dir] = &args[..]
        && flag == "--tar-bombs"
    {
        return tar_bombs(Path::new(dir));
    }
    let [out] = &args[..] else {
        panic!(
            "usage: seeds DIR (writes DIR/manifest, DIR/index, DIR/artifact) | seeds --tar-bombs DIR"
        );
    };
    let out = Path::new(out);
    let work = tempfile::tempdir().expect("a temporary directory");

    let (artifact, manifest) = artifact(work.path());
    // Exactly what the target checks, so a seed is known to reach the end.
    assert_eq!(
        archive::read(&artifact[..], &mut archive::CheckOnly).expect("the seed artifact reads"),
        manifest
    );
    let staging = work.path().join("staging");
    unpack(
        &artifact[..],
        &staging,
        &UnpackOptions::default(),
        &berth_core::progress::Silent,
    )
    .expect("the seed artifact unpacks");

    write(out, "artifact", "raw", &raw_input(&artifact));
    write(out, "artifact", "tar", &tar_input(&artifact));
    let minimal = minimal_manifest();
    let bare = {
        let dir = work.path().join("bare");
        fs::create_dir(&dir).expect("a directory");
        pack(&dir, minimal.clone(), vec![])
    };
    write(out, "artifact", "tar-bare", &tar_input(&bare));

    write(out, "manifest", "full.toml", manifest.to_toml().as_bytes());
    write(
        out,
        "manifest",
        "minimal.toml",
        minimal.to_toml().as_bytes(),
    );

    let sha = berth_core::digest::sha256_bytes(&artifact);
    let json = format!(
        r#"{{"format": 1, "channel": "{CHANNEL}", "package": "{PACKAGE}", "sequence": 3,
"updated": "2024-05-02T08:30:00Z", "releases": [
{{"version": "1.4.2-rc.1", "build": 6, "sha256": "{sha}", "size": {size},
 "published": "2024-05-01T12:00:00Z", "yanked": true}},
{{"version": "1.4.2", "build": 7, "sha256": "{sha}", "size": {size},
 "published": "2024-05-02T08:30:00.123456789+02:00", "promoted_from": "staging",
 "source": {{"commit": "3f2a9c1", "branch": "main", "url": "https://ci.example/1"}}}}]}}"#,
        size = artifact.len()
    );
    let index = ChannelIndex::parse(json.as_bytes(), CHANNEL, PACKAGE).expect("the seed index");
    let index_json = index.to_json();
    write(out, "index", "index.json", &index_json);
    write(out, "index", "handwritten.json", json.as_bytes());
    let keys = KeyPair::generate_with_limits(None, KdfLimits::FOR_TESTS).expect("a key pair");
    let signature = sign::sign(
        &keys.secret,
        &index_json[..],
        "timestamp:1714638600\tfile:x",
    )
    .expect("a signature");
    write(
        out,
        "index",
        "index.json.minisig",
        signature.to_text().as_bytes(),
    );
    write(out, "index", "key.pub", keys.public.to_text().as_bytes());
}

fn write(out: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = out.join(target);
    fs::create_dir_all(&dir).expect("the corpus directory");
    fs::write(dir.join(name), bytes).expect("a seed file");
}

/// A tiny payload with every kind of entry (a directory, files of 0, 5
/// and 512 bytes, an executable, a symlink, a name long enough for a GNU
/// long-name header) and a hook, packed.
fn artifact(work: &Path) -> (Vec<u8>, Manifest) {
    let root = work.join("payload");
    let long =
        "a-directory-name-long-enough/for-the-whole-path-to-need-gnu-long-names-in-tar/x.txt";
    let files: [(&str, &[u8], u32); 5] = [
        ("bin/app", b"#!/bin/sh\necho hi\n", 0o755),
        ("etc/app.conf", b"port=1\n", 0o640),
        ("etc/empty", b"", 0o644),
        ("etc/block", &[b'x'; 512], 0o644),
        (long, b"long\n", 0o644),
    ];
    let mut entries = BTreeMap::new();
    for dir in [
        "bin",
        "etc",
        "a-directory-name-long-enough",
        "a-directory-name-long-enough/for-the-whole-path-to-need-gnu-long-names-in-tar",
    ] {
        fs::create_dir_all(root.join(dir)).expect("a payload directory");
        entries.insert(dir.to_owned(), Entry::Dir { mode: Mode(0o755) });
    }
    for (rel, data, mode) in files {
        let path = root.join(rel);
        fs::write(&path, data).expect("a payload file");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("a mode");
        entries.insert(
            rel.to_owned(),
            Entry::File {
                sha256: String::new(),
                size: data.len() as u64,
                mode: Mode(mode),
            },
        );
    }
    symlink("bin/app", root.join("current")).expect("a symlink");
    entries.insert(
        "current".into(),
        Entry::Symlink {
            target: "bin/app".into(),
        },
    );
    let hook = work.join("health");
    fs::write(&hook, b"#!/bin/sh\nexit 0\n").expect("a hook");
    let (sha256, size) = berth_core::digest::sha256_file(&hook).expect("the hook's digest");
    let mut manifest = minimal_manifest();
    manifest.package.description = Some("A \"tiny\" app\nfor the fuzzer".into());
    manifest.source = Source {
        commit: Some("3f2a9c1".into()),
        branch: Some("main".into()),
        url: None,
    };
    manifest.install.shared = vec!["log".into()];
    manifest.install.preserve = vec!["etc/app.conf".into()];
    manifest.install.env_file = true;
    manifest.hooks = Hooks {
        health: Some("hooks/health".into()),
        ..Hooks::default()
    };
    manifest.rollback = Rollback { data_epoch: 2 };
    manifest.hook_files.insert(
        "health".into(),
        Entry::File {
            sha256,
            size,
            mode: Mode(0o755),
        },
    );
    manifest.files = entries;
    manifest.check().expect("the seed manifest is valid");
    let artifact = pack(&root, manifest.clone(), vec![("health".into(), hook)]);
    let manifest = archive::read_manifest(&artifact[..]).expect("the packed manifest");
    (artifact, manifest)
}

fn pack(root: &Path, mut manifest: Manifest, hooks: Vec<(String, std::path::PathBuf)>) -> Vec<u8> {
    let sources = PackSources {
        hooks,
        payload_root: root.to_owned(),
        mtime: 1_700_000_000,
    };
    let scratch = tempfile::tempfile().expect("a scratch file");
    let (bytes, _) = archive::pack(
        &mut manifest,
        &sources,
        scratch,
        Vec::new(),
        1,
        &berth_core::progress::Silent,
    )
    .expect("packing the seed payload");
    bytes
}

/// A manifest with no hooks and no files.
fn minimal_manifest() -> Manifest {
    Manifest {
        format: FORMAT,
        package: PackageInfo {
            name: PACKAGE.into(),
            version: "1.4.2".into(),
            build: 7,
            description: None,
        },
        source: Source::default(),
        install: Install {
            target: "/srv/webapp".into(),
            keep_releases: 3,
            shared: vec![],
            preserve: vec![],
            env_file: false,
            allow_special_modes: vec![],
        },
        hooks: Hooks::default(),
        rollback: Rollback::default(),
        hook_files: BTreeMap::new(),
        files: BTreeMap::new(),
    }
}

/// The inputs of `--tar-bombs` (see the module docs): `longname-bomb` and
/// `pax-bomb`, artifacts as they are ([`berth_fuzz_seeds::RAW`]).
fn tar_bombs(out: &Path) {
    use std::io::Write;
    const SIZE: u64 = 3 << 30;
    fs::create_dir_all(out).expect("the output directory");
    for (name, kind, entry) in [
        ("longname-bomb", b'L', &b"././@LongLink"[..]),
        ("pax-bomb", b'x', &b"PaxHeaders/x"[..]),
    ] {
        let mut header = [0u8; 512];
        header[..entry.len()].copy_from_slice(entry);
        header[100..108].copy_from_slice(b"0000644\0");
        header[124..136].copy_from_slice(format!("{SIZE:011o}\0").as_bytes());
        header[156] = kind;
        header[257..265].copy_from_slice(b"ustar  \0");
        berth_fuzz_seeds::fix_checksums(&mut header);
        let mut input = vec![berth_fuzz_seeds::RAW];
        let mut zstd = zstd::stream::write::Encoder::new(&mut input, 1).expect("an encoder");
        zstd.write_all(&header).expect("compressing");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..SIZE >> 20 {
            zstd.write_all(&zeros).expect("compressing");
        }
        zstd.finish().expect("compressing");
        fs::write(out.join(name), &input).expect("an input file");
    }
}
