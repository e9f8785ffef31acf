//! The words of the payload rules that both sides enforce: `packager build`
//! refuses to pack what the agent would refuse to unpack, and says so in
//! the same sentence, so a message seen on a node can be searched for in a
//! build log and the other way round. The packager prints them after
//! "payload entry `<path>` is refused: ", the agent after "entry
//! `files/<path>` is refused: " (or, for what the manifest itself says,
//! "the manifest lists `<path>`: ").

use crate::manifest::Mode;

/// A hard link: it could point anywhere the extractor can reach.
pub const HARD_LINK: &str = "hard links are not allowed";
/// A character or block device node.
pub const DEVICE: &str = "device nodes are not allowed";
/// A named pipe: opening one blocks, and it holds no content to verify.
pub const FIFO: &str = "fifos are not allowed";
/// A Unix socket (tar cannot even hold one).
pub const SOCKET: &str = "sockets are not allowed";
/// A GNU or PAX sparse file: its holes are not in the stream to verify.
pub const SPARSE: &str = "sparse files are not allowed";
/// Any other type (contiguous files, volume labels, unknown type flags).
pub const OTHER_TYPE: &str = "only regular files, directories and symlinks are allowed";
/// A name that is not UTF-8 cannot be listed in the manifest.
pub const NAME_NOT_UTF8: &str = "its name is not valid UTF-8";
/// A symlink target that is not UTF-8 cannot be listed in the manifest.
pub const TARGET_NOT_UTF8: &str = "its symlink target is not valid UTF-8";

/// The mode bits refused unless the package allows them by path: setuid,
/// setgid, sticky, world-write.
pub const SPECIAL_BITS: u32 = 0o7002;

/// The refusal of `mode`, which has some of [`SPECIAL_BITS`], on a path the
/// package does not allow.
pub fn special_mode(mode: Mode) -> String {
    format!(
        "its mode {mode} has setuid, setgid, sticky or world-write bits, and [install] allow_special_modes does not list its path"
    )
}

/// The refusal of a hook with some of [`SPECIAL_BITS`]: never allowed.
pub fn special_mode_hook(mode: Mode) -> String {
    format!(
        "its mode {mode} has setuid, setgid, sticky or world-write bits, which a hook never may"
    )
}

/// Whether `mode` on the payload path `path` is allowed by `allowed` (the
/// manifest's `[install] allow_special_modes`): `Err` is the refusal.
pub fn check_mode(path: &str, mode: Mode, allowed: &[String]) -> Result<(), String> {
    if mode.0 & SPECIAL_BITS != 0 && !allowed.iter().any(|a| a == path) {
        return Err(special_mode(mode));
    }
    Ok(())
}

/// The refusal of two names that are the same once normalized (NFC), as
/// `é` written precomposed and as `e` plus a combining accent: some
/// filesystems (and people) cannot tell them apart.
pub fn nfc_collision(other: &str) -> String {
    format!("its name and `{other}`'s are the same once Unicode-normalized (NFC)")
}

/// `name` as it may be printed: control characters (a NUL, a newline, a
/// terminal escape) written as Rust escapes, so a hostile name can neither
/// hide its tail nor drive the terminal. Everything else as it is.
pub fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}
