//! What is wrong with a config file: each problem at its line and field, and all of a
//! file's problems as one error.

use std::fmt;

/// One problem of a config file: where (`line`, 0 for the whole file; `field`, `-` for
/// none) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// Every problem of one config file; `Display` prints one `file:line: field: message` per line.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
    /// What would have been warned of had the file loaded (`check` shows both).
    pub warnings: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            // One problem per line, whatever a value quoted in it holds (a multi-line
            // TOML string in a message broke the file:line format; found by fuzzing).
            let one_line = |s: &str| s.replace(['\n', '\r'], " ");
            // A problem of the whole file (it cannot be read) has no line or field.
            if p.line == 0 && p.field == "-" {
                write!(f, "{}: {}", self.file, one_line(&p.message))?;
                continue;
            }
            write!(
                f,
                "{}:{}: {}: {}",
                self.file,
                p.line,
                one_line(&p.field),
                one_line(&p.message)
            )?;
        }
        Ok(())
    }
}
