//! How long operations report progress without printing: the library calls
//! a [`Progress`]; the binaries draw bars on a terminal and stay quiet
//! otherwise.

/// Receives progress of long operations. Implementations must be cheap:
/// `advance` is called for every chunk written or read.
pub trait Progress: Sync {
    /// A new phase starts, e.g. "packing" with the total bytes expected.
    fn start(&self, phase: &str, total_bytes: u64);
    /// `bytes` more of the current phase are done.
    fn advance(&self, bytes: u64);
    /// The current phase is over.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _phase: &str, _total_bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// Wraps a reader and reports every chunk read through it.
pub struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R> std::fmt::Debug for ProgressReader<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressReader").finish_non_exhaustive()
    }
}

impl<'a, R> ProgressReader<'a, R> {
    pub fn new(inner: R, progress: &'a dyn Progress) -> Self {
        ProgressReader { inner, progress }
    }
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
