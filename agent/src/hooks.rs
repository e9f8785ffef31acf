//! Running one hook: an executable with a clean environment, in its own
//! process group, with a timeout that kills the whole group (a hook's
//! children die with it), its output (stdout and stderr, merged in order)
//! streamed line by line to a sink and kept bounded in memory, so a hook
//! that prints gigabytes costs a fixed amount.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group, waitid};

/// Bytes of output kept from the start, and from the end, of a hook's run.
pub const KEPT_HEAD: usize = 64 << 10;
pub const KEPT_TAIL: usize = 64 << 10;
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
    /// It ran past its timeout; its process group was killed.
    TimedOut,
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
            Ending::Signaled(sig) => write!(f, "killed by signal {sig}"),
            Ending::TimedOut => write!(f, "timed out"),
        }
    }
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
        self.tail.extend(rest);
        let excess = self.tail.len().saturating_sub(KEPT_TAIL);
        self.tail.drain(..excess);
    }

    /// Bytes printed but not kept.
    pub fn omitted(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    /// The kept output as text, with a marker where bytes were left out.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if self.omitted() > 0 {
            text.push_str(&format!("\n[... {} bytes omitted ...]\n", self.omitted()));
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

/// Receives a hook's output as it comes, one line at a time (a final
/// unterminated line included).
pub trait OutputSink: Sync {
    fn line(&self, hook: &str, line: &[u8]);
}

/// Discards output (it is still kept in [`HookRun::output`]).
#[derive(Debug, Default)]
pub struct Quiet;

impl OutputSink for Quiet {
    fn line(&self, _hook: &str, _line: &[u8]) {}
}

/// Runs `cmd` to its end or its timeout.
pub fn run(cmd: &HookCommand, sink: &dyn OutputSink) -> io::Result<HookRun> {
    let (reader, writer) = io::pipe()?;
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
    let (lines_tx, lines_rx) = mpsc::channel::<Vec<u8>>();
    // The reader ends at EOF, when every holder of the pipe's write end is
    // gone; it is not joined, so a daemon keeping the pipe cannot hang us.
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if lines_tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut output = Output::default();
    let take = |line: Vec<u8>, output: &mut Output| {
        let shown = line.strip_suffix(b"\n").unwrap_or(&line);
        sink.line(&cmd.name, shown);
        output.push(&line);
    };
    let deadline = started + cmd.timeout;
    let ending = loop {
        match lines_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => take(line, &mut output),
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
            break Ending::TimedOut;
        }
    };
    let drain_until = Instant::now() + DRAIN;
    while let Ok(line) =
        lines_rx.recv_timeout(drain_until.saturating_duration_since(Instant::now()))
    {
        take(line, &mut output);
    }
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
        assert_eq!(r.ending, Ending::TimedOut);
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
        assert!(text.contains(&format!(
            "[... {} bytes omitted ...]",
            10_000_011 - (128 << 10)
        )));
    }
}
