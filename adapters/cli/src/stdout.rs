//! Standard output at the edge. Every line the CLI prints goes through [`outln!`] or [`out!`]:
//! a write that fails because the reader went away (`ota devices list | head -1`, a closed
//! pipe, `EPIPE`) ends the process quietly with status 0, since the reader has what it
//! wanted; any other write error is reported once on stderr and exits 1. `println!` would
//! panic there instead (with a backtrace under `RUST_BACKTRACE=1`), so the crate denies
//! `clippy::print_stdout`.
//!
//! Why not reset `SIGPIPE` to its default at start: that would also kill `ota serve`, `ota
//! demo` and `ota mcp` on a write to any other closed pipe or socket a library does not guard
//! (and it is Unix only); here only standard output is treated this way, on every platform.

use std::io::{ErrorKind, Write};

/// The exit status after standard output was closed by its reader (see `ota --help`).
pub const CLOSED_STDOUT: i32 = 0;

/// Writes `args` to standard output; see the module documentation for what a failure does.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        exit_on(e);
    }
}

fn exit_on(e: std::io::Error) -> ! {
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(CLOSED_STDOUT);
    }
    let _ = writeln!(std::io::stderr(), "error: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// Flushes standard output (what `out!` left without a newline) before the process exits.
pub fn flush() {
    if let Err(e) = std::io::stdout().lock().flush() {
        exit_on(e);
    }
}

/// `println!` that exits quietly on a closed pipe instead of panicking.
macro_rules! outln {
    () => { $crate::stdout::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that exits quietly on a closed pipe instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => { $crate::stdout::write(format_args!($($arg)*)) };
}
