//! The error for a command called wrongly, which `main` turns into exit status 2; a leaf, so
//! that the arguments' own checks and the commands can both return it.

/// A mistake in how the command was called (exit status 2), as opposed to a failed operation.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
