//! `convsync completions` and `convsync man`, as a shell and a packager use them: the bash
//! script loaded by real bash completes a subcommand, and `man --out` writes a page for
//! the program and for each subcommand.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_convsync");

/// What bash offers for `convsync <word><TAB>`: the function the script registered with
/// `complete -F`, called the way bash's completion calls it (command, word, previous word).
fn bash_completes(word: &str) -> String {
    let script = format!(
        "source <('{BINARY}' completions bash) && \
         function=$(complete -p convsync | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p') && \
         COMP_WORDS=(convsync '{word}') && COMP_CWORD=1 && COMP_LINE='convsync {word}' && \
         COMP_POINT=${{#COMP_LINE}} && \"$function\" convsync '{word}' convsync && \
         echo \"${{COMPREPLY[@]}}\""
    );
    let output = Command::new("bash")
        .args(["--norc", "-c", &script])
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn bash_completion_completes_subcommands() {
    assert_eq!(bash_completes("sy"), "sync");
    assert_eq!(bash_completes("check-"), "check-config");
    let all = bash_completes("");
    for sub in ["run", "status", "completions", "man"] {
        assert!(all.split_whitespace().any(|w| w == sub), "{sub} in {all}");
    }
}

#[test]
fn man_writes_a_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let output = Command::new(BINARY)
        .args(["man", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    for page in [
        "convsync.1",
        "convsync-run.1",
        "convsync-sync.1",
        "convsync-health.1",
    ] {
        let text = std::fs::read_to_string(out.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is a man page");
    }
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(listed.contains("convsync-status.1"), "{listed}");
}
