//! Small file-system helpers shared by the data dir's writers (key files, KEK records, account
//! KEK records, backups): creating a private file durably, syncing a directory, and reading a
//! file that must be a private regular file. Neutral: no module's rules live here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `path` (it must not exist) with mode 0600 and the bytes of `from`, synced. The
/// directory is not synced: the caller syncs it once after all its files.
pub(crate) fn write_new(path: &Path, from: &mut impl Read) -> Result<(), String> {
    let fail = |e: io::Error| format!("cannot write {}: {e}", path.display());
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    io::copy(from, &mut out).map_err(fail)?;
    out.sync_all().map_err(fail)
}

/// Syncs the directory `dir` itself (its entries: names created, renamed or removed).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Syncs the directory holding `path`.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

/// Opens `path` for reading if it is a regular file that is not a symlink and, when `private`,
/// that neither group nor others may access (the check `read_key_file` makes of key files).
/// The checks are made on the handle returned, so the file cannot be swapped after them.
pub(crate) fn open_regular(path: &Path, private: bool) -> Result<File, String> {
    let shown = path.display();
    let link = fs::symlink_metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if link.file_type().is_symlink() {
        return Err(format!(
            "{shown} is a symbolic link; copy the file it points to instead"
        ));
    }
    let file = File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    // The file opened is the one looked at (not a symlink put there in between).
    if (meta.dev(), meta.ino()) != (link.dev(), link.ino()) {
        return Err(format!("{shown} changed while it was being opened"));
    }
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if private && mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:03o}, which lets group or others access it; restrict it \
             with `chmod 600 {shown}`"
        ));
    }
    Ok(file)
}
