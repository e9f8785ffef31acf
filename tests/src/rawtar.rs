//! Hostile and broken artifacts, built byte by byte: a tar writer that
//! writes whatever it is told (any type flag, any path bytes, sizes that
//! disagree with the data, a wrong checksum, GNU long names and PAX
//! headers of any size), which the tar crate refuses to, and a manifest
//! helper whose digests match the data, so that the one check a case is
//! about is the one that fires.

use std::collections::BTreeMap;

use berth_core::manifest::{
    Entry, FORMAT, Hooks, Install, Manifest, Mode, PackageInfo, Rollback, Source,
};

/// One 512-byte tar header, as written.
#[derive(Debug, Clone)]
pub struct Header {
    pub name: Vec<u8>,
    /// The type flag: `b'0'` file, `b'5'` dir, `b'2'` symlink, `b'1'` hard
    /// link, `b'3'`/`b'4'` devices, `b'6'` fifo, `b'S'` GNU sparse,
    /// `b'L'`/`b'K'` GNU long name/link, `b'x'`/`b'g'` PAX.
    pub kind: u8,
    pub mode: u32,
    /// The size written in the header, whatever data follows.
    pub size: u64,
    pub link: Vec<u8>,
    /// The ustar prefix field (ustar format only).
    pub prefix: Vec<u8>,
    /// ustar (`ustar\0` `00`) rather than GNU (`ustar ` ` \0`).
    pub ustar: bool,
    /// Write a checksum off by one.
    pub bad_checksum: bool,
}

impl Header {
    pub fn new(name: impl AsRef<[u8]>, kind: u8, mode: u32, size: u64) -> Header {
        Header {
            name: name.as_ref().to_vec(),
            kind,
            mode,
            size,
            link: Vec::new(),
            prefix: Vec::new(),
            ustar: false,
            bad_checksum: false,
        }
    }

    pub fn link(mut self, target: impl AsRef<[u8]>) -> Header {
        self.link = target.as_ref().to_vec();
        self
    }

    /// The 512 bytes. Names and link names longer than their fields are
    /// cut (use a GNU long name or a PAX record for those).
    pub fn bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        let put = |b: &mut [u8; 512], at: usize, len: usize, v: &[u8]| {
            let n = v.len().min(len);
            b[at..at + n].copy_from_slice(&v[..n]);
        };
        let octal = |b: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{:0w$o}\0", v, w = len - 1);
            put(b, at, len, s.as_bytes());
        };
        put(&mut b, 0, 100, &self.name);
        octal(&mut b, 100, 8, u64::from(self.mode));
        octal(&mut b, 108, 8, 0);
        octal(&mut b, 116, 8, 0);
        octal(&mut b, 124, 12, self.size);
        octal(&mut b, 136, 12, 1_700_000_000);
        b[156] = self.kind;
        put(&mut b, 157, 100, &self.link);
        if self.ustar {
            put(&mut b, 257, 8, b"ustar\x0000");
            put(&mut b, 345, 155, &self.prefix);
        } else {
            put(&mut b, 257, 8, b"ustar  \0");
        }
        b[148..156].copy_from_slice(b"        ");
        let mut sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        if self.bad_checksum {
            sum += 1;
        }
        put(&mut b, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        b
    }
}

/// A tar stream being written.
#[derive(Debug, Default, Clone)]
pub struct RawTar {
    pub buf: Vec<u8>,
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    /// A header alone.
    pub fn header(&mut self, h: &Header) -> &mut Self {
        self.buf.extend_from_slice(&h.bytes());
        self
    }

    /// Data, padded to 512 bytes.
    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.resize(self.buf.len() + pad, 0);
        self
    }

    /// A header and its data.
    pub fn entry(&mut self, h: &Header, data: &[u8]) -> &mut Self {
        self.header(h).data(data)
    }

    pub fn file(&mut self, name: impl AsRef<[u8]>, mode: u32, data: &[u8]) -> &mut Self {
        self.entry(&Header::new(name, b'0', mode, data.len() as u64), data)
    }

    pub fn dir(&mut self, name: impl AsRef<[u8]>, mode: u32) -> &mut Self {
        self.header(&Header::new(name, b'5', mode, 0))
    }

    pub fn symlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        self.header(&Header::new(name, b'2', 0o777, 0).link(target))
    }

    /// A GNU long name (`b'L'`) or long link name (`b'K'`) record holding
    /// `value` and a NUL, for the next header.
    pub fn long(&mut self, kind: u8, value: &[u8]) -> &mut Self {
        let mut body = value.to_vec();
        body.push(0);
        self.entry(
            &Header::new("././@LongLink", kind, 0o644, body.len() as u64),
            &body,
        )
    }

    /// A PAX header (`b'x'` for the next entry, `b'g'` global) of records.
    pub fn pax(&mut self, kind: u8, records: &[(&str, &[u8])]) -> &mut Self {
        let body = pax_records(records);
        self.entry(
            &Header::new("./PaxHeaders/entry", kind, 0o644, body.len() as u64),
            &body,
        )
    }

    /// The two zero blocks that end an archive.
    pub fn end(&mut self) -> &mut Self {
        self.buf.resize(self.buf.len() + 1024, 0);
        self
    }

    /// The stream, compressed as an artifact.
    pub fn zst(&self) -> Vec<u8> {
        zst(&self.buf)
    }
}

/// PAX records: `LEN KEY=VALUE\n`, LEN counting itself.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len += 1;
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// `bytes` compressed with zstd at level 3.
pub fn zst(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).expect("compressing in memory")
}

/// A manifest for `webapp` `version+build`, installed at `/srv/webapp`,
/// without hooks, listing `files`.
pub fn manifest(version: &str, build: u64, files: BTreeMap<String, Entry>) -> Manifest {
    Manifest {
        format: FORMAT,
        package: PackageInfo {
            name: "webapp".into(),
            version: version.into(),
            build,
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
        rollback: Rollback { data_epoch: 1 },
        hook_files: BTreeMap::new(),
        files,
    }
}

/// The manifest entry of a file holding `data`.
pub fn file_entry(data: &[u8], mode: u32) -> Entry {
    Entry::File {
        sha256: berth_core::digest::sha256_bytes(data),
        size: data.len() as u64,
        mode: Mode(mode),
    }
}

pub fn dir_entry(mode: u32) -> Entry {
    Entry::Dir { mode: Mode(mode) }
}

pub fn symlink_entry(target: &str) -> Entry {
    Entry::Symlink {
        target: target.into(),
    }
}

/// A tar stream starting with `m`'s `MANIFEST.toml` and `files/`.
pub fn start(m: &Manifest) -> RawTar {
    let mut tar = RawTar::new();
    tar.file("MANIFEST.toml", 0o644, m.to_toml().as_bytes())
        .dir("files/", 0o755);
    tar
}
