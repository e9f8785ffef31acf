//! Progress bars on stderr when it is a terminal; nothing otherwise, so CI
//! logs and pipes stay clean.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use berth_core::progress::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reports progress as indicatif bars on stderr.
#[derive(Debug)]
pub struct Bar {
    enabled: bool,
    current: Mutex<Option<ProgressBar>>,
}

impl Bar {
    /// A bar that draws only when stderr is a terminal.
    pub fn for_stderr() -> Bar {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Bar {
            enabled: std::io::stderr().is_terminal() && !dumb,
            current: Mutex::new(None),
        }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total_bytes: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(phase.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Some(old) = self
            .current
            .lock()
            .expect("no panic holds the bar")
            .replace(bar)
        {
            old.finish_and_clear();
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = self
            .current
            .lock()
            .expect("no panic holds the bar")
            .as_ref()
        {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.current.lock().expect("no panic holds the bar").take() {
            bar.finish_and_clear();
        }
    }
}
