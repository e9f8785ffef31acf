//! The hostile-artifact corpus: artifacts built byte by byte (see
//! `berth_tests::rawtar`) that try every way out of the release directory
//! and every way to mislead or exhaust the reader, and broken ones. Each is
//! given to `agent install --file` on a node with a good release installed,
//! and, where the reader alone decides, to `packager verify`. Each must
//! exit 2 naming the entry and the rule, create nothing outside the staging
//! dir (a canary directory beside the node root and the absolute paths the
//! cases aim at stay as they were), leave no `.staging-*`, leave the target
//! link, the current release tree and every other file of the node as they
//! were, run no hook, and change nothing in the state database but the
//! journal of one failed transaction that says why.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use berth_core::manifest::{Entry, Manifest};
use berth_core::rules;
use berth_tests::rawtar::{
    Header, RawTar, dir_entry, file_entry, manifest, pax_records, start, symlink_entry, zst,
};
use berth_tests::{Run, tree_state, write};

use crate::agent_support::{Node, NodeState, assert_unchanged, rel};

/// One hostile artifact and what its refusal must say.
struct Case {
    name: &'static str,
    artifact: Vec<u8>,
    /// Every one of these in stderr: the entry and the rule, verbatim.
    says: Vec<String>,
    /// Whether `packager verify` refuses it too (the caps of the unpacker
    /// are the agent's alone).
    verify: bool,
}

fn case(name: &'static str, artifact: Vec<u8>, says: &[&str]) -> Case {
    Case {
        name,
        artifact,
        says: says.iter().map(|s| (*s).to_owned()).collect(),
        verify: true,
    }
}

/// The release every case claims to be.
fn listing(entries: &[(&str, Entry)]) -> Manifest {
    let files: BTreeMap<String, Entry> = entries
        .iter()
        .map(|(p, e)| ((*p).to_owned(), e.clone()))
        .collect();
    manifest("6.6.6", 1, files)
}

const X: &[u8] = b"x\n";

fn x() -> Entry {
    file_entry(X, 0o644)
}

/// An artifact of `m` and `tar` (everything after `files/`), ended.
fn art(m: &Manifest, body: impl FnOnce(&mut RawTar)) -> Vec<u8> {
    let mut tar = start(m);
    body(&mut tar);
    tar.end().zst()
}

/// Every case. `outside` is an absolute path beside the node root that
/// the escapes aim at.
fn corpus(outside: &Path) -> Vec<Case> {
    let out = outside.display().to_string();
    let out_x = format!("{out}/x");
    let one = listing(&[("a", x())]);
    let climbs =
        |target: &str| format!("the symlink target `{target}` climbs above the release root");
    let mut cases = vec![
        // --- paths ------------------------------------------------------
        case(
            "a symlink to .. then a path through it (CVE shape)",
            art(
                &listing(&[("a", symlink_entry("b")), ("b", dir_entry(0o755))]),
                |t| {
                    t.symlink("files/a", "..").dir("files/a/x/", 0o755).file(
                        "files/a/x/y",
                        0o644,
                        X,
                    );
                },
            ),
            &["entry `files/a` is refused", &climbs("..")],
        ),
        case(
            "a symlink inside, then a file through it",
            art(
                &listing(&[("d", dir_entry(0o755)), ("d/a", symlink_entry(".."))]),
                |t| {
                    t.dir("files/d/", 0o755).symlink("files/d/a", "..").file(
                        "files/d/a/x",
                        0o644,
                        X,
                    );
                },
            ),
            &["entry `files/d/a/x` is refused: it is not listed in the manifest"],
        ),
        case(
            "an absolute symlink (CVE shape)",
            art(&listing(&[("a", symlink_entry("b")), ("b", x())]), |t| {
                t.symlink("files/a", &out_x).file("files/a", 0o644, X);
            }),
            &[&format!(
                "entry `files/a` is refused: the symlink points to the absolute path `{out_x}`, outside the release"
            )],
        ),
        case(
            "a symlink then a file of the same name (CVE shape)",
            art(&listing(&[("a", symlink_entry("b")), ("b", x())]), |t| {
                t.symlink("files/a", "b")
                    .file("files/b", 0o644, X)
                    .file("files/a", 0o644, X);
            }),
            &["entry `files/a` is refused: it appears twice in the artifact"],
        ),
        case(
            "a symlink then a directory of the same name (CVE shape)",
            art(
                &listing(&[("a", symlink_entry("b")), ("b", dir_entry(0o755))]),
                |t| {
                    t.dir("files/b/", 0o755)
                        .symlink("files/a", "b")
                        .dir("files/a/", 0o755);
                },
            ),
            &["entry `files/a` is refused: it appears twice in the artifact"],
        ),
        case(
            "an absolute path ////etc/x at the top",
            art(&one, |t| {
                t.file(format!("///{out_x}"), 0o644, X);
            }),
            &[&format!(
                "entry `///{out_x}` is refused: only `hooks/` and `files/` may follow the manifest"
            )],
        ),
        case(
            "an absolute path inside files/",
            art(&one, |t| {
                t.file("files////etc/x", 0o644, X);
            }),
            &["entry `files////etc/x` is refused: absolute paths are not allowed"],
        ),
        case(
            "a .. path",
            art(&one, |t| {
                t.file("files/../x", 0o644, X);
            }),
            &["entry `files/../x` is refused: `..` components are not allowed"],
        ),
        case(
            "a backslash",
            art(&one, |t| {
                t.file("files/..\\x", 0o644, X);
            }),
            &["entry `files/..\\x` is refused: backslashes are not allowed in paths"],
        ),
        case(
            "a NUL in a name (GNU long name)",
            art(&one, |t| {
                t.long(b'L', b"files/a\0/../../x").file("files/a", 0o644, X);
            }),
            &["is refused: NUL bytes are not allowed in paths"],
        ),
        case(
            "a name that is not UTF-8",
            art(&one, |t| {
                t.file(b"files/\xff", 0o644, X);
            }),
            &[&format!(
                "entry `files/\u{fffd}` is refused: {}",
                rules::NAME_NOT_UTF8
            )],
        ),
        case(
            "a duplicate entry",
            art(&one, |t| {
                t.file("files/a", 0o644, X).file("files/a", 0o644, X);
            }),
            &["entry `files/a` is refused: it appears twice in the artifact"],
        ),
        case(
            "names equal once NFC-normalized",
            art(&listing(&[("caf\u{e9}", x()), ("cafe\u{301}", x())]), |t| {
                t.file("files/caf\u{e9}", 0o644, X)
                    .file("files/cafe\u{301}", 0o644, X);
            }),
            &[
                "the manifest lists `caf\u{e9}`",
                &rules::nfc_collision("cafe\u{301}"),
            ],
        ),
        case(
            "a PAX path that climbs out, on a header that looks fine",
            art(&one, |t| {
                t.pax(b'x', &[("path", b"files/../../x")])
                    .file("files/a", 0o644, X);
            }),
            &["entry `files/../../x` is refused: `..` components are not allowed"],
        ),
        // --- types ------------------------------------------------------
        case(
            "a hard link",
            art(&listing(&[("a", x()), ("b", x())]), |t| {
                t.file("files/a", 0o644, X)
                    .header(&Header::new("files/b", b'1', 0o644, 0).link(&out_x));
            }),
            &[&format!("entry `files/b` is refused: {}", rules::HARD_LINK)],
        ),
        case(
            "a character device",
            art(&one, |t| {
                t.header(&Header::new("files/a", b'3', 0o644, 0));
            }),
            &[&format!("entry `files/a` is refused: {}", rules::DEVICE)],
        ),
        case(
            "a block device",
            art(&one, |t| {
                t.header(&Header::new("files/a", b'4', 0o644, 0));
            }),
            &[&format!("entry `files/a` is refused: {}", rules::DEVICE)],
        ),
        case(
            "a fifo",
            art(&one, |t| {
                t.header(&Header::new("files/a", b'6', 0o644, 0));
            }),
            &[&format!("entry `files/a` is refused: {}", rules::FIFO)],
        ),
        case(
            "a GNU sparse file",
            art(&one, |t| {
                t.entry(&Header::new("files/a", b'S', 0o644, 2), X);
            }),
            &[&format!("entry `files/a` is refused: {}", rules::SPARSE)],
        ),
        case(
            "a PAX sparse file",
            art(&one, |t| {
                t.pax(
                    b'x',
                    &[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")],
                )
                .file("files/a", 0o644, X);
            }),
            &[&format!(
                "entry `./PaxHeaders/entry` is refused: {}",
                rules::SPARSE
            )],
        ),
        case(
            "an unknown type (contiguous file)",
            art(&one, |t| {
                t.entry(&Header::new("files/a", b'7', 0o644, 2), X);
            }),
            &[&format!(
                "entry `files/a` is refused: {}",
                rules::OTHER_TYPE
            )],
        ),
        case(
            "data behind a directory header",
            art(&listing(&[("d", dir_entry(0o755))]), |t| {
                t.entry(&Header::new("files/d/", b'5', 0o755, 4096), &[7u8; 4096]);
            }),
            &["entry `files/d` is refused: only regular files may carry data"],
        ),
        // --- extension headers --------------------------------------------
        case(
            "a PAX size that disagrees with the header",
            art(&one, |t| {
                t.pax(b'x', &[("size", b"1024")]).file("files/a", 0o644, X);
            }),
            &[
                "entry `files/a` is refused: its PAX size record says 1024 bytes and its tar header 2 bytes",
            ],
        ),
        case(
            "an oversize GNU long name (4 GiB claimed)",
            art(&one, |t| {
                t.header(&Header::new("././@LongLink", b'L', 0o644, 4 << 30))
                    .data(b"files/aaaa");
            }),
            &[
                "entry `././@LongLink` is refused: its GNU long name is 4294967296 bytes, more than the 4608 allowed (it starts `files/aaaa`)",
            ],
        ),
        case(
            "an oversize PAX header (1 GiB claimed)",
            art(&one, |t| {
                t.header(&Header::new("./PaxHeaders/files/a", b'x', 0o644, 1 << 30))
                    .data(&pax_records(&[("path", b"files/a")]));
            }),
            &[
                "entry `./PaxHeaders/files/a` is refused: its PAX extended header is 1073741824 bytes, more than the 65536 allowed",
            ],
        ),
        case(
            "a global PAX header",
            art(&one, |t| {
                t.pax(b'g', &[("path", b"files/a")])
                    .file("files/a", 0o644, X);
            }),
            &["entry `./PaxHeaders/entry` is refused: global PAX headers are not allowed"],
        ),
        case(
            "two GNU long names before one entry",
            art(&one, |t| {
                t.long(b'L', b"files/a")
                    .long(b'L', b"files/b")
                    .file("files/a", 0o644, X);
            }),
            &["entry `././@LongLink` is refused: a second GNU long name comes before one entry"],
        ),
        case(
            "a GNU long name and a PAX path for one entry",
            art(&one, |t| {
                t.long(b'L', b"files/a")
                    .pax(b'x', &[("path", b"files/a")])
                    .file("files/a", 0o644, X);
            }),
            &["entry `files/a` is refused: both a GNU long name and a PAX path name it"],
        ),
        case(
            "an extension header with no entry after it",
            {
                let mut t = start(&one);
                t.file("files/a", 0o644, X).long(b'L', b"files/b");
                t.end().zst()
            },
            &["entry `././@LongLink` is refused: no entry follows this extension header"],
        ),
        // --- the stream ---------------------------------------------------
        case(
            "a bad header checksum",
            art(&one, |t| {
                let mut h = Header::new("files/a", b'0', 0o644, 2);
                h.bad_checksum = true;
                t.entry(&h, X);
            }),
            &["entry `files/a` is refused: its tar header's checksum is wrong"],
        ),
        case(
            "a truncated zstd stream",
            {
                let mut t = start(&listing(&[("a", file_entry(&[5u8; 300_000], 0o644))]));
                t.file("files/a", 0o644, &[5u8; 300_000]).end();
                let mut bytes = t.zst();
                bytes.truncate(bytes.len() - 20);
                bytes
            },
            &[
                "the artifact is corrupt, truncated or not tar+zstd",
                "in entry `files/a`",
            ],
        ),
        case(
            "a zstd window over the cap",
            {
                let mut t = start(&one);
                t.file("files/a", 0o644, X).end();
                let mut zstd = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
                zstd.set_parameter(zstd::zstd_safe::CParameter::WindowLog(25))
                    .unwrap();
                std::io::Write::write_all(&mut zstd, &t.buf).unwrap();
                zstd.finish().unwrap()
            },
            &["the artifact's zstd stream needs a window larger than the 16 MiB a reader allows"],
        ),
        case(
            "a decompression bomb: 64 MiB behind a 2-byte file",
            {
                let m = one.clone();
                let mut t = start(&m);
                t.header(&Header::new("files/a", b'0', 0o644, 64 << 20));
                let mut buf = t.buf;
                buf.resize(buf.len() + (64 << 20) + 1024, 0);
                zst(&buf)
            },
            &["entry `files/a` differs from the manifest: size is 67108864, the manifest says 2"],
        ),
        case(
            "a decompression bomb: 64 MiB of zeros after the archive",
            {
                let mut t = start(&one);
                t.file("files/a", 0o644, X).end();
                let mut buf = t.buf;
                buf.resize(buf.len() + (64 << 20), 0);
                zst(&buf)
            },
            &[
                "after the end of the tar archive come 1048577 bytes or more that are not zero padding of at most 1048576 bytes",
            ],
        ),
        case(
            "trailing garbage",
            {
                let mut bytes = art(&one, |t| {
                    t.file("files/a", 0o644, X);
                });
                bytes.extend(zst(b"#!/bin/sh\nrm -rf /\n"));
                bytes
            },
            &["after the end of the tar archive come 531 bytes or more that are not zero padding"],
        ),
        case(
            "the manifest not first",
            {
                let mut t = RawTar::new();
                t.dir("files/", 0o755)
                    .file("MANIFEST.toml", 0o644, one.to_toml().as_bytes())
                    .end();
                t.zst()
            },
            &["the first entry is `files`, but an artifact starts with `MANIFEST.toml`"],
        ),
        // --- against the manifest ------------------------------------------
        case(
            "an entry not in the manifest",
            art(&one, |t| {
                t.file("files/a", 0o644, X).file("files/extra", 0o644, X);
            }),
            &["entry `files/extra` is refused: it is not listed in the manifest"],
        ),
        case(
            "a size other than the manifest's",
            art(&listing(&[("a", file_entry(b"x", 0o644))]), |t| {
                t.file("files/a", 0o644, X);
            }),
            &["entry `files/a` differs from the manifest: size is 2, the manifest says 1"],
        ),
        case(
            "a digest other than the manifest's",
            art(&listing(&[("a", file_entry(b"y\n", 0o644))]), |t| {
                t.file("files/a", 0o644, X);
            }),
            &["entry `files/a` differs from the manifest: sha256 is"],
        ),
        case(
            "a mode other than the manifest's",
            art(&one, |t| {
                t.file("files/a", 0o755, X);
            }),
            &["entry `files/a` differs from the manifest: mode is 0755, the manifest says 0644"],
        ),
        case(
            "setuid on a path the package does not allow",
            art(&listing(&[("a", file_entry(X, 0o4755))]), |t| {
                t.file("files/a", 0o4755, X);
            }),
            &[&format!(
                "the manifest lists `a`: {}",
                rules::special_mode(berth_core::manifest::Mode(0o4755))
            )],
        ),
        case(
            "world-writable on a path the package does not allow",
            art(&listing(&[("a", file_entry(X, 0o666))]), |t| {
                t.file("files/a", 0o666, X);
            }),
            &[&format!(
                "the manifest lists `a`: {}",
                rules::special_mode(berth_core::manifest::Mode(0o666))
            )],
        ),
        case(
            "a missing entry",
            art(&listing(&[("a", x()), ("b", x())]), |t| {
                t.file("files/a", 0o644, X);
            }),
            &["`files/b` is in the manifest but not in the artifact"],
        ),
    ];
    // --- the unpacker's caps, past the reader -------------------------------
    let mut deep = Vec::new();
    let mut path = String::new();
    for _ in 0..129 {
        if !path.is_empty() {
            path.push('/');
        }
        path.push('d');
        deep.push((path.clone(), dir_entry(0o755)));
    }
    let deep: Vec<(&str, Entry)> = deep.iter().map(|(p, e)| (p.as_str(), e.clone())).collect();
    let deep_m = listing(&deep);
    cases.push(Case {
        verify: false,
        ..case(
            "a path deeper than 128 components",
            art(&deep_m, |t| {
                for (p, _) in &deep {
                    t.long(b'L', format!("files/{p}/").as_bytes())
                        .dir(format!("files/{p}/"), 0o755);
                }
            }),
            &[&format!(
                "entry `files/{}` goes past the path depth limit: 129, at most 128 allowed",
                deep[128].0
            )],
        )
    });
    let long_dir = "l".repeat(200);
    let mut long = Vec::new();
    let mut path = String::new();
    while path.len() <= 4096 {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&long_dir);
        long.push((path.clone(), dir_entry(0o755)));
    }
    let long: Vec<(&str, Entry)> = long.iter().map(|(p, e)| (p.as_str(), e.clone())).collect();
    let last = long.last().unwrap().0;
    let name = "n".repeat(256);
    cases.push(case(
        "a file name longer than 255 bytes",
        art(&listing(&[(&name, x())]), |t| {
            t.long(b'L', format!("files/{name}").as_bytes()).file(
                format!("files/{name}"),
                0o644,
                X,
            );
        }),
        &[&format!(
            "the manifest lists `{name}`: a path component is longer than 255 bytes"
        )],
    ));
    cases.push(Case {
        verify: false,
        ..case(
            "a path longer than 4096 bytes",
            art(&listing(&long), |_| {}),
            &[&format!("entry `files/{last}` goes past the path length (bytes) limit: {}, at most 4096 allowed", last.len())],
        )
    });
    cases
}

#[test]
fn every_hostile_artifact_is_refused_and_changes_nothing() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    let canary = node.env.join("canary");
    write(&canary.join("keep"), "canary\n");
    let outside = node.env.join("outside");
    let canary_before = tree_state(&canary);
    let releases = node.path("/var/lib/berth/releases/webapp");
    let current = tree_state(&node.release_dir(&v1.vb()));
    let target = node.target();

    let cases = corpus(&outside);
    assert!(cases.len() >= 30, "{} cases", cases.len());
    fs::create_dir_all(node.env.join("hostile")).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let file = format!("hostile/{i:02}.tar.zst");
        fs::write(node.env.join(&file), &c.artifact).unwrap();
        let before = node.state();
        let hooks = node.hook_log().len();
        let txns = transactions(&node);
        let run = node.agent(&["install", "--file", &file]);
        let context = format!("case {i} ({}):\n{run}", c.name);
        assert_eq!(run.code, 2, "{context}");
        for words in &c.says {
            assert!(
                run.stderr.contains(words.as_str()),
                "stderr lacks `{words}`; {context}"
            );
        }
        assert!(!outside.exists(), "`outside` was created; {context}");
        assert_eq!(
            tree_state(&canary),
            canary_before,
            "the canary changed; {context}"
        );
        let staging: Vec<String> = berth_tests::names(&releases)
            .into_iter()
            .filter(|n| n.starts_with(".staging-"))
            .collect();
        assert!(staging.is_empty(), "left {staging:?}; {context}");
        assert_eq!(node.target(), target, "the target link; {context}");
        assert_eq!(
            tree_state(&node.release_dir(&v1.vb())),
            current,
            "the current release; {context}"
        );
        assert_eq!(
            node.hooks_run_since(hooks),
            Vec::<String>::new(),
            "hooks ran; {context}"
        );
        assert_unchanged_but_the_journal(&node, &before, &txns, &run, c);
        if c.verify {
            let verify = node.env.packager(["verify", &file]);
            let context = format!("case {i} ({}), packager verify:\n{verify}", c.name);
            assert_eq!(verify.code, 2, "{context}");
            for words in &c.says {
                assert!(
                    verify.stderr.contains(words.as_str()),
                    "stderr lacks `{words}`; {context}"
                );
            }
        }
    }
    node.assert_current(&v1.vb());
}

/// The transactions in the journal, one line each.
fn transactions(node: &Node) -> Vec<String> {
    node.sql("select id || ' ' || kind || ' ' || result from transactions order by id")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Everything as before. A refusal from the manifest alone comes before
/// the node is touched; any other comes from the unpack, inside a
/// transaction: then the journal gained one failed install whose error is
/// the refusal, and the directories where the staging dir and the cached
/// copy were made and removed again have a new mtime, nothing else.
#[track_caller]
fn assert_unchanged_but_the_journal(
    node: &Node,
    before: &NodeState,
    txns: &[String],
    run: &Run,
    c: &Case,
) {
    let after = node.state();
    let now = transactions(node);
    if now == txns {
        // Refused from the manifest alone, before the node was touched.
        assert_unchanged(before, &after, run);
        return;
    }
    let scrub = |s: &NodeState| {
        let mut files = s.files.clone();
        for dir in ["var/lib/berth/cache", "var/lib/berth/releases/webapp"] {
            if let Some(v) = files.get_mut(dir) {
                // `MODE SIZE MTIME CONTENT`: the mtime goes.
                let parts: Vec<&str> = v.split(' ').collect();
                *v = format!("{} {}", parts[0], parts[1]);
            }
        }
        let db =
            s.db.lines()
                .filter(|l| {
                    !l.starts_with("INSERT INTO transactions")
                        && !l.starts_with("INSERT INTO steps")
                        && !l.starts_with("INSERT INTO sqlite_sequence")
                        && !l.starts_with("UPDATE sqlite_sequence")
                })
                .collect::<Vec<_>>()
                .join("\n");
        NodeState {
            files,
            db,
            status: s.status.clone(),
        }
    };
    assert_unchanged(&scrub(before), &scrub(&after), run);
    assert_eq!(now.len(), txns.len() + 1, "{}: {now:?}\n{run}", c.name);
    assert_eq!(&now[..txns.len()], txns, "{}\n{run}", c.name);
    assert!(
        now[txns.len()].ends_with(" install failed"),
        "{}: {now:?}",
        c.name
    );
    let error = node.sql("select error from transactions order by id desc limit 1");
    for words in &c.says {
        assert!(
            error.contains(words.as_str()),
            "{}: the journal says `{error}`",
            c.name
        );
    }
}

/// What `packager build` refuses in a payload, the agent refuses in an
/// artifact, and both say it with the same rule, the words of
/// `berth_core::rules` (or of the shared symlink check).
#[test]
fn the_packager_and_the_agent_refuse_in_the_same_words() {
    let env = berth_tests::TestEnv::new();
    let root = env.join("node");
    let is_root = env.tool("id", ["-u"]).ok().stdout.trim() == "0";
    let escape = berth_core::manifest::check_symlink_target("etc", "/etc").unwrap_err();
    let setuid = rules::special_mode(berth_core::manifest::Mode(0o4755));
    // (what, how the payload gets it, an artifact holding it, the rule)
    type Payload = Box<dyn Fn(&Path)>;
    let mut kinds: Vec<(&str, Payload, Option<Vec<u8>>, String)> = vec![
        (
            "fifo",
            Box::new(|dist: &Path| {
                let run = std::process::Command::new("mkfifo")
                    .arg(dist.join("it"))
                    .status()
                    .unwrap();
                assert!(run.success());
            }),
            Some(art(&listing(&[("it", x())]), |t| {
                t.header(&Header::new("files/it", b'6', 0o644, 0));
            })),
            rules::FIFO.to_owned(),
        ),
        (
            "socket",
            Box::new(|dist: &Path| {
                let listener = std::os::unix::net::UnixListener::bind(dist.join("it")).unwrap();
                drop(listener);
            }),
            // tar has no type for a socket.
            None,
            rules::SOCKET.to_owned(),
        ),
        (
            "escaping symlink",
            Box::new(|dist: &Path| std::os::unix::fs::symlink("/etc", dist.join("it")).unwrap()),
            Some(art(
                &listing(&[("it", symlink_entry("VERSION")), ("VERSION", x())]),
                |t| {
                    t.file("files/VERSION", 0o644, X)
                        .symlink("files/it", "/etc");
                },
            )),
            escape,
        ),
        (
            "setuid file",
            Box::new(|dist: &Path| {
                use std::os::unix::fs::PermissionsExt;
                fs::write(dist.join("it"), X).unwrap();
                fs::set_permissions(dist.join("it"), fs::Permissions::from_mode(0o4755)).unwrap();
            }),
            Some(art(&listing(&[("it", file_entry(X, 0o4755))]), |t| {
                t.file("files/it", 0o4755, X);
            })),
            setuid,
        ),
    ];
    if is_root {
        kinds.push((
            "device",
            Box::new(|dist: &Path| {
                let run = std::process::Command::new("mknod")
                    .arg(dist.join("it"))
                    .args(["c", "1", "3"])
                    .status()
                    .unwrap();
                assert!(run.success());
            }),
            Some(art(&listing(&[("it", x())]), |t| {
                t.header(&Header::new("files/it", b'3', 0o644, 0));
            })),
            rules::DEVICE.to_owned(),
        ));
    }
    for (i, (what, payload, artifact, rule)) in kinds.iter().enumerate() {
        let app = format!("app{i}");
        env.app(&app, berth_tests::MINIMAL_PACKAGE_TOML);
        payload(&env.join(&app).join("dist"));
        let built = env
            .packager(["build", &app, "--build", "1", "--out", "out"])
            .code(2);
        assert!(
            built.stderr.contains(&format!(
                "payload {}",
                if what.contains("symlink") {
                    "symlink `it` -> `/etc` leaves the payload: "
                } else {
                    "entry `it` is refused: "
                }
            )),
            "{what}: {built}"
        );
        assert!(
            built.stderr.contains(rule.as_str()),
            "{what}: packager lacks `{rule}`:\n{built}"
        );
        let Some(artifact) = artifact else { continue };
        let file = env.join(&format!("{app}.tar.zst"));
        fs::write(&file, artifact).unwrap();
        let installed = Run::from(
            env.cmd("agent")
                .arg("--root")
                .arg(&root)
                .arg("install")
                .arg("--file")
                .arg(&file)
                .output()
                .unwrap(),
        )
        .code(2);
        assert!(
            installed.stderr.contains(rule.as_str()),
            "{what}: agent lacks `{rule}`:\n{installed}"
        );
        assert!(
            installed.stderr.contains("`it`") || installed.stderr.contains("`files/it`"),
            "{what}: {installed}"
        );
    }
}
