//! Ed25519 signatures in minisign's formats, byte for byte, so the `minisign`
//! CLI verifies what berth signs and berth verifies what the CLI signs.
//!
//! Guarantees:
//! - signatures are always the prehashed `ED` form: Ed25519 over the
//!   BLAKE2b-512 of the message, which is streamed, never held in memory;
//!   the legacy `Ed` form (Ed25519 over the raw message) is refused;
//! - [`verify`] accepts a signature only when its key id is one of the
//!   trusted keys, the message signature holds and the global signature
//!   (over the signature and the trusted comment) holds, so the trusted
//!   comment cannot be altered either;
//! - secret keys are read and written as minisign does: encrypted by XOR
//!   with scrypt output (parameters derived from opslimit and memlimit as
//!   libsodium's `crypto_pwhash_scryptsalsa208sha256` does), checked by
//!   BLAKE2b-256, or unencrypted (`minisign -G -W`);
//! - key files are written atomically, the secret key with mode 0600, and
//!   never over an existing file.
//!
//! Formats (all base64 is the standard alphabet with padding):
//! - public key: `untrusted comment: …` then
//!   base64(`Ed` ‖ key id\[8\] ‖ Ed25519 public key\[32\]);
//! - secret key: `untrusted comment: …` then base64(`Ed` ‖ kdf (`Sc` or
//!   `\0\0`) ‖ `B2` ‖ salt\[32\] ‖ opslimit u64 LE ‖ memlimit u64 LE ‖
//!   (key id\[8\] ‖ secret key\[64\] ‖ checksum\[32\]) XOR scrypt stream);
//! - signature: `untrusted comment: …`, base64(`ED` ‖ key id ‖
//!   signature\[64\]), `trusted comment: …`, base64(global signature\[64\]).

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use blake2::{Blake2b256, Blake2b512, Digest};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::{Zeroize, Zeroizing};

use crate::fsutil::{self, IoResultExt, PathError};
use crate::{Diagnose, Fault};

const SIG_ALG: &[u8; 2] = b"Ed";
const SIG_ALG_PREHASHED: &[u8; 2] = b"ED";
const KDF_SCRYPT: &[u8; 2] = b"Sc";
const KDF_NONE: &[u8; 2] = b"\0\0";
const CHK_BLAKE2B: &[u8; 2] = b"B2";

const KEY_ID_LEN: usize = 8;
const PUBLIC_KEY_LEN: usize = 2 + KEY_ID_LEN + 32;
const SIGNATURE_LEN: usize = 2 + KEY_ID_LEN + 64;
const SALT_LEN: usize = 32;
/// key id ‖ secret key (seed ‖ public key, as libsodium keeps it) ‖ checksum.
const KEYNUM_SK_LEN: usize = KEY_ID_LEN + 64 + 32;
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + SALT_LEN + 8 + 8 + KEYNUM_SK_LEN;

const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
const TRUSTED_PREFIX: &str = "trusted comment: ";
/// minisign reads the trusted comment line into 8192 bytes, prefix and
/// newline included; a longer one would be cut there and never verify.
const TRUSTED_COMMENT_MAX: usize = 8192 - TRUSTED_PREFIX.len() - 2;

/// The memory scrypt may ask for when reading a secret key: minisign's own
/// keys need 1 GiB; a file asking for far more is damaged or hostile, and
/// allocating it would kill the process instead of failing cleanly.
const SCRYPT_MAX_MEMORY: u64 = 4 << 30;

/// Errors from reading keys and signatures, signing and verifying.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("cannot read the data to {action}: {source}")]
    ReadMessage {
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{origin} is not a minisign {kind}: {reason}")]
    Malformed {
        kind: Kind,
        origin: String,
        reason: String,
    },
    #[error("secret key {origin} is encrypted and no password was given")]
    PasswordRequired { origin: String },
    #[error("wrong password for secret key {origin}: the decrypted key's checksum does not match")]
    WrongPassword { origin: String },
    #[error(
        "secret key {origin} asks scrypt for {needed} bytes of memory, more than the {SCRYPT_MAX_MEMORY} allowed"
    )]
    KdfTooCostly { origin: String, needed: u64 },
    #[error("`{}` already exists; refusing to overwrite a key", path.display())]
    KeyExists { path: PathBuf },
    #[error("the trusted comment {reason}")]
    BadTrustedComment { reason: String },
    #[error("cannot get random bytes from the system: {0}")]
    Random(String),
    #[error(
        "the signature was made by key {key_id}, which is not trusted (trusted: {})",
        list_ids(trusted)
    )]
    UnknownKey { key_id: KeyId, trusted: Vec<KeyId> },
    #[error(
        "the signature by key {key_id} does not match the data: the data or the signature was altered"
    )]
    BadSignature { key_id: KeyId },
    #[error(
        "the trusted comment of the signature by key {key_id} was altered: its global signature does not match"
    )]
    BadGlobalSignature { key_id: KeyId },
    #[error(
        "the signature by key {key_id} is a legacy non-prehashed `Ed` signature; only the prehashed `ED` form is accepted"
    )]
    LegacySignature { key_id: KeyId },
}

/// Which kind of minisign file a [`SignError::Malformed`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PublicKey,
    SecretKey,
    Signature,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::PublicKey => "public key",
            Kind::SecretKey => "secret key",
            Kind::Signature => "signature",
        })
    }
}

fn list_ids(ids: &[KeyId]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    ids.iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Diagnose for SignError {
    fn fault(&self) -> Fault {
        match self {
            SignError::Io(_) | SignError::ReadMessage { .. } | SignError::Random(_) => {
                Fault::Failure
            }
            _ => Fault::Input,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            SignError::Io(_) | SignError::ReadMessage { .. } | SignError::Random(_) => {
                return None;
            }
            SignError::Malformed { kind, .. } => format!(
                "give a {kind} file as `minisign` or `packager keygen` writes it; if it was copied, copy it again whole"
            ),
            SignError::PasswordRequired { .. } => {
                "set BERTH_SIGN_PASSWORD to the key's password".into()
            }
            SignError::WrongPassword { .. } => {
                "check BERTH_SIGN_PASSWORD: it must be the password the key was made with".into()
            }
            SignError::KdfTooCostly { .. } => {
                "the key file is damaged or was not made by minisign or berth; use another key".into()
            }
            SignError::KeyExists { .. } => {
                "choose another prefix, or move the old key pair away first if nothing needs it any more".into()
            }
            SignError::BadTrustedComment { .. } => {
                "use a single line of at most 8 KiB for the trusted comment".into()
            }
            SignError::UnknownKey { key_id, .. } => format!(
                "if key {key_id} is really yours, add its public key to the trusted keys; otherwise the data did not come from you"
            ),
            SignError::BadSignature { .. } => {
                "fetch the data and its signature again; if it persists, the source is not to be trusted".into()
            }
            SignError::BadGlobalSignature { .. } => {
                "fetch the signature again; if it persists, the source is not to be trusted".into()
            }
            SignError::LegacySignature { .. } => {
                "sign again with berth or a current minisign without `-l`".into()
            }
        })
    }
}

fn malformed(kind: Kind, origin: &str, reason: impl Into<String>) -> SignError {
    SignError::Malformed {
        kind,
        origin: origin.to_owned(),
        reason: reason.into(),
    }
}

fn origin_of(path: &Path) -> String {
    format!("`{}`", path.display())
}

/// The 8-byte id minisign puts in keys and signatures so a verifier can
/// tell which key to use.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// The raw bytes, as stored in the files.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    /// As minisign prints it: the bytes read as a little-endian u64, in
    /// 16 uppercase hex digits (what current minisign writes in the `.pub`
    /// comment; minisign 0.11 drops leading zeros there).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A public key, able to verify signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    id: KeyId,
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    /// Reads a `.pub` file (or a file holding just the base64 line).
    pub fn read(path: &Path) -> Result<PublicKey, SignError> {
        let text = fs::read_to_string(path).at("cannot read public key", path)?;
        Self::parse_from(&text, &origin_of(path))
    }

    /// Parses the text of a `.pub` file, or the bare base64 line that
    /// `minisign -P` takes.
    pub fn parse(text: &str) -> Result<PublicKey, SignError> {
        Self::parse_from(text, "the given text")
    }

    fn parse_from(text: &str, origin: &str) -> Result<PublicKey, SignError> {
        let bad = |reason: &str| malformed(Kind::PublicKey, origin, reason);
        let mut lines = lines(text);
        let first = lines.next().ok_or_else(|| bad("it is empty"))?;
        let line = if first.starts_with(UNTRUSTED_PREFIX) {
            lines
                .next()
                .ok_or_else(|| bad("it ends after its comment line"))?
        } else {
            first
        };
        if lines.next().is_some() {
            return Err(bad("it has more lines than a comment and a key"));
        }
        let bytes = decode(line, PUBLIC_KEY_LEN).map_err(|r| bad(&r))?;
        if &bytes[..2] != SIG_ALG {
            return Err(bad("its algorithm is not Ed25519 (`Ed`)"));
        }
        let id = key_id_at(&bytes[2..]);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&bytes[2 + KEY_ID_LEN..]);
        let key =
            VerifyingKey::from_bytes(&pk).map_err(|_| bad("its key is not a point on Ed25519"))?;
        if key.is_weak() {
            return Err(bad("its key is a weak (small-order) Ed25519 key"));
        }
        Ok(PublicKey { id, key })
    }

    /// The key id, as minisign prints it.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The base64 line, as `minisign -P` takes it.
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(PUBLIC_KEY_LEN);
        bytes.extend_from_slice(SIG_ALG);
        bytes.extend_from_slice(&self.id.0);
        bytes.extend_from_slice(self.key.as_bytes());
        BASE64.encode(bytes)
    }

    /// The text of a `.pub` file.
    pub fn to_text(&self) -> String {
        format!(
            "{UNTRUSTED_PREFIX}minisign public key {}\n{}\n",
            self.id,
            self.to_base64()
        )
    }
}

/// A secret key, decrypted. Its bytes are wiped when it is dropped.
pub struct SecretKey {
    id: KeyId,
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    /// Reads a `.key` file; `password` is needed when the key is encrypted
    /// (and ignored when it is not, as minisign does).
    pub fn read(path: &Path, password: Option<&str>) -> Result<SecretKey, SignError> {
        let text = Zeroizing::new(fs::read_to_string(path).at("cannot read secret key", path)?);
        Self::parse_from(&text, password, &origin_of(path))
    }

    /// Parses the text of a `.key` file.
    pub fn parse(text: &str, password: Option<&str>) -> Result<SecretKey, SignError> {
        Self::parse_from(text, password, "the given text")
    }

    fn parse_from(
        text: &str,
        password: Option<&str>,
        origin: &str,
    ) -> Result<SecretKey, SignError> {
        let bad = |reason: &str| malformed(Kind::SecretKey, origin, reason);
        let mut lines = lines(text);
        let first = lines.next().ok_or_else(|| bad("it is empty"))?;
        if !first.starts_with(UNTRUSTED_PREFIX) {
            return Err(bad("its first line is not an `untrusted comment:`"));
        }
        let line = lines
            .next()
            .ok_or_else(|| bad("it ends after its comment line"))?;
        let mut bytes = Zeroizing::new(decode(line, SECRET_KEY_LEN).map_err(|r| bad(&r))?);
        let (head, keynum_sk) = bytes.split_at_mut(SECRET_KEY_LEN - KEYNUM_SK_LEN);
        if &head[0..2] != SIG_ALG {
            return Err(bad("its algorithm is not Ed25519 (`Ed`)"));
        }
        if &head[4..6] != CHK_BLAKE2B {
            return Err(bad("its checksum algorithm is not BLAKE2b (`B2`)"));
        }
        let kdf = &head[2..4];
        let encrypted = if kdf == KDF_SCRYPT {
            true
        } else if kdf == KDF_NONE {
            false
        } else {
            return Err(bad("its key derivation is neither scrypt (`Sc`) nor none"));
        };
        if encrypted {
            let password = password.ok_or_else(|| SignError::PasswordRequired {
                origin: origin.to_owned(),
            })?;
            let salt = &head[6..6 + SALT_LEN];
            let opslimit = le_u64(&head[6 + SALT_LEN..]);
            let memlimit = le_u64(&head[6 + SALT_LEN + 8..]);
            let params = scrypt_params(opslimit, memlimit, origin)?;
            let stream = scrypt_stream(password, salt, &params, origin)?;
            for (b, s) in keynum_sk.iter_mut().zip(stream.iter()) {
                *b ^= s;
            }
        }
        let stored = &keynum_sk[KEY_ID_LEN + 64..];
        let computed = checksum(&keynum_sk[..KEY_ID_LEN + 64]);
        // minisign checks the checksum only when it decrypted (a wrong
        // password shows there); `minisign -G -W` leaves it all zeros.
        let unchecked = !encrypted && stored.iter().all(|&b| b == 0);
        if !unchecked && stored != computed.as_slice() {
            return Err(if encrypted {
                SignError::WrongPassword {
                    origin: origin.to_owned(),
                }
            } else {
                bad("its checksum does not match its key: the file is damaged")
            });
        }
        let id = key_id_at(keynum_sk);
        let mut pair = Zeroizing::new([0u8; 64]);
        pair.copy_from_slice(&keynum_sk[KEY_ID_LEN..KEY_ID_LEN + 64]);
        let key = SigningKey::from_keypair_bytes(&pair)
            .map_err(|_| bad("its public half does not belong to its secret half"))?;
        Ok(SecretKey { id, key })
    }

    /// The key id, as minisign prints it.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The text of a `.key` file, encrypted with `password` when there is
    /// one (scrypt with `limits`).
    fn to_text(
        &self,
        password: Option<&str>,
        limits: KdfLimits,
    ) -> Result<Zeroizing<String>, SignError> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(SECRET_KEY_LEN));
        bytes.extend_from_slice(SIG_ALG);
        bytes.extend_from_slice(if password.is_some() {
            KDF_SCRYPT
        } else {
            KDF_NONE
        });
        bytes.extend_from_slice(CHK_BLAKE2B);
        let mut keynum_sk = Zeroizing::new(Vec::with_capacity(KEYNUM_SK_LEN));
        keynum_sk.extend_from_slice(&self.id.0);
        keynum_sk.extend_from_slice(&self.key.to_keypair_bytes());
        let chk = checksum(&keynum_sk);
        keynum_sk.extend_from_slice(&chk);
        match password {
            Some(password) => {
                let mut salt = [0u8; SALT_LEN];
                random(&mut salt)?;
                let params = scrypt_params(limits.opslimit, limits.memlimit, "the new key")?;
                let stream = scrypt_stream(password, &salt, &params, "the new key")?;
                for (b, s) in keynum_sk.iter_mut().zip(stream.iter()) {
                    *b ^= s;
                }
                bytes.extend_from_slice(&salt);
                bytes.extend_from_slice(&limits.opslimit.to_le_bytes());
                bytes.extend_from_slice(&limits.memlimit.to_le_bytes());
            }
            // As `minisign -G -W` writes it: no salt, no limits.
            None => bytes.extend_from_slice(&[0u8; SALT_LEN + 16]),
        }
        bytes.extend_from_slice(&keynum_sk);
        let comment = if password.is_some() {
            "minisign encrypted secret key"
        } else {
            "minisign secret key (not encrypted)"
        };
        let mut text = Zeroizing::new(String::new());
        text.push_str(UNTRUSTED_PREFIX);
        text.push_str(comment);
        text.push('\n');
        text.push_str(&Zeroizing::new(BASE64.encode(&*bytes)));
        text.push('\n');
        Ok(text)
    }
}

/// The scrypt cost written into an encrypted secret key, in libsodium's
/// terms (`crypto_pwhash_scryptsalsa208sha256`): minisign derives scrypt's
/// N, r and p from these when it reads the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfLimits {
    pub opslimit: u64,
    pub memlimit: u64,
}

impl KdfLimits {
    /// What `minisign -G` uses (libsodium's `…_SENSITIVE`): N = 2^20, r = 8,
    /// p = 1, so 1 GiB of memory and a few seconds per use.
    pub const SENSITIVE: KdfLimits = KdfLimits {
        opslimit: 33_554_432,
        memlimit: 1_073_741_824,
    };

    /// Cheap limits (2 MiB, milliseconds) for tests that need an encrypted
    /// key and not its strength; never for a real key.
    pub const FOR_TESTS: KdfLimits = KdfLimits {
        opslimit: 65_536,
        memlimit: 16 << 20,
    };
}

/// A freshly generated key pair and its secret key file's text, encrypted
/// already (so the slow key derivation happens once, here).
pub struct KeyPair {
    pub secret: SecretKey,
    pub public: PublicKey,
    secret_text: Zeroizing<String>,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.public.id)
    }
}

impl KeyPair {
    /// A new key pair; with a password, the secret key is encrypted with
    /// minisign's default scrypt cost ([`KdfLimits::SENSITIVE`]).
    pub fn generate(password: Option<&str>) -> Result<KeyPair, SignError> {
        Self::generate_with_limits(password, KdfLimits::SENSITIVE)
    }

    /// [`KeyPair::generate`] with another scrypt cost.
    pub fn generate_with_limits(
        password: Option<&str>,
        limits: KdfLimits,
    ) -> Result<KeyPair, SignError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        random(&mut *seed)?;
        let mut id = [0u8; KEY_ID_LEN];
        random(&mut id)?;
        let secret = SecretKey {
            id: KeyId(id),
            key: SigningKey::from_bytes(&seed),
        };
        let secret_text = secret.to_text(password, limits)?;
        Ok(KeyPair {
            public: secret.public_key(),
            secret,
            secret_text,
        })
    }

    /// The paths [`KeyPair::write`] uses: `PREFIX.key` and `PREFIX.pub`.
    pub fn paths(prefix: &Path) -> (PathBuf, PathBuf) {
        let with = |ext: &str| {
            let mut p = prefix.as_os_str().to_owned();
            p.push(ext);
            PathBuf::from(p)
        };
        (with(".key"), with(".pub"))
    }

    /// Writes `PREFIX.key` (mode 0600) and `PREFIX.pub`, each atomically,
    /// refusing when either exists: overwriting a key can lose the only
    /// copy of a key that repositories and agents depend on.
    pub fn write(&self, prefix: &Path) -> Result<(PathBuf, PathBuf), SignError> {
        let (key_path, pub_path) = Self::paths(prefix);
        for path in [&key_path, &pub_path] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(SignError::KeyExists { path: path.clone() });
            }
        }
        let dir = match key_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        write_new(dir, &key_path, self.secret_text.as_bytes(), 0o600)?;
        if let Err(e) = write_new(dir, &pub_path, self.public.to_text().as_bytes(), 0o644) {
            // Leave no half pair behind: a lone secret key would block the
            // next try and has never been seen by anyone.
            let _ = fs::remove_file(&key_path);
            return Err(e);
        }
        Ok((key_path, pub_path))
    }
}

fn write_new(dir: &Path, dest: &Path, bytes: &[u8], mode: u32) -> Result<(), SignError> {
    let mut tmp = fsutil::temp_file_in(dir)?;
    // Narrow the mode while the file is still empty, before any secret is
    // in it.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .at("cannot set the mode of", tmp.path())?;
    tmp.write_all(bytes).at("cannot write", tmp.path())?;
    if !fsutil::persist_new(tmp, dest)? {
        return Err(SignError::KeyExists {
            path: dest.to_owned(),
        });
    }
    Ok(())
}

/// A signature file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    prehashed: bool,
    key_id: KeyId,
    signature: [u8; 64],
    untrusted_comment: String,
    trusted_comment: String,
    global_signature: [u8; 64],
}

impl Signature {
    /// Reads a `.minisig` file.
    pub fn read(path: &Path) -> Result<Signature, SignError> {
        let text = fs::read_to_string(path).at("cannot read signature", path)?;
        Self::parse_from(&text, &origin_of(path))
    }

    /// Parses the text of a `.minisig` file.
    pub fn parse(text: &str) -> Result<Signature, SignError> {
        Self::parse_from(text, "the given text")
    }

    /// Parses a `.minisig` file's bytes as read from `origin` (for
    /// messages): they must be UTF-8 text.
    pub fn parse_bytes(bytes: &[u8], origin: &str) -> Result<Signature, SignError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| malformed(Kind::Signature, origin, "it is not UTF-8 text"))?;
        Self::parse_from(text, origin)
    }

    fn parse_from(text: &str, origin: &str) -> Result<Signature, SignError> {
        let bad = |reason: &str| malformed(Kind::Signature, origin, reason);
        let mut lines = lines(text);
        let mut next = |n: usize| {
            lines
                .next()
                .ok_or_else(|| bad(&format!("it ends after {n} line(s); a signature has 4")))
        };
        let untrusted = next(0)?
            .strip_prefix(UNTRUSTED_PREFIX)
            .ok_or_else(|| bad("its first line is not an `untrusted comment:`"))?
            .to_owned();
        let sig_line = next(1)?;
        let trusted = next(2)?
            .strip_prefix(TRUSTED_PREFIX)
            .ok_or_else(|| bad("its third line is not a `trusted comment:`"))?
            .to_owned();
        let global_line = next(3)?;
        if lines.next().is_some() {
            return Err(bad("it has more than 4 lines"));
        }
        let bytes = decode(sig_line, SIGNATURE_LEN)
            .map_err(|r| bad(&format!("its signature line: {r}")))?;
        let prehashed = match &bytes[..2] {
            a if a == SIG_ALG_PREHASHED => true,
            a if a == SIG_ALG => false,
            _ => return Err(bad("its algorithm is neither `ED` nor `Ed`")),
        };
        let global =
            decode(global_line, 64).map_err(|r| bad(&format!("its global signature line: {r}")))?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[2 + KEY_ID_LEN..]);
        let mut global_signature = [0u8; 64];
        global_signature.copy_from_slice(&global);
        Ok(Signature {
            prehashed,
            key_id: key_id_at(&bytes[2..]),
            signature,
            untrusted_comment: untrusted,
            trusted_comment: trusted,
            global_signature,
        })
    }

    /// The text of a `.minisig` file.
    pub fn to_text(&self) -> String {
        let mut sig = Vec::with_capacity(SIGNATURE_LEN);
        sig.extend_from_slice(if self.prehashed {
            SIG_ALG_PREHASHED
        } else {
            SIG_ALG
        });
        sig.extend_from_slice(&self.key_id.0);
        sig.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_PREFIX}{}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            BASE64.encode(sig),
            self.trusted_comment,
            BASE64.encode(self.global_signature)
        )
    }

    /// The id of the key that made it (not yet verified).
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The trusted comment as written; only [`verify`] makes it trusted.
    pub fn unverified_trusted_comment(&self) -> &str {
        &self.trusted_comment
    }
}

/// What a successful [`verify`] vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    pub key_id: KeyId,
    pub trusted_comment: String,
}

/// Signs `message` (streamed through BLAKE2b-512) with `secret`, binding
/// `trusted_comment` (one line) to the signature.
pub fn sign(
    secret: &SecretKey,
    message: impl Read,
    trusted_comment: &str,
) -> Result<Signature, SignError> {
    if trusted_comment.contains(['\n', '\r']) {
        return Err(SignError::BadTrustedComment {
            reason: "spans several lines; it must be one".into(),
        });
    }
    if trusted_comment.len() > TRUSTED_COMMENT_MAX {
        return Err(SignError::BadTrustedComment {
            reason: format!(
                "is {} bytes; minisign reads at most {TRUSTED_COMMENT_MAX}",
                trusted_comment.len()
            ),
        });
    }
    let digest = prehash(message, "sign")?;
    let signature = secret.key.sign(&digest).to_bytes();
    let global_signature = secret
        .key
        .sign(&global_message(&signature, trusted_comment))
        .to_bytes();
    Ok(Signature {
        prehashed: true,
        key_id: secret.id,
        signature,
        untrusted_comment: format!("signature from berth key {}", secret.id),
        trusted_comment: trusted_comment.to_owned(),
        global_signature,
    })
}

/// Verifies `signature` over `message` (streamed) against the trusted
/// `public_keys`: the key id must be one of theirs, then the message
/// signature and the global signature must hold.
pub fn verify(
    public_keys: &[PublicKey],
    message: impl Read,
    signature: &Signature,
) -> Result<VerifiedSignature, SignError> {
    let key_id = signature.key_id;
    if !signature.prehashed {
        return Err(SignError::LegacySignature { key_id });
    }
    let key = public_keys
        .iter()
        .find(|k| k.id == key_id)
        .ok_or_else(|| SignError::UnknownKey {
            key_id,
            trusted: public_keys.iter().map(|k| k.id).collect(),
        })?;
    let digest = prehash(message, "verify")?;
    let sig = ed25519_dalek::Signature::from_bytes(&signature.signature);
    key.key
        .verify_strict(&digest, &sig)
        .map_err(|_| SignError::BadSignature { key_id })?;
    let global = ed25519_dalek::Signature::from_bytes(&signature.global_signature);
    key.key
        .verify_strict(
            &global_message(&signature.signature, &signature.trusted_comment),
            &global,
        )
        .map_err(|_| SignError::BadGlobalSignature { key_id })?;
    Ok(VerifiedSignature {
        key_id,
        trusted_comment: signature.trusted_comment.clone(),
    })
}

fn global_message(signature: &[u8; 64], trusted_comment: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + trusted_comment.len());
    m.extend_from_slice(signature);
    m.extend_from_slice(trusted_comment.as_bytes());
    m
}

fn prehash(mut message: impl Read, action: &'static str) -> Result<[u8; 64], SignError> {
    let mut hasher = Blake2b512::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match message.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(SignError::ReadMessage { action, source }),
        }
    }
    Ok(hasher.finalize().into())
}

fn checksum(sig_alg_less: &[u8]) -> [u8; 32] {
    let mut h = Blake2b256::new();
    h.update(SIG_ALG);
    h.update(sig_alg_less);
    h.finalize().into()
}

/// scrypt's (log2 N, r, p) from libsodium's opslimit and memlimit, exactly
/// as `crypto_pwhash_scryptsalsa208sha256`'s `pickparams` computes them,
/// since minisign stores only the limits.
fn pick_params(opslimit: u64, memlimit: u64) -> (u8, u32, u32) {
    let opslimit = opslimit.max(32_768);
    let r: u32 = 8;
    let pick_log_n = |max_n: u64| {
        let mut log_n: u8 = 1;
        while log_n < 63 && (1u64 << log_n) <= max_n / 2 {
            log_n += 1;
        }
        log_n
    };
    if opslimit < memlimit / 32 {
        (pick_log_n(opslimit / (u64::from(r) * 4)), r, 1)
    } else {
        let log_n = pick_log_n(memlimit / (u64::from(r) * 128));
        let max_rp = ((opslimit / 4) / (1u64 << log_n)).min(0x3fff_ffff);
        // max_rp ≤ 0x3fffffff, so it fits in u32 as libsodium's cast assumes.
        let p = u32::try_from(max_rp).unwrap_or(u32::MAX) / r;
        (log_n, r, p)
    }
}

fn scrypt_params(opslimit: u64, memlimit: u64, origin: &str) -> Result<scrypt::Params, SignError> {
    let (log_n, r, p) = pick_params(opslimit, memlimit);
    let needed = 128u64
        .saturating_mul(u64::from(r))
        .saturating_mul(1u64.checked_shl(u32::from(log_n)).unwrap_or(u64::MAX));
    if needed > SCRYPT_MAX_MEMORY {
        return Err(SignError::KdfTooCostly {
            origin: origin.to_owned(),
            needed,
        });
    }
    scrypt::Params::new(log_n, r, p).map_err(|_| {
        malformed(
            Kind::SecretKey,
            origin,
            format!(
                "its scrypt limits give unusable parameters (log2 N = {log_n}, r = {r}, p = {p})"
            ),
        )
    })
}

fn scrypt_stream(
    password: &str,
    salt: &[u8],
    params: &scrypt::Params,
    origin: &str,
) -> Result<Zeroizing<[u8; KEYNUM_SK_LEN]>, SignError> {
    let mut stream = Zeroizing::new([0u8; KEYNUM_SK_LEN]);
    scrypt::scrypt(password.as_bytes(), salt, params, &mut *stream)
        .map_err(|_| malformed(Kind::SecretKey, origin, "scrypt refused its output length"))?;
    Ok(stream)
}

fn random(buf: &mut [u8]) -> Result<(), SignError> {
    getrandom::fill(buf).map_err(|e| SignError::Random(e.to_string()))
}

fn key_id_at(bytes: &[u8]) -> KeyId {
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&bytes[..KEY_ID_LEN]);
    KeyId(id)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

/// Non-empty lines, each ending at its first `\r` as minisign reads them
/// (its `trim` zeroes every CR and LF): files edited on another system or
/// missing the final newline still read, and a comment is the one the CLI
/// verifies, which a parsed signature also writes back as it read it.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|l| l.split_once('\r').map_or(l, |(line, _)| line))
        .filter(|l| !l.trim().is_empty())
}

/// Decodes one base64 line that must hold exactly `len` bytes.
fn decode(line: &str, len: usize) -> Result<Vec<u8>, String> {
    let mut bytes = BASE64
        .decode(line.trim())
        .map_err(|e| format!("it is not valid base64 ({e})"))?;
    if bytes.len() != len {
        let n = bytes.len();
        bytes.zeroize();
        return Err(format!(
            "it holds {n} bytes instead of {len} (truncated or not this kind of file)"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Output, Stdio};

    fn pair() -> KeyPair {
        KeyPair::generate(None).unwrap()
    }

    fn sign_bytes(secret: &SecretKey, msg: &[u8], comment: &str) -> Signature {
        sign(secret, msg, comment).unwrap()
    }

    /// Runs the real `minisign` CLI in `dir`, feeding `stdin`; panics (never
    /// skips) when it is missing, since interop is what these tests prove.
    fn minisign(dir: &Path, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new("minisign")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "the `minisign` CLI is needed (apt-get install minisign; tests/run.sh installs it)",
            );
        // The CLI reads no password for an unencrypted key and may exit
        // before taking its input: a broken pipe here is not a failure.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    fn ok(out: &Output) -> String {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "minisign failed: {text}");
        text
    }

    #[test]
    fn sign_verify_round_trip_and_text_forms() {
        let kp = pair();
        let msg = b"channel index bytes".repeat(10_000);
        let sig = sign_bytes(&kp.secret, &msg, "seq:7\tchannel:stable");
        let text = sig.to_text();
        let parsed = Signature::parse(&text).unwrap();
        assert_eq!(parsed, sig);
        let ok = verify(std::slice::from_ref(&kp.public), msg.as_slice(), &parsed).unwrap();
        assert_eq!(ok.key_id, kp.public.key_id());
        assert_eq!(ok.trusted_comment, "seq:7\tchannel:stable");
        // The public key round-trips through its file text and the bare line.
        assert_eq!(PublicKey::parse(&kp.public.to_text()).unwrap(), kp.public);
        assert_eq!(PublicKey::parse(&kp.public.to_base64()).unwrap(), kp.public);
        assert!(kp.public.to_text().starts_with(&format!(
            "untrusted comment: minisign public key {}\n",
            kp.public.key_id()
        )));
        assert_eq!(kp.public.key_id().to_string().len(), 16);
        // CRLF and a missing final newline still read.
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(Signature::parse(crlf.trim_end()).unwrap(), sig);
    }

    /// Found by the `index` fuzz target: a comment line ending in two CRs
    /// kept one, so the signature did not round-trip through its text, and
    /// the global signature was checked over another comment than the
    /// CLI's, which ends every line at its first CR.
    #[test]
    fn lines_end_at_their_first_carriage_return_as_in_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let kp = pair();
        kp.write(&dir.path().join("k")).unwrap();
        let msg = b"an index\n";
        fs::write(dir.path().join("index"), msg).unwrap();
        let sig = sign_bytes(&kp.secret, msg, "sequence:3");
        for ending in ["\r\r", "\r\r\r\r\r", "\rjunk"] {
            let text = sig
                .to_text()
                .replace("sequence:3\n", &format!("sequence:3{ending}\n"));
            let parsed = Signature::parse(&text).unwrap();
            assert_eq!(parsed, sig, "{ending:?}");
            assert_eq!(Signature::parse(&parsed.to_text()).unwrap(), parsed);
            verify(std::slice::from_ref(&kp.public), &msg[..], &parsed).unwrap();
            fs::write(dir.path().join("index.minisig"), &text).unwrap();
            ok(&minisign(
                dir.path(),
                &["-V", "-p", "k.pub", "-m", "index"],
                "",
            ));
        }
        let key = kp.public.to_text().replace('\n', "\r\r\n");
        assert_eq!(PublicKey::parse(&key).unwrap(), kp.public);
    }

    #[test]
    fn secret_key_round_trips_with_and_without_password() {
        let plain = KeyPair::generate(None).unwrap();
        let back = SecretKey::parse(&plain.secret_text, None).unwrap();
        assert_eq!(back.key_id(), plain.secret.key_id());
        assert_eq!(back.public_key(), plain.public);
        // An unencrypted key ignores a password, as minisign does.
        SecretKey::parse(&plain.secret_text, Some("whatever")).unwrap();

        let enc = KeyPair::generate_with_limits(Some("s3cret"), KdfLimits::FOR_TESTS).unwrap();
        let back = SecretKey::parse(&enc.secret_text, Some("s3cret")).unwrap();
        assert_eq!(back.public_key(), enc.public);
        let err = SecretKey::parse(&enc.secret_text, Some("wrong")).unwrap_err();
        assert!(matches!(err, SignError::WrongPassword { .. }), "{err}");
        assert!(err.to_string().contains("checksum does not match"), "{err}");
        assert!(err.hint().unwrap().contains("BERTH_SIGN_PASSWORD"));
        let err = SecretKey::parse(&enc.secret_text, None).unwrap_err();
        assert!(matches!(err, SignError::PasswordRequired { .. }), "{err}");
    }

    #[test]
    fn default_generation_uses_minisign_cost() {
        let kp = KeyPair::generate(Some("pw")).unwrap();
        let line = kp.secret_text.lines().nth(1).unwrap();
        let bytes = BASE64.decode(line).unwrap();
        assert_eq!(&bytes[..6], b"EdScB2");
        assert_eq!(le_u64(&bytes[38..]), 33_554_432);
        assert_eq!(le_u64(&bytes[46..]), 1_073_741_824);
        let back = SecretKey::parse(&kp.secret_text, Some("pw")).unwrap();
        assert_eq!(back.public_key(), kp.public);
    }

    #[test]
    fn pick_params_matches_libsodium() {
        // minisign's default (…_SENSITIVE): the memory branch.
        assert_eq!(pick_params(33_554_432, 1_073_741_824), (20, 8, 1));
        // libsodium's …_INTERACTIVE: 524288 ops, 16 MiB.
        assert_eq!(pick_params(524_288, 16_777_216), (14, 8, 1));
        // The ops branch (opslimit < memlimit / 32).
        assert_eq!(pick_params(65_536, 16 << 20), (11, 8, 1));
        // The memory branch with several lanes.
        assert_eq!(pick_params(1 << 20, 2 << 20), (11, 8, 16));
        // Ops below the minimum count as 32768.
        assert_eq!(pick_params(0, 1 << 20), (10, 8, 1));
    }

    #[test]
    fn write_creates_both_files_with_modes_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("release");
        let kp = pair();
        let (key, pubf) = kp.write(&prefix).unwrap();
        assert_eq!(key, dir.path().join("release.key"));
        assert_eq!(pubf, dir.path().join("release.pub"));
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(PublicKey::read(&pubf).unwrap(), kp.public);
        assert_eq!(
            SecretKey::read(&key, None).unwrap().key_id(),
            kp.public.key_id()
        );
        let before = fs::read(&key).unwrap();
        let err = pair().write(&prefix).unwrap_err();
        assert!(matches!(err, SignError::KeyExists { .. }), "{err}");
        assert_eq!(fs::read(&key).unwrap(), before);
        // Only the .pub existing is refused too, and writes nothing.
        let other = dir.path().join("other");
        fs::write(dir.path().join("other.pub"), "x").unwrap();
        assert!(matches!(
            pair().write(&other),
            Err(SignError::KeyExists { .. })
        ));
        assert!(!dir.path().join("other.key").exists());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temp files left: {names:?}");
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused() {
        let kp = pair();
        let other = pair();
        let msg = b"index v1";
        let sig = sign_bytes(&kp.secret, msg, "sequence:1");
        let keys = [kp.public.clone()];

        let err = verify(&keys, &b"index v2"[..], &sig).unwrap_err();
        assert!(matches!(err, SignError::BadSignature { .. }), "{err}");

        let tampered = sig.to_text().replace("sequence:1", "sequence:9");
        let err = verify(&keys, &msg[..], &Signature::parse(&tampered).unwrap()).unwrap_err();
        assert!(matches!(err, SignError::BadGlobalSignature { .. }), "{err}");
        assert!(err.to_string().contains("trusted comment"), "{err}");

        // The untrusted comment is free to change.
        let relabelled = sig.to_text().replace("signature from berth", "anything");
        verify(&keys, &msg[..], &Signature::parse(&relabelled).unwrap()).unwrap();

        let err = verify(std::slice::from_ref(&other.public), &msg[..], &sig).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SignError::UnknownKey { .. }), "{err}");
        assert!(
            text.contains(&kp.public.key_id().to_string()) && text.contains("not trusted"),
            "{text}"
        );

        // A key with the same id but other key bytes: the signature fails.
        let impostor = PublicKey {
            id: kp.public.id,
            key: other.public.key,
        };
        let err = verify(&[impostor], &msg[..], &sig).unwrap_err();
        assert!(matches!(err, SignError::BadSignature { .. }), "{err}");

        // Several trusted keys (rotation): the right one is picked.
        verify(&[other.public.clone(), kp.public.clone()], &msg[..], &sig).unwrap();

        assert!(matches!(
            sign(&kp.secret, &msg[..], "two\nlines"),
            Err(SignError::BadTrustedComment { .. })
        ));
    }

    #[test]
    fn legacy_signatures_are_refused() {
        let kp = pair();
        let msg = b"data";
        // Build a valid legacy `Ed` signature: Ed25519 over the raw message.
        let mut sig = sign_bytes(&kp.secret, msg, "c");
        sig.prehashed = false;
        sig.signature = kp.secret.key.sign(msg).to_bytes();
        sig.global_signature = kp
            .secret
            .key
            .sign(&global_message(&sig.signature, "c"))
            .to_bytes();
        let parsed = Signature::parse(&sig.to_text()).unwrap();
        let err = verify(std::slice::from_ref(&kp.public), &msg[..], &parsed).unwrap_err();
        assert!(matches!(err, SignError::LegacySignature { .. }), "{err}");
        assert!(err.to_string().contains("only the prehashed `ED`"), "{err}");
    }

    #[test]
    fn malformed_and_truncated_files_are_refused() {
        let kp = KeyPair::generate_with_limits(Some("pw"), KdfLimits::FOR_TESTS).unwrap();
        let sig_text = sign_bytes(&kp.secret, b"m", "c").to_text();
        let pub_text = kp.public.to_text();
        let key_text: &str = &kp.secret_text;
        let is_malformed = |r: Result<(), SignError>| match r {
            Err(e @ SignError::Malformed { .. }) => {
                assert!(e.hint().is_some());
                assert_eq!(e.fault(), Fault::Input);
            }
            other => panic!("expected Malformed, got {other:?}"),
        };
        for cut in [0, 10, sig_text.len() / 2, sig_text.len() - 20] {
            is_malformed(Signature::parse(&sig_text[..cut]).map(drop));
        }
        for cut in [0, 30, pub_text.len() - 10] {
            is_malformed(PublicKey::parse(&pub_text[..cut]).map(drop));
        }
        for cut in [0, 40, key_text.len() - 10] {
            is_malformed(SecretKey::parse(&key_text[..cut], Some("pw")).map(drop));
        }
        is_malformed(
            Signature::parse(&sig_text.replace("trusted comment: c", "comment: c")).map(drop),
        );
        is_malformed(Signature::parse(&format!("{sig_text}extra line\n")).map(drop));
        is_malformed(PublicKey::parse("not base64 at all!").map(drop));
        // A signature line used as a public key: wrong length.
        is_malformed(PublicKey::parse(sig_text.lines().nth(1).unwrap()).map(drop));
        // A damaged secret key whose checksum no longer matches reads as a
        // wrong password, since the two cannot be told apart.
        let line = key_text.lines().nth(1).unwrap();
        let mut bytes = BASE64.decode(line).unwrap();
        bytes[100] ^= 1;
        let damaged = format!("untrusted comment: x\n{}\n", BASE64.encode(&bytes));
        assert!(matches!(
            SecretKey::parse(&damaged, Some("pw")),
            Err(SignError::WrongPassword { .. })
        ));
        // A hostile key asking for a huge scrypt is refused before allocating.
        let mut bytes = BASE64.decode(line).unwrap();
        bytes[38..46].copy_from_slice(&(1u64 << 40).to_le_bytes());
        bytes[46..54].copy_from_slice(&(1u64 << 45).to_le_bytes());
        let costly = format!("untrusted comment: x\n{}\n", BASE64.encode(&bytes));
        assert!(matches!(
            SecretKey::parse(&costly, Some("pw")),
            Err(SignError::KdfTooCostly { .. })
        ));
    }

    #[test]
    fn minisign_cli_verifies_our_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let kp = pair();
        kp.write(&dir.path().join("k")).unwrap();
        let msg = b"an index\n".repeat(1000);
        fs::write(dir.path().join("index"), &msg).unwrap();
        let sig = sign_bytes(&kp.secret, &msg, "channel:stable\tsequence:3");
        fs::write(dir.path().join("index.minisig"), sig.to_text()).unwrap();
        fs::write(dir.path().join("other.sig"), sig.to_text()).unwrap();
        let out = ok(&minisign(
            dir.path(),
            &["-V", "-p", "k.pub", "-m", "index"],
            "",
        ));
        assert!(
            out.contains("Trusted comment: channel:stable\tsequence:3"),
            "{out}"
        );
        ok(&minisign(
            dir.path(),
            &["-V", "-p", "k.pub", "-m", "index", "-x", "other.sig"],
            "",
        ));
        let b64 = kp.public.to_base64();
        ok(&minisign(
            dir.path(),
            &["-V", "-P", &b64, "-m", "index"],
            "",
        ));
        // And the CLI refuses what we refuse: a tampered message and comment.
        fs::write(dir.path().join("index"), b"changed").unwrap();
        assert!(
            !minisign(dir.path(), &["-V", "-p", "k.pub", "-m", "index"], "")
                .status
                .success()
        );
        fs::write(dir.path().join("index"), &msg).unwrap();
        let tampered = sig.to_text().replace("sequence:3", "sequence:4");
        fs::write(dir.path().join("index.minisig"), tampered).unwrap();
        assert!(
            !minisign(dir.path(), &["-V", "-p", "k.pub", "-m", "index"], "")
                .status
                .success()
        );
    }

    /// Signs `index` in `dir` with the CLI and verifies it with our code.
    fn cli_sign_then_verify(dir: &Path, key: &str, password: &str, public: &PublicKey) {
        let msg = b"signed by the CLI\n".repeat(500);
        fs::write(dir.join("index"), &msg).unwrap();
        let stdin = format!("{password}\n");
        ok(&minisign(
            dir,
            &[
                "-S",
                "-s",
                key,
                "-m",
                "index",
                "-x",
                "index.sig",
                "-t",
                "from the cli",
            ],
            &stdin,
        ));
        let sig = Signature::read(&dir.join("index.sig")).unwrap();
        let v = verify(std::slice::from_ref(public), msg.as_slice(), &sig).unwrap();
        assert_eq!(v.trusted_comment, "from the cli");
        assert_eq!(v.key_id, public.key_id());
        let err = verify(std::slice::from_ref(public), &b"other"[..], &sig).unwrap_err();
        assert!(matches!(err, SignError::BadSignature { .. }), "{err}");
        // The legacy form, as `minisign -S -l` makes it, is refused (with
        // unencrypted keys only: each use of an encrypted one costs seconds).
        if !password.is_empty() {
            return;
        }
        ok(&minisign(
            dir,
            &["-S", "-l", "-s", key, "-m", "index", "-x", "legacy.sig"],
            &stdin,
        ));
        let sig = Signature::read(&dir.join("legacy.sig")).unwrap();
        let err = verify(std::slice::from_ref(public), msg.as_slice(), &sig).unwrap_err();
        assert!(matches!(err, SignError::LegacySignature { .. }), "{err}");
    }

    #[test]
    fn cli_unencrypted_keys_sign_for_us_and_read_in_our_code() {
        let dir = tempfile::tempdir().unwrap();
        ok(&minisign(
            dir.path(),
            &["-G", "-W", "-p", "cli.pub", "-s", "cli.key"],
            "",
        ));
        let public = PublicKey::read(&dir.path().join("cli.pub")).unwrap();
        let secret = SecretKey::read(&dir.path().join("cli.key"), None).unwrap();
        assert_eq!(secret.public_key(), public);
        // Our key id matches the one the CLI writes in the comment (minisign
        // 0.11 drops leading zeros there, so compare as numbers).
        let comment = fs::read_to_string(dir.path().join("cli.pub")).unwrap();
        let printed = comment.lines().next().unwrap().rsplit(' ').next().unwrap();
        assert_eq!(
            u64::from_str_radix(printed, 16).unwrap(),
            u64::from_str_radix(&public.key_id().to_string(), 16).unwrap()
        );
        cli_sign_then_verify(dir.path(), "cli.key", "", &public);
        // Our own signature with the CLI's key verifies in the CLI.
        let sig = sign_bytes(&secret, b"x", "ours");
        fs::write(dir.path().join("x"), b"x").unwrap();
        fs::write(dir.path().join("x.minisig"), sig.to_text()).unwrap();
        ok(&minisign(
            dir.path(),
            &["-V", "-p", "cli.pub", "-m", "x"],
            "",
        ));
    }

    #[test]
    fn cli_encrypted_keys_sign_for_us_and_read_in_our_code() {
        let dir = tempfile::tempdir().unwrap();
        // minisign reads the password twice from stdin when it is no tty.
        ok(&minisign(
            dir.path(),
            &["-G", "-p", "cli.pub", "-s", "cli.key"],
            "pass phrase\npass phrase\n",
        ));
        let public = PublicKey::read(&dir.path().join("cli.pub")).unwrap();
        let secret = SecretKey::read(&dir.path().join("cli.key"), Some("pass phrase")).unwrap();
        assert_eq!(secret.public_key(), public);
        let err = SecretKey::read(&dir.path().join("cli.key"), Some("nope")).unwrap_err();
        assert!(matches!(err, SignError::WrongPassword { .. }), "{err}");
        cli_sign_then_verify(dir.path(), "cli.key", "pass phrase", &public);
    }

    #[test]
    fn our_keys_sign_in_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let plain = pair();
        plain.write(&dir.path().join("plain")).unwrap();
        cli_sign_then_verify(dir.path(), "plain.key", "", &plain.public);
        // Encrypted with the default (minisign's) cost, and with cheap
        // limits through both of libsodium's parameter branches.
        let limits = [
            KdfLimits::SENSITIVE,
            KdfLimits::FOR_TESTS,
            KdfLimits {
                opslimit: 1 << 20,
                memlimit: 2 << 20,
            },
        ];
        for (i, limits) in limits.into_iter().enumerate() {
            let kp = KeyPair::generate_with_limits(Some("our pw"), limits).unwrap();
            let prefix = format!("enc{i}");
            kp.write(&dir.path().join(&prefix)).unwrap();
            cli_sign_then_verify(dir.path(), &format!("{prefix}.key"), "our pw", &kp.public);
            // The CLI refuses a wrong password for our key too.
            let out = minisign(
                dir.path(),
                &[
                    "-S",
                    "-s",
                    &format!("{prefix}.key"),
                    "-m",
                    "index",
                    "-x",
                    "w.sig",
                ],
                "wrong\n",
            );
            assert!(!out.status.success());
        }
    }
}
