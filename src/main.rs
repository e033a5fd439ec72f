//! The `blinkchamber` binary: see `blinkchamber --help`.

fn main() -> std::process::ExitCode {
    blinkchamber::cli::main()
}
