//! The bound on a hook's stored output: the first and the last
//! [`OUTPUT_KEEP_BYTES`] of it, with a line in between saying how much was
//! left out. A hook that prints gigabytes costs the journal a fixed amount of
//! disk, and what matters most survives: how it started and how it ended.
//!
//! The hook runner already keeps only that much while the hook streams (so
//! memory is bounded too); the store applies the bound again on write, so
//! it holds whatever a caller hands it.

use std::borrow::Cow;

/// Bytes kept from the start, and again from the end, of a hook's output.
pub const OUTPUT_KEEP_BYTES: usize = 64 * 1024;

/// Room for the marker line a runner that bounded the output already put in
/// the middle: such text is stored as it is, not cut a second time.
const MARKER_SLACK: usize = 1024;

/// `text`, cut to the bound when it is longer, at character boundaries.
pub(super) fn bounded(text: &str) -> Cow<'_, str> {
    if text.len() <= 2 * OUTPUT_KEEP_BYTES + MARKER_SLACK {
        return Cow::Borrowed(text);
    }
    let head_end = text.floor_char_boundary(OUTPUT_KEEP_BYTES);
    let tail_start = text.ceil_char_boundary(text.len() - OUTPUT_KEEP_BYTES);
    let omitted = (tail_start - head_end) as u64;
    Cow::Owned(format!(
        "{}{}{}",
        &text[..head_end],
        omission_marker(omitted),
        &text[tail_start..],
    ))
}

/// The line that stands, on a line of its own, for the `omitted` bytes
/// left out of the middle of a hook's output: the same wherever the output
/// is cut (while the hook runs, or when it is stored).
pub fn omission_marker(omitted: u64) -> String {
    format!(
        "\n[berth: {omitted} bytes of output omitted here; the first and last {} KiB are kept]\n",
        OUTPUT_KEEP_BYTES / 1024
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_within_the_bound_is_kept_whole() {
        let text = "x".repeat(2 * OUTPUT_KEEP_BYTES + MARKER_SLACK);
        assert!(matches!(bounded(&text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn long_output_keeps_head_and_tail_at_character_boundaries() {
        // Three-byte characters, so the cut points fall inside some.
        let text: String = "€".repeat(OUTPUT_KEEP_BYTES);
        let kept = bounded(&text);
        let (head, rest) = kept.split_once("\n[berth: ").unwrap();
        let (marker, tail) = rest.split_once("]\n").unwrap();
        assert!(head.chars().all(|c| c == '€') && tail.chars().all(|c| c == '€'));
        assert!(head.len() <= OUTPUT_KEEP_BYTES && head.len() > OUTPUT_KEEP_BYTES - 3);
        assert!(tail.len() <= OUTPUT_KEEP_BYTES && tail.len() > OUTPUT_KEEP_BYTES - 3);
        let omitted = text.len() - head.len() - tail.len();
        assert!(marker.starts_with(&format!("{omitted} bytes of output omitted")));
    }
}
