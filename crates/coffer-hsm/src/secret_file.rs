//! Reading a small file that holds a secret (a PKCS#11 PIN, an edge's node token): the rules
//! every such file is read by, in one place.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

/// The text of the secret file at `path`: a regular file (links are not followed, and a FIFO or
/// device is refused before it is opened, since opening a FIFO waits for a writer), that
/// neither its group nor others may read, of at most `max_bytes`, UTF-8, not empty; one
/// trailing newline (`\n` or `\r\n`) is dropped. It is read into one buffer allocated once,
/// larger than the cap, so no partial copy is left behind in freed memory.
///
/// The error says what is wrong, to follow the file's name ("is empty", "has mode 644, ...");
/// it never holds the file's contents.
pub fn read_secret_file(path: &Path, max_bytes: u64) -> Result<Zeroizing<String>, String> {
    let shown = path.display();
    // Checked before it is opened: opening a FIFO would wait for a writer.
    let cannot = |e: std::io::Error| format!("cannot be read: {e}");
    let before = path.symlink_metadata().map_err(cannot)?;
    if !before.is_file() {
        return Err("is not a regular file (links are not followed)".into());
    }
    let mut file = File::open(path).map_err(cannot)?;
    // The handle's own metadata: the file cannot be swapped between the check and the read.
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "has mode {mode:03o}, which lets group or others read it; restrict it with \
             `chmod 600 {shown}`"
        ));
    }
    let too_large = || format!("is over {max_bytes} bytes; it should hold only the secret");
    if meta.len() > max_bytes {
        return Err(too_large());
    }
    let capacity = usize::try_from(max_bytes).map_err(|_| too_large())? + 1;
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    (&mut file)
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err("is empty".into());
    }
    // Moved, not copied, into the string.
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err("is not UTF-8".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(path: &Path, bytes: &[u8], mode: u32) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn reads_the_text_less_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        for (bytes, expect) in [
            (&b"s3cret\n"[..], "s3cret"),
            (b"s3cret\r\n", "s3cret"),
            (b"s3cret", "s3cret"),
            (b"two\n\n", "two\n"),
        ] {
            write(&path, bytes, 0o600);
            assert_eq!(read_secret_file(&path, 64).unwrap().as_str(), expect);
        }
        write(&path, b"s3cret", 0o400);
        assert_eq!(read_secret_file(&path, 64).unwrap().as_str(), "s3cret");
    }

    #[test]
    fn refuses_what_is_not_a_private_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let absent = read_secret_file(&path, 64).unwrap_err();
        assert!(absent.contains("No such file"), "{absent}");
        for (bytes, mode, expect) in [
            (&b"s3cret"[..], 0o644, "chmod 600"),
            (b"s3cret", 0o640, "has mode 640"),
            (b"s3cret", 0o604, "has mode 604"),
            (b"\n", 0o600, "is empty"),
            (b"", 0o600, "is empty"),
            (b"\xff\xfe", 0o600, "not UTF-8"),
            (&[b'1'; 65], 0o600, "over 64 bytes"),
        ] {
            write(&path, bytes, mode);
            let message = read_secret_file(&path, 64).unwrap_err();
            assert!(message.contains(expect), "{mode:o}: {message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        write(&path, b"s3cret", 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let message = read_secret_file(&link, 64).unwrap_err();
        assert!(message.contains("links are not followed"), "{message}");
    }

    #[test]
    fn a_fifo_is_refused_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        // No writer will ever open it: were it opened for reading, this test would hang.
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let message = read_secret_file(&fifo, 64).unwrap_err();
        assert!(message.contains("not a regular file"), "{message}");
    }
}
