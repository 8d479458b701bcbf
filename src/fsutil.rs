//! vxrouter's own files (state, lock, dnsmasq configurations): private to
//! root whatever the caller's umask — directories 0700, files 0600 — and
//! written without following symbolic links, so a link planted at a file's
//! name cannot redirect a write elsewhere.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Context, Result};

/// Creates `dir` (and missing parents) with mode 0700; an existing one must
/// be a real directory, and is made 0700.
pub fn private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("create {}", dir.display()))?;
    let meta = fs::symlink_metadata(dir).with_context(|| format!("inspect {}", dir.display()))?;
    if !meta.is_dir() {
        crate::bail!(Conflict, "{} is not a directory (a symbolic link?); refusing to use it", dir.display());
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| format!("chmod 0700 {}", dir.display()))?;
    }
    Ok(())
}

/// Opens `path` for writing as a new file, mode 0600, never through a
/// symbolic link (O_NOFOLLOW) and never an existing file (O_EXCL).
pub fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("create {}", path.display()))
}

/// Writes `bytes` to `path` atomically: a private temporary file beside it
/// (whatever was at that name is removed first, a link included, not
/// followed), then rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", tmp.display())),
    }
    let mut f = create_private(tmp)?;
    f.write_all(bytes).with_context(|| format!("write {}", tmp.display()))?;
    drop(f);
    fs::rename(tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_and_links_are_not_followed() {
        let dir = std::env::temp_dir().join(format!("vxr-fs-{}", std::process::id()));
        // SAFETY: umask(2) cannot fail and may be called from any thread. It
        // is process-wide: files other tests create meanwhile may get wider
        // modes, which none of them checks.
        let old = unsafe { libc::umask(0) };
        private_dir(&dir.join("a/b")).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("a/b/s.json.tmp")).unwrap();
        write_private(&dir.join("a/b/s.json"), b"{}").unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(fs::read_to_string(dir.join("a/b/s.json")).unwrap(), "{}");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("a/b/s.json")), 0o600);
        assert_eq!(mode(&dir.join("a/b")), 0o700);
        assert_eq!(mode(&dir.join("a")), 0o700);
        let _ = fs::remove_dir_all(&dir);
    }
}
