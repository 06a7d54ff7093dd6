//! Why a file convsync needs could not be read, said so that the reader can act on it.
//!
//! A service user that may not read a root-owned file, or may not enter the directory
//! holding it, is told "permission denied" with the path and its own uid: `Path::exists`
//! and friends report such a file as missing, which sends people looking in the wrong
//! place.

use std::io;
use std::path::Path;

/// Describes why opening `path` failed with `error`, without the file's contents.
pub fn describe(path: &Path, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => format!("{} does not exist", path.display()),
        io::ErrorKind::PermissionDenied => format!(
            "permission denied: {} cannot be read by uid {} (check the mode and owner of \
             the file and of every directory above it; a systemd service reads \
             root-only files through LoadCredential=)",
            path.display(),
            effective_uid()
        ),
        _ => format!("cannot read {}: {error}", path.display()),
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_denied_names_path_and_uid() {
        let error = io::Error::from(io::ErrorKind::PermissionDenied);
        let text = describe(Path::new("/etc/convsync/convsync.toml"), &error);
        assert!(text.starts_with("permission denied"), "{text}");
        assert!(text.contains("/etc/convsync/convsync.toml"), "{text}");
        assert!(text.contains(&format!("uid {}", effective_uid())), "{text}");
    }

    #[test]
    fn missing_file_says_so() {
        let error = io::Error::from(io::ErrorKind::NotFound);
        let text = describe(Path::new("/nowhere/convsync.toml"), &error);
        assert_eq!(text, "/nowhere/convsync.toml does not exist");
    }
}
