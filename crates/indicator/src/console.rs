//! [`ConsoleIndicator`]: states as lines of text, with a coloured block on a terminal.
//!
//! On a terminal each state is a block in the state's colour (ANSI 24-bit "truecolour")
//! followed by words; progress updates rewrite the same line. Elsewhere (a log file, the
//! journal) each state is a plain line, and progress is printed only when it crosses a
//! tenth, so logs stay short.
//!
//! ```
//! use indicator::{console::ConsoleIndicator, config::{Colors, Palette}, Indicator, State};
//! let palette = Palette::parse(&Colors::default()).unwrap();
//! let mut out = Vec::new();
//! ConsoleIndicator::new(&mut out, false, palette).show(State::Success).unwrap();
//! assert_eq!(String::from_utf8(out).unwrap(), "extbackup: success: safe to remove\n");
//! ```

use crate::config::Palette;
use crate::{ErrorKind, Indicator, IndicatorError, State};
use std::io::{IsTerminal, Write};

/// Writes states to a writer (standard output by default).
pub struct ConsoleIndicator<W: Write + Send> {
    out: W,
    ansi: bool,
    palette: Palette,
    /// What the last line said (to skip repeats).
    last: Option<String>,
    /// Whether the cursor is at the end of an unfinished progress line (terminal only).
    open_line: bool,
}

impl ConsoleIndicator<std::io::Stdout> {
    /// Writes to standard output, with colour when it is a terminal.
    pub fn stdout(palette: Palette) -> Self {
        let out = std::io::stdout();
        let ansi = out.is_terminal();
        ConsoleIndicator::new(out, ansi, palette)
    }
}

impl<W: Write + Send> ConsoleIndicator<W> {
    /// Writes to `out`; `ansi` chooses the terminal form.
    pub fn new(out: W, ansi: bool, palette: Palette) -> Self {
        ConsoleIndicator {
            out,
            ansi,
            palette,
            last: None,
            open_line: false,
        }
    }

    fn words(state: State, ansi: bool) -> String {
        match state {
            // Plain logs: progress in tenths only.
            State::Working { progress: Some(p) } if !ansi && p.is_finite() => {
                let tenth = (p.clamp(0.0, 1.0) * 10.0).floor() * 10.0;
                format!("working ({tenth:.0}%)")
            }
            State::Working { progress: Some(p) } if !p.is_finite() => "working".into(),
            s => s.to_string(),
        }
    }

    fn write_state(&mut self, state: State) -> std::io::Result<()> {
        let words = Self::words(state, self.ansi);
        if self.last.as_deref() == Some(words.as_str()) {
            return Ok(());
        }
        self.last = Some(words.clone());
        if self.ansi {
            let c = self.palette.color(state);
            // \r and "erase line" overwrite a progress line in place.
            let block = if state == State::Off {
                "  ".to_string()
            } else {
                format!("\x1b[48;2;{};{};{}m  \x1b[0m", c.r, c.g, c.b)
            };
            write!(self.out, "\r\x1b[2K{block} {words}")?;
            let working = matches!(state, State::Working { .. });
            if !working {
                writeln!(self.out)?;
            }
            self.open_line = working;
        } else {
            writeln!(self.out, "extbackup: {words}")?;
        }
        self.out.flush()
    }
}

impl<W: Write + Send> Indicator for ConsoleIndicator<W> {
    fn show(&mut self, state: State) -> Result<(), IndicatorError> {
        self.write_state(state).map_err(|e| {
            IndicatorError::new(ErrorKind::Other, "writing the backup state to the console")
                .with_source(e)
        })
    }

    fn describe(&self) -> String {
        if self.ansi {
            "console (terminal)".into()
        } else {
            "console".into()
        }
    }
}

impl<W: Write + Send> Drop for ConsoleIndicator<W> {
    fn drop(&mut self) {
        if self.open_line {
            let _ = writeln!(self.out);
            let _ = self.out.flush();
        }
    }
}
