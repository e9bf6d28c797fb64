//! The `perturb` binary; all of it lives in `perturb-cli`.
fn main() {
    std::process::exit(perturb::cli::main_with_args(std::env::args_os()));
}
