//! Signing: `packager keygen` makes a minisign key pair; every command that
//! writes a channel index signs it when given a secret key
//! ([`SignOptions`]); `packager resign` signs indexes again with a fresh
//! expiry (and, after a restore from backup, a sequence past the nodes').

use std::path::PathBuf;

use berth_core::name;
use berth_core::repo::{IndexSigner, Lifetime, Open, Repository};
use berth_core::sign::{self, KeyId, KeyPair, PublicKey, SecretKey, Signature};

use crate::Error;

/// The signing flags of a command that writes indexes.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// `--sign-key` / `BERTH_SIGN_KEY`: the minisign secret key.
    pub key: Option<PathBuf>,
    /// `--expires`: the lifetime of the indexes signed (default
    /// [`berth_core::repo::DEFAULT_LIFETIME`]).
    pub expires: Option<String>,
    /// `BERTH_SIGN_PASSWORD`, never a flag.
    pub password: Option<String>,
}

impl SignOptions {
    /// The signer, with the key read and decrypted, or `None` without a
    /// key. Called before a command changes anything, so a wrong key or
    /// password changes nothing.
    pub fn signer(&self) -> Result<Option<IndexSigner>, Error> {
        let lifetime = match &self.expires {
            Some(text) => Some(text.parse::<Lifetime>().map_err(Error::Lifetime)?),
            None => None,
        };
        let Some(path) = &self.key else {
            if let Some(text) = &self.expires {
                return Err(Error::ExpiresWithoutKey {
                    expires: text.clone(),
                });
            }
            return Ok(None);
        };
        let key = SecretKey::read(path, self.password.as_deref())?;
        Ok(Some(IndexSigner::new(key, lifetime.unwrap_or_default())))
    }

    /// Opens an existing repository that signs what it writes as asked.
    pub fn open(&self, url: &str) -> Result<Repository, Error> {
        let signer = self.signer()?;
        let (mut repo, _) = Repository::open(url, Open::Existing)?;
        repo.set_signer(signer);
        Ok(repo)
    }
}

#[derive(Debug, Clone)]
pub struct KeygenOptions {
    /// Writes PREFIX.key and PREFIX.pub.
    pub out: PathBuf,
    /// `BERTH_SIGN_PASSWORD`: encrypts the secret key.
    pub password: Option<String>,
    /// Write the secret key unencrypted (`minisign -W`), on purpose.
    pub unencrypted: bool,
}

#[derive(Debug, Clone)]
pub struct KeygenReport {
    pub secret_key: PathBuf,
    pub public_key: PathBuf,
    pub key_id: KeyId,
    pub encrypted: bool,
}

pub fn keygen(opts: &KeygenOptions) -> Result<KeygenReport, Error> {
    let password = match (&opts.password, opts.unencrypted) {
        (Some(_), true) => return Err(Error::KeygenPasswordConflict),
        (None, false) => return Err(Error::KeygenNoPassword),
        (p, _) => p.as_deref(),
    };
    if let Some(dir) = opts.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        berth_core::fsutil::create_dir_all_synced(dir)?;
    }
    let pair = KeyPair::generate(password)?;
    let (secret_key, public_key) = pair.write(&opts.out)?;
    Ok(KeygenReport {
        secret_key,
        public_key,
        key_id: pair.public.key_id(),
        encrypted: password.is_some(),
    })
}

#[derive(Debug, Clone)]
pub struct ResignOptions {
    pub repo: String,
    /// Only these channels (default: every channel).
    pub channels: Vec<String>,
    /// Only these packages (default: every package).
    pub packages: Vec<String>,
    /// Give every index re-signed at least this sequence.
    pub sequence: Option<u64>,
    pub sign: SignOptions,
}

#[derive(Debug, Clone)]
pub struct Resigned {
    pub channel: String,
    pub package: String,
    pub sequence: u64,
    pub expires: jiff::Timestamp,
    /// How the index was signed before.
    pub before: Before,
}

/// How an index was signed before `resign` signed it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Before {
    Unsigned,
    /// By the signing key, and the signature held.
    ThisKey,
    /// By another key (an earlier one, after a rotation), not checked.
    OtherKey(String),
    /// By the signing key, or unreadable, and it did not hold: the index
    /// was altered, or a publish stopped between the index and its
    /// signature.
    Invalid(String),
}

impl Before {
    /// The words for reports, and the JSON value.
    pub fn describe(&self) -> String {
        match self {
            Before::Unsigned => "unsigned".into(),
            Before::ThisKey => "signed by this key".into(),
            Before::OtherKey(id) => format!("signed by key {id}"),
            Before::Invalid(why) => format!("signature did not hold: {why}"),
        }
    }
}

/// How `stored` was signed, checked against `public` when it is the key
/// that signed it.
fn before(bytes: &[u8], signature: Option<&[u8]>, public: &PublicKey) -> Before {
    let Some(signature) = signature else {
        return Before::Unsigned;
    };
    let parsed = match Signature::parse_bytes(signature, "the index's signature") {
        Ok(sig) => sig,
        Err(e) => return Before::Invalid(e.to_string()),
    };
    if parsed.key_id() != public.key_id() {
        return Before::OtherKey(parsed.key_id().to_string());
    }
    match sign::verify(std::slice::from_ref(public), bytes, &parsed) {
        Ok(_) => Before::ThisKey,
        Err(e) => Before::Invalid(e.to_string()),
    }
}

#[derive(Debug, Clone)]
pub struct ResignReport {
    pub repository: String,
    pub key_id: KeyId,
    pub resigned: Vec<Resigned>,
}

/// Signs the chosen indexes again: each gets the next sequence (or
/// `--sequence`, when higher) and a new expiry.
pub fn resign(opts: &ResignOptions) -> Result<ResignReport, Error> {
    for c in &opts.channels {
        name::check_channel(c)?;
    }
    for p in &opts.packages {
        name::check_package_name(p)?;
    }
    let signer = opts.sign.signer()?.ok_or(Error::ResignWithoutKey)?;
    let key_id = signer.key_id();
    let public = signer.public_key();
    let (mut repo, _) = Repository::open(&opts.repo, Open::Existing)?;
    repo.set_signer(Some(signer));
    let chosen: Vec<(String, String)> = repo
        .indexes()?
        .into_iter()
        .filter(|(c, p)| {
            (opts.channels.is_empty() || opts.channels.contains(c))
                && (opts.packages.is_empty() || opts.packages.contains(p))
        })
        .collect();
    if chosen.is_empty() {
        return Err(Error::NothingToResign {
            repo: repo.location(),
            channels: opts.channels.clone(),
            packages: opts.packages.clone(),
        });
    }
    let mut resigned = Vec::new();
    for (channel, package) in chosen {
        let was = {
            let _lock = repo.backend().lock()?;
            match repo.index_bytes(&channel, &package)? {
                Some(stored) => before(&stored.bytes, stored.signature.as_deref(), &public),
                None => Before::Unsigned,
            }
        };
        let (index, _) =
            repo.adopt_index(&channel, &package, &mut |index| -> Result<bool, Error> {
                // update_index adds one to the sequence.
                if let Some(min) = opts.sequence {
                    index.sequence = index.sequence.max(min.saturating_sub(1));
                }
                Ok(true)
            })?;
        resigned.push(Resigned {
            channel,
            package,
            sequence: index.sequence,
            expires: index.expires.expect("a signed write sets the expiry"),
            before: was,
        });
    }
    Ok(ResignReport {
        repository: repo.location(),
        key_id,
        resigned,
    })
}
