//! The `extbackup` command (thin: the work is in the library).

fn main() -> std::process::ExitCode {
    eprintln!("extbackup: the command line is being written");
    std::process::ExitCode::FAILURE
}
