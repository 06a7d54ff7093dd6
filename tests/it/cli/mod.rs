//! The command line as a user meets it: operator commands, the demo, the progress display,
//! completions and man pages.

mod demo;
mod install_files;
mod operator;
mod progress_terminal;
