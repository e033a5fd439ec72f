//! The `blinkchamber` binary: see `blinkchamber --help`.

/// mimalloc instead of the system allocator: event batches and cache values allocate and
/// free many short-lived buffers across threads (ARCHITECTURE.md, decision 15).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    blinkchamber::cli::main()
}
