//! Private files: what holds hashes or keys is readable by this server's
//! user only. Used by the data dir and key handling (`config`) and by the
//! SQLite store, without either depending on the other.

use std::path::Path;

/// Sets `path`'s permission bits to `private` when group or others have
/// any, and logs it; a no-op off Unix. The server must own the file (or be
/// root) for this to succeed.
pub(crate) fn tighten_mode(path: &Path, private: u32, what: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))?;
            tracing::warn!(
                path = %path.display(),
                was = %format!("{mode:03o}"),
                now = %format!("{private:03o}"),
                "{what} was open to group or others; tightened"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, private, what);
    Ok(())
}
