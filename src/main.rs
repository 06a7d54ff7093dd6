//! The `convsync` binary: everything lives in the library; see `convsync::cli`.

fn main() -> std::process::ExitCode {
    convsync::cli::main()
}
