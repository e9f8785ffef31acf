//! Running one hook: an executable with a clean environment, in its own
//! process group, with a timeout that kills the whole group (a hook's
//! children die with it), its output (stdout and stderr, merged in order)
//! streamed line by line to a sink and kept bounded in memory, so a hook
//! that prints gigabytes costs a fixed amount: it is read in chunks of at
//! most [`CHUNK`] bytes, at most [`IN_FLIGHT`] chunks wait to be handled
//! (a hook that prints faster than the agent handles its output blocks on
//! its writes), and a line longer than [`MAX_LINE`] goes to the sink in
//! pieces.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group, waitid};

/// Bytes of output kept from the start, and from the end, of a hook's run.
pub const KEPT_HEAD: usize = crate::store::OUTPUT_KEEP_BYTES;
pub const KEPT_TAIL: usize = crate::store::OUTPUT_KEEP_BYTES;
/// The most bytes read from a hook's output at once.
pub const CHUNK: usize = 64 << 10;
/// Chunks read and not yet handled: past this the reader waits, and so,
/// once the pipe is full, does the hook.
pub const IN_FLIGHT: usize = 4;
/// The longest line the sink is given: a longer one (or output with no
/// newline at all) goes to it in pieces of this size.
pub const MAX_LINE: usize = 64 << 10;
/// After a timeout's SIGTERM, how long the group has before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// After the hook exits, how long its output may still arrive: a daemon it
/// started may hold the pipe open forever.
const DRAIN: Duration = Duration::from_millis(500);

/// What to run.
#[derive(Debug, Clone)]
pub struct HookCommand {
    /// The hook's name, e.g. `health`, for messages and the output prefix.
    pub name: String,
    pub program: PathBuf,
    pub cwd: PathBuf,
    /// The whole environment: nothing is inherited.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

/// How the hook ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(i32),
    /// It ran past its timeout (this long); its process group was killed.
    TimedOut(Duration),
}

impl Ending {
    pub fn success(self) -> bool {
        self == Ending::Exited(0)
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Exited(code) => write!(f, "exit code {code}"),
            Ending::Signaled(sig) => write!(f, "{}", signal_text(*sig)),
            Ending::TimedOut(after) if after.subsec_millis() == 0 => write!(
                f,
                "timed out after {} s, the package's [hooks] timeout_secs",
                after.as_secs()
            ),
            Ending::TimedOut(after) => write!(f, "timed out after {} ms", after.as_millis()),
        }
    }
}

/// `killed by signal 11 (SIGSEGV)`.
pub fn signal_text(sig: i32) -> String {
    match signal_name(sig) {
        Some(name) => format!("killed by signal {sig} ({name})"),
        None => format!("killed by signal {sig}"),
    }
}

/// The name of signal `sig`, for the ones a hook is likely to die of.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    const NAMES: [(Signal, &str); 15] = [
        (Signal::HUP, "SIGHUP"),
        (Signal::INT, "SIGINT"),
        (Signal::QUIT, "SIGQUIT"),
        (Signal::ILL, "SIGILL"),
        (Signal::TRAP, "SIGTRAP"),
        (Signal::ABORT, "SIGABRT"),
        (Signal::BUS, "SIGBUS"),
        (Signal::FPE, "SIGFPE"),
        (Signal::KILL, "SIGKILL"),
        (Signal::USR1, "SIGUSR1"),
        (Signal::SEGV, "SIGSEGV"),
        (Signal::USR2, "SIGUSR2"),
        (Signal::PIPE, "SIGPIPE"),
        (Signal::ALARM, "SIGALRM"),
        (Signal::TERM, "SIGTERM"),
    ];
    NAMES
        .iter()
        .find(|(s, _)| s.as_raw() == sig)
        .map(|(_, name)| *name)
}

/// What a hook printed: the first [`KEPT_HEAD`] and last [`KEPT_TAIL`]
/// bytes, and how many there were in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub head: Vec<u8>,
    pub tail: VecDeque<u8>,
    pub total: u64,
}

impl Output {
    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = KEPT_HEAD.saturating_sub(self.head.len());
        let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(to_head);
        // Only the last KEPT_TAIL bytes of `rest` can stay; room is made
        // first, so the tail never holds more than KEPT_TAIL.
        let rest = &rest[rest.len().saturating_sub(KEPT_TAIL)..];
        let excess = (self.tail.len() + rest.len()).saturating_sub(KEPT_TAIL);
        self.tail.drain(..excess);
        self.tail.extend(rest);
    }

    /// Bytes printed but not kept.
    pub fn omitted(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    /// The kept output as text, with a marker where bytes were left out.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if self.omitted() > 0 {
            text.push_str(&crate::store::omission_marker(self.omitted()));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        text.push_str(&String::from_utf8_lossy(&tail));
        text
    }
}

/// A finished hook.
#[derive(Debug, Clone)]
pub struct HookRun {
    pub ending: Ending,
    pub output: Output,
    pub duration: Duration,
}

/// Receives a hook's output as it comes, one line at a time (without its
/// newline; a final unterminated line included; a line longer than
/// [`MAX_LINE`] in pieces of that size).
pub trait OutputSink: Sync {
    fn line(&self, hook: &str, line: &[u8]);

    /// Called after the lines of each chunk of output, and at the end: a
    /// sink that gathers lines writes them out here.
    fn flush(&self) {}
}

/// Discards output (it is still kept in [`HookRun::output`]).
#[derive(Debug, Default)]
pub struct Quiet;

impl OutputSink for Quiet {
    fn line(&self, _hook: &str, _line: &[u8]) {}
}

/// Cuts a stream of chunks into lines, holding at most [`MAX_LINE`] bytes
/// of a line not finished yet.
#[derive(Debug, Default)]
struct Lines {
    pending: Vec<u8>,
    /// Pieces of the line being read were given out already.
    split: bool,
}

impl Lines {
    fn feed(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(&[u8])) {
        loop {
            let newline = memchr::memchr(b'\n', bytes);
            let mut part = &bytes[..newline.unwrap_or(bytes.len())];
            while self.pending.len() + part.len() >= MAX_LINE {
                let (piece, rest) = part.split_at(MAX_LINE - self.pending.len());
                if self.pending.is_empty() {
                    emit(piece);
                } else {
                    self.pending.extend_from_slice(piece);
                    emit(&self.pending);
                    self.pending.clear();
                }
                self.split = true;
                part = rest;
            }
            self.pending.extend_from_slice(part);
            let Some(at) = newline else {
                return;
            };
            // A line whose pieces all went out ends with them.
            if !self.pending.is_empty() || !self.split {
                emit(&self.pending);
            }
            self.pending.clear();
            self.split = false;
            bytes = &bytes[at + 1..];
        }
    }

    /// The unterminated last line, if any.
    fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
        }
        self.pending.clear();
    }
}

/// Runs `cmd` to its end or its timeout.
pub fn run(cmd: &HookCommand, sink: &dyn OutputSink) -> io::Result<HookRun> {
    let (mut reader, writer) = io::pipe()?;
    let started = Instant::now();
    let mut child = Command::new(&cmd.program)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cmd.cwd)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0)
        .spawn()?;
    let (chunks_tx, chunks_rx) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
    // The reader ends at EOF, when every holder of the pipe's write end is
    // gone, or when the chunks are no longer wanted; it is not joined, so
    // a daemon keeping the pipe cannot hang us.
    std::thread::spawn(move || {
        loop {
            let mut chunk = vec![0; CHUNK];
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    if chunks_tx.send(chunk).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    let mut output = Output::default();
    let mut lines = Lines::default();
    let mut emit = |line: &[u8]| sink.line(&cmd.name, line);
    let deadline = started + cmd.timeout;
    let ending = loop {
        match chunks_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(chunk) => {
                output.push(&chunk);
                lines.feed(&chunk, &mut emit);
                sink.flush();
            }
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if has_exited(&child)? {
            // The leader is a zombie, not reaped yet, so its group id cannot
            // be reused: whatever is left of the group (a background child)
            // goes now, and nothing of the hook outlives it.
            let _ = kill_process_group(pid_of(&child), Signal::KILL);
            let status = child.wait()?;
            break match (status.code(), status.signal()) {
                (Some(code), _) => Ending::Exited(code),
                (None, Some(sig)) => Ending::Signaled(sig),
                (None, None) => Ending::Signaled(0),
            };
        }
        if Instant::now() >= deadline {
            kill_group(&mut child)?;
            break Ending::TimedOut(cmd.timeout);
        }
    };
    let drain_until = Instant::now() + DRAIN;
    while let Ok(chunk) =
        chunks_rx.recv_timeout(drain_until.saturating_duration_since(Instant::now()))
    {
        output.push(&chunk);
        lines.feed(&chunk, &mut emit);
        sink.flush();
    }
    lines.finish(&mut emit);
    sink.flush();
    Ok(HookRun {
        ending,
        output,
        duration: started.elapsed(),
    })
}

/// Whether `child` has exited, leaving it unreaped.
fn has_exited(child: &Child) -> io::Result<bool> {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    Ok(waitid(WaitId::Pid(pid_of(child)), options)?.is_some())
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32).expect("a child's pid is positive")
}

/// SIGTERM to the group, then SIGKILL to what is left of it after
/// [`KILL_GRACE`] (or as soon as the leader is gone), then reaps the leader.
fn kill_group(child: &mut Child) -> io::Result<()> {
    let _ = kill_process_group(pid_of(child), Signal::TERM);
    let grace = Instant::now() + KILL_GRACE;
    while Instant::now() < grace && !has_exited(child)? {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill_process_group(pid_of(child), Signal::KILL);
    child.wait().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl OutputSink for Collect {
        fn line(&self, hook: &str, line: &[u8]) {
            let text = format!("{hook}: {}", String::from_utf8_lossy(line));
            self.0.lock().unwrap().push(text);
        }
    }

    fn hook(dir: &std::path::Path, script: &str, timeout: Duration) -> HookCommand {
        let program = dir.join("hook");
        std::fs::write(&program, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        HookCommand {
            name: "health".into(),
            program,
            cwd: dir.to_owned(),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("BERTH_VERSION".into(), "1.4.2".into()),
            ],
            timeout,
        }
    }

    #[test]
    fn output_is_streamed_with_its_hook_and_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = hook(
            dir.path(),
            "echo \"out $BERTH_VERSION\"; echo err >&2; pwd; printf 'no newline'",
            Duration::from_secs(10),
        );
        let sink = Collect::default();
        let run = run(&cmd, &sink).unwrap();
        assert_eq!(run.ending, Ending::Exited(0));
        let lines = sink.0.into_inner().unwrap();
        let cwd = dir.path().display().to_string();
        assert_eq!(
            lines,
            vec![
                "health: out 1.4.2".to_owned(),
                "health: err".to_owned(),
                format!("health: {cwd}"),
                "health: no newline".to_owned(),
            ]
        );
        assert_eq!(
            run.output.text(),
            format!("out 1.4.2\nerr\n{cwd}\nno newline")
        );
    }

    #[test]
    fn the_environment_is_only_what_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = hook(dir.path(), "env | sort", Duration::from_secs(10));
        let run = run(&cmd, &Quiet).unwrap();
        let text = run.output.text();
        assert!(text.contains("BERTH_VERSION=1.4.2"), "{text}");
        assert!(!text.contains("HOME="), "nothing is inherited:\n{text}");
    }

    #[test]
    fn failures_and_signals_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let r = run(&hook(dir.path(), "exit 3", Duration::from_secs(10)), &Quiet).unwrap();
        assert_eq!(r.ending, Ending::Exited(3));
        assert!(!r.ending.success());
        let r = run(
            &hook(dir.path(), "kill -9 $$", Duration::from_secs(10)),
            &Quiet,
        )
        .unwrap();
        assert_eq!(r.ending, Ending::Signaled(9));
        let r = run(
            &hook(dir.path(), "kill -SEGV $$", Duration::from_secs(10)),
            &Quiet,
        )
        .unwrap();
        assert_eq!(r.ending, Ending::Signaled(11));
        assert_eq!(r.ending.to_string(), "killed by signal 11 (SIGSEGV)");
        assert_eq!(signal_text(64), "killed by signal 64");
    }

    #[test]
    fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!(
            "sleep 300 & echo $! > {}; trap '' TERM; while :; do sleep 1; done",
            pidfile.display()
        );
        let started = Instant::now();
        let r = run(
            &hook(dir.path(), &script, Duration::from_millis(500)),
            &Quiet,
        )
        .unwrap();
        assert_eq!(r.ending, Ending::TimedOut(Duration::from_millis(500)));
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background child was in the group: it is gone (or a zombie
        // about to be reaped by init, which /proc shows as state Z).
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "the hook's child survived:\n{status}"
        );
    }

    #[test]
    fn a_daemon_holding_the_output_does_not_hang_the_run() {
        let dir = tempfile::tempdir().unwrap();
        // setsid puts the daemon in its own group: it survives, holding the
        // pipe, as a badly written start hook's service would.
        let pidfile = dir.path().join("daemon.pid");
        let script = format!(
            "setsid sleep 30 & echo $! > {}; echo started",
            pidfile.display()
        );
        let started = Instant::now();
        let r = run(&hook(dir.path(), &script, Duration::from_secs(10)), &Quiet).unwrap();
        let elapsed = started.elapsed();
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = rustix::process::kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL);
        assert_eq!(r.ending, Ending::Exited(0));
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }

    #[test]
    fn huge_output_is_bounded_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let script = "head -c 10000000 /dev/zero | tr '\\0' 'x'; echo; echo last line";
        let r = run(&hook(dir.path(), script, Duration::from_secs(30)), &Quiet).unwrap();
        assert_eq!(r.output.total, 10_000_000 + 1 + 10);
        assert_eq!(r.output.head.len(), KEPT_HEAD);
        assert_eq!(r.output.tail.len(), KEPT_TAIL);
        let text = r.output.text();
        assert!(text.ends_with("x\nlast line\n"), "the end is kept");
        assert!(text.contains(&crate::store::omission_marker(10_000_011 - (128 << 10))));
    }

    /// Feeds `input` to [`Lines`] in chunks of `chunk` bytes; the lines
    /// given out, as (length, first byte) to keep failures readable.
    fn cut(input: &[u8], chunk: usize) -> Vec<(usize, Option<u8>)> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let mut emit = |l: &[u8]| out.push((l.len(), l.first().copied()));
        for c in input.chunks(chunk) {
            lines.feed(c, &mut emit);
            assert!(lines.pending.len() < MAX_LINE, "a piece was held back");
        }
        lines.finish(&mut emit);
        out
    }

    #[test]
    fn output_with_no_newline_goes_out_in_pieces_of_the_longest_line() {
        let input = vec![b'x'; 3 * MAX_LINE + MAX_LINE / 2];
        for chunk in [1000, 4096, MAX_LINE, CHUNK + 7, input.len()] {
            assert_eq!(
                cut(&input, chunk),
                [
                    (MAX_LINE, Some(b'x')),
                    (MAX_LINE, Some(b'x')),
                    (MAX_LINE, Some(b'x')),
                    (MAX_LINE / 2, Some(b'x')),
                ],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn a_long_line_ends_with_its_last_piece_and_short_lines_stay_whole() {
        let mut input = vec![b'a'; 2 * MAX_LINE];
        input.extend_from_slice(b"\n\nb\n");
        input.extend(vec![b'c'; MAX_LINE + 1]);
        input.extend_from_slice(b"\nd");
        for chunk in [1, 999, MAX_LINE - 1, input.len()] {
            assert_eq!(
                cut(&input, chunk),
                [
                    (MAX_LINE, Some(b'a')),
                    (MAX_LINE, Some(b'a')),
                    (0, None),
                    (1, Some(b'b')),
                    (MAX_LINE, Some(b'c')),
                    (1, Some(b'c')),
                    (1, Some(b'd')),
                ],
                "chunks of {chunk}"
            );
        }
    }

    #[derive(Default)]
    struct Sizes(Mutex<Vec<usize>>);

    impl OutputSink for Sizes {
        fn line(&self, _hook: &str, line: &[u8]) {
            self.0.lock().unwrap().push(line.len());
        }
    }

    #[test]
    fn huge_output_with_no_newline_reaches_the_sink_in_bounded_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let script = "head -c 10000000 /dev/zero | tr '\\0' 'x'; printf end";
        let sink = Sizes::default();
        let r = run(&hook(dir.path(), script, Duration::from_secs(30)), &sink).unwrap();
        assert_eq!(r.ending, Ending::Exited(0));
        assert_eq!(r.output.total, 10_000_003);
        assert_eq!(
            r.output.head.len() + r.output.tail.len(),
            KEPT_HEAD + KEPT_TAIL
        );
        assert!(r.output.text().ends_with("xxxend"));
        let sizes = sink.0.into_inner().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 10_000_003);
        assert_eq!(sizes.len(), 10_000_003usize.div_ceil(MAX_LINE));
        assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == MAX_LINE));
    }
}
