//! Signed channel indexes: the publisher signs every index it writes
//! (`channels/<channel>/<package>.json.minisig`, a minisign signature over
//! the index's exact bytes) and agents that pin public keys accept an index
//! only when it is signed by one of them, names the channel and package
//! asked for, has not expired and does not go back in `sequence`.
//!
//! What each check stops (the attacks of TUF's threat model that apply to
//! a single signed index per channel and package):
//! - no signature, or one by a key the node does not trust, or one that
//!   does not match the bytes: a forged or tampered index;
//! - `channel`/`package` inside the signed bytes other than asked: a
//!   mix-and-match attack (a genuine index served in another's place);
//! - past `expires`: a freeze attack (a mirror that keeps serving an old,
//!   genuine index so that nodes never see a fix);
//! - a `sequence` below the highest the node accepted: a rollback attack
//!   (an older genuine index replayed to bring back a vulnerable release).
//!
//! Artifacts need no signature of their own: the signed index gives each
//! one's sha256 and size, and the agent stops a download at that size and
//! checks the digest before using it.

use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};

use super::index::ChannelIndex;
use crate::sign::{self, KeyId, PublicKey, SecretKey, SignError, Signature};
use crate::{Diagnose, Fault};

/// What follows an index's key to name its signature.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// The index lifetime when `--expires` is not given: long enough that a
/// channel nobody publishes to for a few weeks keeps working, short enough
/// to bound a freeze attack. `packager resign` refreshes it.
pub const DEFAULT_LIFETIME: &str = "30d";

/// The longest `--expires` accepted.
const MAX_LIFETIME_SECS: i64 = 10 * 366 * 86_400;

/// How long a signed index stays valid: a whole number and a unit, `s`,
/// `m`, `h`, `d` or `w` (`90m`, `12h`, `30d`, `2w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime(SignedDuration);

impl Lifetime {
    pub fn duration(&self) -> SignedDuration {
        self.0
    }
}

impl Default for Lifetime {
    fn default() -> Self {
        DEFAULT_LIFETIME
            .parse()
            .expect("the default lifetime parses")
    }
}

impl FromStr for Lifetime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{s}` is not a lifetime: give a whole number and a unit, s, m, h, d or w (e.g. `30d`, `12h`)"
            )
        };
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (digits, unit) = s.split_at(split);
        let n: i64 = digits.parse().map_err(|_| bad())?;
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        let secs = n.checked_mul(unit_secs).ok_or_else(bad)?;
        if secs == 0 {
            return Err(format!(
                "`{s}` is no time at all: an index must live a while"
            ));
        }
        if secs > MAX_LIFETIME_SECS {
            return Err(format!(
                "`{s}` is more than ten years: an index that lives that long bounds nothing"
            ));
        }
        Ok(Lifetime(SignedDuration::from_secs(secs)))
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

/// Signs the indexes a publisher writes.
#[derive(Debug)]
pub struct IndexSigner {
    key: SecretKey,
    lifetime: Lifetime,
}

impl IndexSigner {
    pub fn new(key: SecretKey, lifetime: Lifetime) -> IndexSigner {
        IndexSigner { key, lifetime }
    }

    pub fn key_id(&self) -> KeyId {
        self.key.key_id()
    }

    /// The public half of the signing key.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Sets the index's expiry from `now`, and returns its bytes and the
    /// text of their signature.
    pub(crate) fn sign(
        &self,
        index: &mut ChannelIndex,
        now: Timestamp,
    ) -> Result<(Vec<u8>, Vec<u8>), SignError> {
        let expires = now
            .checked_add(self.lifetime.duration())
            .unwrap_or(Timestamp::MAX);
        index.expires = Some(expires);
        let bytes = index.to_json();
        let comment = format!(
            "berth index channel:{} package:{} sequence:{} expires:{}",
            index.channel, index.package, index.sequence, expires
        );
        let signature = sign::sign(&self.key, &bytes[..], &comment)?;
        Ok((bytes, signature.to_text().into_bytes()))
    }
}

/// Why an agent refused an index. Every variant names the attack the check
/// stops; the index was not used and nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "the index of `{package}` in channel `{channel}` at `{repo}` is not signed (no `{key}`), and this node accepts only signed indexes: refused as possibly forged"
    )]
    Unsigned {
        repo: String,
        channel: String,
        package: String,
        key: String,
    },
    #[error(
        "the index of `{package}` in channel `{channel}` at `{repo}` fails its signature check, refused as forged or tampered: {source}"
    )]
    Signature {
        repo: String,
        channel: String,
        package: String,
        #[source]
        source: Box<SignError>,
    },
    #[error(
        "the index of `{package}` in channel `{channel}` at `{repo}` is signed but invalid: {reason}"
    )]
    Invalid {
        repo: String,
        channel: String,
        package: String,
        reason: String,
    },
    #[error(
        "the signed index served as `{package}` in channel `{channel}` at `{repo}` is the index of `{says_package}` in channel `{says_channel}`: an index put in another's place (a mix-and-match attack), refused"
    )]
    Foreign {
        repo: String,
        channel: String,
        package: String,
        says_channel: String,
        says_package: String,
    },
    #[error(
        "the signed index of `{package}` in channel `{channel}` at `{repo}` has no expiry: an index that never expires can be replayed forever (a freeze attack), refused"
    )]
    NoExpiry {
        repo: String,
        channel: String,
        package: String,
    },
    #[error(
        "the index of `{package}` in channel `{channel}` at `{repo}` expired at {expires} ({ago} ago): a stale index can hide newer releases from this node (a freeze attack), refused"
    )]
    Expired {
        repo: String,
        channel: String,
        package: String,
        expires: Timestamp,
        ago: String,
    },
    #[error(
        "the index of `{package}` in channel `{channel}` at `{repo}` has sequence {sequence}, lower than {highest}, which this node already accepted: an older index replayed (a rollback attack), refused"
    )]
    Rollback {
        repo: String,
        channel: String,
        package: String,
        sequence: u64,
        highest: u64,
    },
}

impl Diagnose for TrustError {
    fn fault(&self) -> Fault {
        match self {
            TrustError::Signature { source, .. } if source.fault() == Fault::Failure => {
                Fault::Failure
            }
            _ => Fault::Input,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            TrustError::Unsigned { channel, .. } => format!(
                "sign the channel on the publisher (`packager resign --channel {channel} --sign-key KEY`); if this repository is meant to be unsigned, take the keys out of the node's trusted_keys"
            ),
            TrustError::Signature { source, .. }
                if matches!(**source, SignError::UnknownKey { .. }) => "if the publisher rotated its key, add the new public key to trusted_keys (docs/trust.md); otherwise treat the repository as compromised".into(),
            TrustError::Signature { channel, .. } => format!(
                "a publish interrupted between writing the index and its signature leaves this too: `packager resign --channel {channel}` on the publisher repairs it; otherwise treat the repository as compromised"
            ),
            TrustError::Invalid { .. } | TrustError::Foreign { .. } => {
                "check the repository: `packager resign` on the publisher rewrites its indexes".into()
            }
            TrustError::NoExpiry { channel, .. } | TrustError::Expired { channel, .. } => format!(
                "the publisher refreshes the expiry with `packager resign --channel {channel} --sign-key KEY`; run it regularly, well within `--expires`"
            ),
            TrustError::Rollback { highest, .. } => format!(
                "the repository or a mirror serves an old copy; if the repository was really restored from a backup, the publisher moves past this node with `packager resign --sequence {}`",
                highest + 1
            ),
        })
    }
}

/// Where an index was read from, for messages.
#[derive(Debug, Clone, Copy)]
pub struct IndexOrigin<'a> {
    pub repo: &'a str,
    pub channel: &'a str,
    pub package: &'a str,
}

/// Checks a signed index read from `origin`: `signature` over `bytes` by
/// one of `keys`, the names inside, `expires` after `now`, and `sequence`
/// at least `highest` (the highest this node accepted before, if any).
pub fn verify_index(
    keys: &[PublicKey],
    origin: IndexOrigin<'_>,
    bytes: &[u8],
    signature: Option<&[u8]>,
    now: Timestamp,
    highest: Option<u64>,
) -> Result<ChannelIndex, TrustError> {
    let IndexOrigin {
        repo,
        channel,
        package,
    } = origin;
    let (repo, channel, package) = (repo.to_owned(), channel.to_owned(), package.to_owned());
    let Some(signature) = signature else {
        let key = format!("{}{SIGNATURE_SUFFIX}", super::index_key(&channel, &package));
        return Err(TrustError::Unsigned {
            repo,
            channel,
            package,
            key,
        });
    };
    let parsed = Signature::parse_bytes(signature, "the index's signature")
        .and_then(|sig| sign::verify(keys, bytes, &sig));
    if let Err(source) = parsed {
        return Err(TrustError::Signature {
            repo,
            channel,
            package,
            source: Box::new(source),
        });
    }
    let index = match ChannelIndex::parse_unchecked_names(bytes) {
        Ok(index) => index,
        Err(reason) => {
            return Err(TrustError::Invalid {
                repo,
                channel,
                package,
                reason,
            });
        }
    };
    if index.channel != channel || index.package != package {
        return Err(TrustError::Foreign {
            says_channel: index.channel,
            says_package: index.package,
            repo,
            channel,
            package,
        });
    }
    let Some(expires) = index.expires else {
        return Err(TrustError::NoExpiry {
            repo,
            channel,
            package,
        });
    };
    if expires <= now {
        let ago = now.duration_since(expires);
        let ago = SignedDuration::from_secs(ago.as_secs());
        return Err(TrustError::Expired {
            repo,
            channel,
            package,
            expires,
            ago: format!("{ago:#}"),
        });
    }
    if let Some(highest) = highest
        && index.sequence < highest
    {
        return Err(TrustError::Rollback {
            repo,
            channel,
            package,
            sequence: index.sequence,
            highest,
        });
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{KdfLimits, KeyPair};

    fn pair() -> KeyPair {
        KeyPair::generate_with_limits(None, KdfLimits::FOR_TESTS).unwrap()
    }

    fn signed(key: &KeyPair, index: &mut ChannelIndex, lifetime: &str) -> (Vec<u8>, Vec<u8>) {
        let secret = SecretKey::parse(&key_text(key), None).unwrap();
        IndexSigner::new(secret, lifetime.parse().unwrap())
            .sign(index, Timestamp::now())
            .unwrap()
    }

    fn key_text(key: &KeyPair) -> String {
        let dir = tempfile::tempdir().unwrap();
        let (secret, _) = key.write(&dir.path().join("k")).unwrap();
        std::fs::read_to_string(secret).unwrap()
    }

    const ORIGIN: IndexOrigin<'static> = IndexOrigin {
        repo: "/srv/berth",
        channel: "staging",
        package: "webapp",
    };

    #[test]
    fn lifetimes_parse_with_units_and_bounds() {
        let secs = |s: &str| s.parse::<Lifetime>().unwrap().duration().as_secs();
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("90m"), 5400);
        assert_eq!(secs("12h"), 43_200);
        assert_eq!(secs("30d"), 30 * 86_400);
        assert_eq!(secs("2w"), 14 * 86_400);
        assert_eq!(Lifetime::default().duration().as_secs(), 30 * 86_400);
        for bad in [
            "",
            "30",
            "d",
            "-1d",
            "1.5d",
            "30 d",
            "30days",
            "0h",
            "11000d",
            "99999999999999999999w",
        ] {
            assert!(bad.parse::<Lifetime>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_signed_index_verifies_and_each_attack_is_named() {
        let key = pair();
        let other = pair();
        let keys = [key.public.clone()];
        let mut index = ChannelIndex::new("staging", "webapp");
        index.sequence = 5;
        let (bytes, sig) = signed(&key, &mut index, "1h");
        let now = Timestamp::now();
        let ok = verify_index(&keys, ORIGIN, &bytes, Some(&sig), now, Some(5)).unwrap();
        assert_eq!(ok.sequence, 5);
        assert!(ok.expires.unwrap() > now);

        let err = |r: Result<ChannelIndex, TrustError>| r.unwrap_err().to_string();
        let e = err(verify_index(&keys, ORIGIN, &bytes, None, now, None));
        assert!(
            e.contains("is not signed") && e.contains("webapp.json.minisig"),
            "{e}"
        );
        let e = err(verify_index(
            std::slice::from_ref(&other.public),
            ORIGIN,
            &bytes,
            Some(&sig),
            now,
            None,
        ));
        assert!(
            e.contains("forged or tampered") && e.contains("not trusted"),
            "{e}"
        );
        let mut altered = bytes.clone();
        let at = altered.iter().position(|&b| b == b'5').unwrap();
        altered[at] = b'9';
        let e = err(verify_index(&keys, ORIGIN, &altered, Some(&sig), now, None));
        assert!(e.contains("does not match the data"), "{e}");
        let e = err(verify_index(
            &keys,
            ORIGIN,
            &bytes,
            Some(b"garbage"),
            now,
            None,
        ));
        assert!(e.contains("not a minisign signature"), "{e}");
        let elsewhere = IndexOrigin {
            channel: "production",
            ..ORIGIN
        };
        let e = err(verify_index(
            &keys,
            elsewhere,
            &bytes,
            Some(&sig),
            now,
            None,
        ));
        assert!(e.contains("mix-and-match"), "{e}");
        let later = now.checked_add(SignedDuration::from_hours(2)).unwrap();
        let e = err(verify_index(&keys, ORIGIN, &bytes, Some(&sig), later, None));
        assert!(e.contains("freeze attack") && e.contains("ago"), "{e}");
        let e = err(verify_index(
            &keys,
            ORIGIN,
            &bytes,
            Some(&sig),
            now,
            Some(6),
        ));
        assert!(
            e.contains("rollback attack") && e.contains("lower than 6"),
            "{e}"
        );

        // Signed without an expiry: refused too.
        let mut plain = ChannelIndex::new("staging", "webapp");
        plain.sequence = 1;
        let plain_bytes = plain.to_json();
        let secret = SecretKey::parse(&key_text(&key), None).unwrap();
        let sig = sign::sign(&secret, &plain_bytes[..], "x")
            .unwrap()
            .to_text();
        let e = err(verify_index(
            &keys,
            ORIGIN,
            &plain_bytes,
            Some(sig.as_bytes()),
            now,
            None,
        ));
        assert!(e.contains("no expiry"), "{e}");
    }
}
