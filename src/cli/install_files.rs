//! Files a package installs beside the binary, generated from the clap definitions so
//! they cannot drift from the real command line: shell completion scripts
//! (`convsync completions bash|zsh|fish`) and man pages (`convsync man --out DIR`).
//! The Debian package (deploy/debian/build-deb.sh) and the container image
//! (deploy/docker/rootfs.sh) both run these.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(shell: Shell, out: &mut dyn std::io::Write) {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, &mut command, name, out);
}

/// Writes `convsync.1` and one page per subcommand (`convsync-run.1`, ...) into `dir`,
/// creating it if needed. Returns the names of the pages written.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the man page directory {}", dir.display()))?;
    let command = Cli::command();
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("convsync") && name.ends_with(".1"))
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_man_page_for_the_program_and_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_man_pages(dir.path()).unwrap();
        for sub in Cli::command().get_subcommands() {
            let page = format!("convsync-{}.1", sub.get_name());
            assert!(pages.contains(&page), "{page} missing from {pages:?}");
            let text = std::fs::read_to_string(dir.path().join(&page)).unwrap();
            assert!(text.starts_with(".ie"), "{page} is not roff: {text:.80}");
        }
        assert!(pages.contains(&"convsync.1".to_owned()), "{pages:?}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            write_completions(shell, &mut script);
            let script = String::from_utf8(script).unwrap();
            assert!(
                script.contains("check-config") && script.contains("sync"),
                "{shell}: {script:.200}"
            );
        }
    }
}
