//! Reading a secret value from the user: `--value`, `--value-file`, a hidden prompt, or standard
//! input.
//!
//! Values are stored byte for byte. `--value V` and `--value-file FILE` give exactly the value;
//! the hidden prompt drops only the newline that ends the typed line; standard input keeps its
//! bytes except exactly one trailing newline (`\n` or `\r\n`, the one `echo`, a here-string or an
//! editor adds), which `--keep-trailing-newline` keeps too. Nothing else is trimmed.
//!
//! The value is held in zeroizing buffers from the moment it is read, is never printed, and is
//! never logged. Limits are checked here so that a bad value fails before any request is made.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use coffer_api::SecretValue;
use zeroize::Zeroizing;

/// The largest value the API accepts, in bytes of UTF-8.
pub const MAX_VALUE_BYTES: usize = 65_536;

/// How much of standard input (or of a value file) we read at most before giving up: above the
/// limit, so that a value a little too large is reported with its size, but bounded.
const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// Where a value comes from.
pub enum Source {
    /// `--value V`: exactly V.
    Given(Zeroizing<String>),
    /// `--value-file FILE`: exactly the file's bytes.
    File(PathBuf),
    /// A hidden prompt on a terminal, otherwise all of standard input (less one trailing
    /// newline unless `keep_trailing_newline`).
    Input { keep_trailing_newline: bool },
}

#[derive(Debug, PartialEq, Eq)]
pub enum ValueError {
    Empty,
    TooLarge(usize),
    InputTooLarge,
    NotUtf8,
    Read(String),
    /// A problem with `--value-file`: the path, and what is wrong, phrased to follow it.
    File {
        path: String,
        problem: String,
    },
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueError::Empty => f.write_str("the secret value is empty"),
            ValueError::TooLarge(n) => write!(
                f,
                "the secret value is {n} bytes; the limit is {MAX_VALUE_BYTES} bytes"
            ),
            ValueError::InputTooLarge => write!(
                f,
                "standard input holds more than {MAX_INPUT_BYTES} bytes; the limit for a secret \
                 value is {MAX_VALUE_BYTES} bytes"
            ),
            ValueError::NotUtf8 => f.write_str("the secret value is not valid UTF-8"),
            ValueError::Read(e) => write!(f, "cannot read the secret value: {e}"),
            ValueError::File { path, problem } => write!(f, "the value file {path} {problem}"),
        }
    }
}

impl std::error::Error for ValueError {}

/// The value from `source`, checked.
pub fn obtain(source: Source) -> Result<SecretValue, ValueError> {
    match source {
        Source::Given(value) => {
            warn_about_history();
            exact(value)
        }
        Source::File(path) => from_file(&path),
        Source::Input {
            keep_trailing_newline,
        } => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                let line = rpassword::prompt_password("Secret value (input hidden): ")
                    .map(Zeroizing::new)
                    .map_err(|e| ValueError::Read(e.to_string()))?;
                exact(line)
            } else {
                from_stdin(stdin.lock(), keep_trailing_newline)
            }
        }
    }
}

fn warn_about_history() {
    let _ = writeln!(
        std::io::stderr(),
        "warning: a value passed with --value stays in your shell history and is visible in the \
         process list; omit --value to be prompted, pipe the value on standard input, or use \
         --value-file"
    );
}

/// All of `reader` (standard input), less exactly one trailing newline unless
/// `keep_trailing_newline`.
fn from_stdin(reader: impl Read, keep_trailing_newline: bool) -> Result<SecretValue, ValueError> {
    let mut value = read_limited(reader)?;
    if !keep_trailing_newline {
        drop_one_newline(&mut value);
    }
    exact(value)
}

/// Drops one `\n` or `\r\n` from the end of `value`, and nothing else.
fn drop_one_newline(value: &mut String) {
    if value.ends_with("\r\n") {
        value.truncate(value.len() - 2);
    } else if value.ends_with('\n') {
        value.truncate(value.len() - 1);
    }
}

/// The file's bytes, exactly. Every problem names the file.
fn from_file(path: &Path) -> Result<SecretValue, ValueError> {
    let in_file = |problem: String| ValueError::File {
        path: path.display().to_string(),
        problem,
    };
    let cannot_read = |e: std::io::Error| in_file(format!("cannot be read: {e}"));
    let file = File::open(path).map_err(cannot_read)?;
    if file.metadata().map_err(cannot_read)?.is_dir() {
        return Err(in_file("is a directory".to_owned()));
    }
    let value = read_limited(file).map_err(|e| match e {
        ValueError::InputTooLarge => in_file(format!(
            "holds more than {MAX_INPUT_BYTES} bytes; the limit for a secret value is \
             {MAX_VALUE_BYTES} bytes"
        )),
        ValueError::NotUtf8 => in_file("is not valid UTF-8".to_owned()),
        ValueError::Read(e) => in_file(format!("cannot be read: {e}")),
        other => other,
    })?;
    exact(value).map_err(|e| match e {
        ValueError::Empty => in_file("is empty".to_owned()),
        ValueError::TooLarge(n) => in_file(format!(
            "holds {n} bytes; the limit for a secret value is {MAX_VALUE_BYTES} bytes"
        )),
        other => other,
    })
}

/// Reads `reader` to the end, refusing more than [`MAX_INPUT_BYTES`] and anything not UTF-8.
pub fn read_limited(reader: impl Read) -> Result<Zeroizing<String>, ValueError> {
    // Reserve up front so the buffer holding the value is not reallocated (and an unzeroized
    // copy left behind) for any value within the limit.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_VALUE_BYTES + 1024));
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ValueError::Read(e.to_string()))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(ValueError::InputTooLarge);
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

/// The value exactly as given, once checked to be neither empty nor too large. Nothing is
/// trimmed: a value of spaces is a value.
pub fn exact(mut value: Zeroizing<String>) -> Result<SecretValue, ValueError> {
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

    fn stdin(input: &[u8], keep: bool) -> Result<String, ValueError> {
        from_stdin(input, keep).map(|v| v.expose_secret().to_owned())
    }

    #[test]
    fn given_values_are_kept_byte_for_byte() {
        for value in [
            "  padded  ",
            "\ttabs\t",
            "line1\r\nline2\r\n",
            "ends with newline\n",
            " ",
            "\n",
            "naïve ✓ 日本語 🔑\u{00a0}",
        ] {
            assert_eq!(exact(z(value)).unwrap().expose_secret(), value);
        }
    }

    #[test]
    fn standard_input_drops_exactly_one_trailing_newline() {
        assert_eq!(stdin(b"s3cret\n", false).unwrap(), "s3cret");
        assert_eq!(stdin(b"s3cret\r\n", false).unwrap(), "s3cret");
        assert_eq!(stdin(b"s3cret", false).unwrap(), "s3cret");
        // Only one: a second newline, a lone \r and other whitespace are the value's.
        assert_eq!(stdin(b"s3cret\n\n", false).unwrap(), "s3cret\n");
        assert_eq!(stdin(b"s3cret\r\n\r\n", false).unwrap(), "s3cret\r\n");
        assert_eq!(stdin(b"s3cret\r", false).unwrap(), "s3cret\r");
        assert_eq!(stdin(b"  s3cret \t\n", false).unwrap(), "  s3cret \t");
        assert_eq!(stdin(b"s3cret \n", false).unwrap(), "s3cret ");
        assert_eq!(stdin(b"\n\n", false).unwrap(), "\n");
        // --keep-trailing-newline keeps every byte.
        assert_eq!(stdin(b"s3cret\n", true).unwrap(), "s3cret\n");
        assert_eq!(stdin(b"s3cret\r\n", true).unwrap(), "s3cret\r\n");
        let pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n";
        assert_eq!(stdin(pem.as_bytes(), true).unwrap(), pem);
    }

    #[test]
    fn the_prompt_drops_only_the_newline_that_ends_the_line() {
        // The prompt's own line reading (rpassword's, as `prompt_password` runs it on the
        // terminal), fed the keys typed; what it returns is stored untouched.
        let typed = |keys: &str| {
            let config = rpassword::ConfigBuilder::new()
                .input_reader(std::io::Cursor::new(keys.to_owned()))
                .output_discard()
                .build();
            let line = rpassword::read_password_with_config(config).unwrap();
            exact(Zeroizing::new(line))
                .map(|v| v.expose_secret().to_owned())
                .unwrap()
        };
        assert_eq!(typed("  s3cret  \n"), "  s3cret  ");
        assert_eq!(typed("s3cret\r\n"), "s3cret");
        assert_eq!(typed(" é ✓ 日本 🔑 \n"), " é ✓ 日本 🔑 ");
        // Line editing: a Tab (a control key) is not text at a terminal prompt; values with
        // tabs or several lines come from --value-file or standard input (documented).
        assert_eq!(typed("a\tb\n"), "ab");
    }

    #[test]
    fn empty_values_are_refused_and_blank_ones_are_values() {
        assert_eq!(exact(z("")).unwrap_err(), ValueError::Empty);
        assert_eq!(stdin(b"", false).unwrap_err(), ValueError::Empty);
        assert_eq!(stdin(b"\n", false).unwrap_err(), ValueError::Empty);
        assert_eq!(stdin(b"\r\n", false).unwrap_err(), ValueError::Empty);
        assert_eq!(stdin(b"\n", true).unwrap(), "\n");
        assert_eq!(stdin(b" \t\n", false).unwrap(), " \t");
        assert_eq!(ValueError::Empty.to_string(), "the secret value is empty");
    }

    #[test]
    fn the_limit_is_in_bytes_and_inclusive() {
        let at_limit = "a".repeat(MAX_VALUE_BYTES);
        assert_eq!(
            exact(z(&at_limit)).unwrap().expose_secret().len(),
            MAX_VALUE_BYTES
        );
        // The newline standard input drops does not count; one that is kept does.
        assert!(stdin(format!("{at_limit}\n").as_bytes(), false).is_ok());
        assert_eq!(
            stdin(format!("{at_limit}\n").as_bytes(), true).unwrap_err(),
            ValueError::TooLarge(MAX_VALUE_BYTES + 1)
        );
        let over = "a".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(
            exact(z(&over)).unwrap_err(),
            ValueError::TooLarge(MAX_VALUE_BYTES + 1)
        );
        // 'é' is two bytes: 32,769 of them exceed the limit though they are fewer characters.
        let multibyte = "é".repeat(MAX_VALUE_BYTES / 2 + 1);
        let err = exact(z(&multibyte)).unwrap_err();
        assert_eq!(err, ValueError::TooLarge(MAX_VALUE_BYTES + 2));
        assert!(err.to_string().contains("65536"), "{err}");
    }

    #[test]
    fn stdin_is_read_whole_within_bounds() {
        let v = read_limited(&b"from stdin\n"[..]).unwrap();
        assert_eq!(v.as_str(), "from stdin\n");
        let huge = vec![b'a'; MAX_INPUT_BYTES as usize + 1];
        assert_eq!(
            read_limited(&huge[..]).unwrap_err(),
            ValueError::InputTooLarge
        );
        assert_eq!(
            read_limited(&[0xff, 0xfe][..]).unwrap_err(),
            ValueError::NotUtf8
        );
    }

    #[test]
    fn a_value_file_is_read_exactly_and_every_problem_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = tmp.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let read = |path: &Path| from_file(path).map(|v| v.expose_secret().to_owned());
        let pem =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        assert_eq!(read(&file("key.pem", pem.as_bytes())).unwrap(), pem);
        let crlf = " a\tb \r\n\r\n";
        assert_eq!(read(&file("crlf", crlf.as_bytes())).unwrap(), crlf);

        let problem = |path: &Path| {
            let err = read(path).unwrap_err();
            let text = err.to_string();
            let prefix = format!("the value file {} ", path.display());
            assert!(text.starts_with(&prefix), "{text}");
            text[prefix.len()..].to_owned()
        };
        let missing = tmp.path().join("missing");
        assert!(
            problem(&missing).starts_with("cannot be read: No such file or directory"),
            "{}",
            problem(&missing)
        );
        assert_eq!(problem(tmp.path()), "is a directory");
        let through_a_file = file("plain", b"x").join("child");
        assert!(problem(&through_a_file).starts_with("cannot be read: "));
        assert_eq!(problem(&file("empty", b"")), "is empty");
        assert_eq!(problem(&file("latin1", b"caf\xe9")), "is not valid UTF-8");
        let over = file("over", &vec![b'a'; MAX_VALUE_BYTES + 1]);
        assert_eq!(
            problem(&over),
            "holds 65537 bytes; the limit for a secret value is 65536 bytes"
        );
        let huge = file("huge", &vec![b'a'; MAX_INPUT_BYTES as usize + 1]);
        assert!(problem(&huge).starts_with("holds more than 1048576 bytes"));
        // A value file holding exactly one newline is a one-newline value, not an empty one.
        assert_eq!(read(&file("newline", b"\n")).unwrap(), "\n");
    }
}
