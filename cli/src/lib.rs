//! What berth's two command lines share: progress bars on a terminal,
//! stdout for data and stderr for messages, a closed pipe ending a command
//! quietly, and the error report (`error:`, `caused by:`, `hint:`).

mod progress;

use std::io::Write;

use berth_core::Diagnose;

pub use progress::Bar;

/// Writes data to stdout. `Ok(false)`: stdout was closed (e.g. piped into
/// `head`) and the command should stop quietly.
pub fn out(text: &str) -> std::io::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Pretty JSON and a newline, to stdout, as [`out`].
pub fn out_json(value: &serde_json::Value) -> std::io::Result<bool> {
    out(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    ))
}

/// A message to stderr, never mixed with data.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// A `warning:` line to stderr: something the operator should know that
/// does not stop the command.
pub fn warn(text: &str) {
    note(&format!("warning: {text}"));
}

/// `1.5 KiB`, `48.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Prints `error:` with the cause chain and a `hint:` to stderr; with
/// `--json` the same goes to stdout as an object too, for machines.
pub fn report<E>(e: &E, exit_code: u8, json: bool)
where
    E: std::error::Error + Diagnose,
{
    let message = e.to_string();
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            causes.push(text);
        }
        source = s.source();
    }
    let hint = e.hint();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {message}");
    for c in &causes {
        let _ = writeln!(err, "  caused by: {c}");
    }
    if let Some(h) = &hint {
        let _ = writeln!(err, "hint: {h}");
    }
    if json {
        let value = serde_json::json!({
            "error": message,
            "causes": causes,
            "hint": hint,
            "exit_code": exit_code,
        });
        let _ = writeln!(std::io::stdout(), "{value}");
    }
}
