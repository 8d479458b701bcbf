//! The `vxrouter` binary: everything lives in the library (`vxrouter::cli`).

fn main() -> std::process::ExitCode {
    vxrouter::cli::main()
}
