//! Terminal output conventions: colour only on a terminal, never when
//! NO_COLOR is set (https://no-color.org) or TERM=dumb.

use std::io::IsTerminal;
use std::sync::OnceLock;

fn enabled(stream_is_terminal: bool) -> bool {
    stream_is_terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true)
}

fn stdout_colour() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| enabled(std::io::stdout().is_terminal()))
}

fn stderr_colour() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| enabled(std::io::stderr().is_terminal()))
}

#[derive(Clone, Copy)]
pub enum Tone {
    Good,
    Warn,
    Bad,
}

fn paint(on: bool, tone: Tone, text: &str) -> String {
    if !on {
        return text.to_string();
    }
    let code = match tone {
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "31",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// `text` coloured for standard output, when colour is on.
pub fn out(tone: Tone, text: &str) -> String {
    paint(stdout_colour(), tone, text)
}

/// "error" as it starts an error line on standard error.
pub fn error_word() -> String {
    paint(stderr_colour(), Tone::Bad, "error")
}

/// "warning" as it starts a warning line on standard error.
pub fn warning_word() -> String {
    paint(stderr_colour(), Tone::Warn, "warning")
}

/// `println!` that never fails: a closed or full standard output (`vxrouter
/// apply | head -3`) must not abort a run halfway, so write errors are
/// ignored.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never fails (see `say!`).
#[macro_export]
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(!enabled(false));
        assert_eq!(paint(false, Tone::Bad, "x"), "x");
        assert_eq!(paint(true, Tone::Good, "x"), "\x1b[32mx\x1b[0m");
    }
}
