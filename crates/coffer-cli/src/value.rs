//! Reading a secret value from the user: `--value`, a hidden prompt, or standard input.
//!
//! The value is held in zeroizing buffers from the moment it is read, is never printed, and is
//! never logged. Limits are checked here so that a bad value fails before any request is made.

use std::io::{IsTerminal, Read, Write};

use coffer_api::SecretValue;
use zeroize::Zeroizing;

use crate::args::ValueArg;

/// The largest value the API accepts, in bytes of UTF-8.
pub const MAX_VALUE_BYTES: usize = 65_536;

/// How much of standard input we read at most before giving up: far above the limit, so that
/// trailing whitespace can still be trimmed, but bounded.
const MAX_STDIN_BYTES: u64 = 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum ValueError {
    Empty,
    TooLarge(usize),
    StdinTooLarge,
    NotUtf8,
    Read(String),
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueError::Empty => f.write_str("the secret value is empty"),
            ValueError::TooLarge(n) => write!(
                f,
                "the secret value is {n} bytes; the limit is {MAX_VALUE_BYTES} bytes"
            ),
            ValueError::StdinTooLarge => write!(
                f,
                "standard input holds more than {MAX_STDIN_BYTES} bytes; the limit for a secret \
                 value is {MAX_VALUE_BYTES} bytes"
            ),
            ValueError::NotUtf8 => f.write_str("the secret value is not valid UTF-8"),
            ValueError::Read(e) => write!(f, "cannot read the secret value: {e}"),
        }
    }
}

impl std::error::Error for ValueError {}

/// The value for `secret create` (where a value is required): `--value V`, or, without it or
/// with `--value -`, the prompt or standard input.
pub fn obtain(arg: Option<ValueArg>) -> Result<SecretValue, ValueError> {
    match arg {
        Some(ValueArg::Given(value)) => {
            warn_about_history();
            finish(value)
        }
        Some(ValueArg::Interactive) | None => read_interactive(),
    }
}

fn warn_about_history() {
    let _ = writeln!(
        std::io::stderr(),
        "warning: a value passed with --value stays in your shell history and is visible in the \
         process list; omit --value to be prompted, or pipe the value on standard input"
    );
}

/// A hidden prompt when standard input is a terminal, otherwise all of standard input.
fn read_interactive() -> Result<SecretValue, ValueError> {
    let stdin = std::io::stdin();
    let raw = if stdin.is_terminal() {
        rpassword::prompt_password("Secret value (input hidden): ")
            .map(Zeroizing::new)
            .map_err(|e| ValueError::Read(e.to_string()))?
    } else {
        read_limited(stdin.lock())?
    };
    finish(raw)
}

/// Reads `reader` to the end, refusing more than [`MAX_STDIN_BYTES`].
pub fn read_limited(reader: impl Read) -> Result<Zeroizing<String>, ValueError> {
    // Reserve up front so the buffer holding the value is not reallocated (and an unzeroized
    // copy left behind) for any value within the limit.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_VALUE_BYTES + 1024));
    reader
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ValueError::Read(e.to_string()))?;
    if bytes.len() as u64 > MAX_STDIN_BYTES {
        return Err(ValueError::StdinTooLarge);
    }
    let bytes = std::mem::take(&mut *bytes);
    match String::from_utf8(bytes) {
        Ok(s) => Ok(Zeroizing::new(s)),
        Err(e) => {
            // Zeroize the rejected bytes too.
            drop(Zeroizing::new(e.into_bytes()));
            Err(ValueError::NotUtf8)
        }
    }
}

/// Trims trailing whitespace (a newline from `echo` or a here-string is never meant to be part
/// of the value), then checks that the value is neither empty nor too large.
pub fn finish(mut value: Zeroizing<String>) -> Result<SecretValue, ValueError> {
    let trimmed = value.trim_end().len();
    value.truncate(trimmed);
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(ValueError::TooLarge(value.len()));
    }
    Ok(SecretValue::new(std::mem::take(&mut *value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(s: &str) -> Zeroizing<String> {
        Zeroizing::new(s.to_owned())
    }

    #[test]
    fn trailing_whitespace_is_trimmed_but_leading_is_kept() {
        let v = finish(z("  s3cret \n\r\n\t")).unwrap();
        assert_eq!(v.expose_secret(), "  s3cret");
        let v = finish(z("line1\nline2\n")).unwrap();
        assert_eq!(v.expose_secret(), "line1\nline2");
    }

    #[test]
    fn empty_and_blank_values_are_refused() {
        assert_eq!(finish(z("")).unwrap_err(), ValueError::Empty);
        assert_eq!(finish(z(" \n\t\n")).unwrap_err(), ValueError::Empty);
        assert_eq!(ValueError::Empty.to_string(), "the secret value is empty");
    }

    #[test]
    fn the_limit_is_in_bytes_and_inclusive() {
        let at_limit = "a".repeat(MAX_VALUE_BYTES);
        assert_eq!(
            finish(z(&at_limit)).unwrap().expose_secret().len(),
            MAX_VALUE_BYTES
        );
        // Trailing whitespace does not count.
        assert!(finish(z(&format!("{at_limit}\n\n"))).is_ok());
        let over = "a".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(
            finish(z(&over)).unwrap_err(),
            ValueError::TooLarge(MAX_VALUE_BYTES + 1)
        );
        // 'é' is two bytes: 32,769 of them exceed the limit though they are fewer characters.
        let multibyte = "é".repeat(MAX_VALUE_BYTES / 2 + 1);
        let err = finish(z(&multibyte)).unwrap_err();
        assert_eq!(err, ValueError::TooLarge(MAX_VALUE_BYTES + 2));
        assert!(err.to_string().contains("65536"), "{err}");
    }

    #[test]
    fn stdin_is_read_whole_within_bounds() {
        let v = read_limited(&b"from stdin\n"[..]).unwrap();
        assert_eq!(v.as_str(), "from stdin\n");
        let huge = vec![b'a'; MAX_STDIN_BYTES as usize + 1];
        assert_eq!(
            read_limited(&huge[..]).unwrap_err(),
            ValueError::StdinTooLarge
        );
        assert_eq!(
            read_limited(&[0xff, 0xfe][..]).unwrap_err(),
            ValueError::NotUtf8
        );
    }
}
