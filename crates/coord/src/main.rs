//! `meta-coord`: the metasched coordinator's command line.

use metasched_coord::cli::{Cli, Command};
use metasched_coord::{commands, exit, train};
use tracing_subscriber::EnvFilter;

/// Lets a closed pipe (`meta-coord … | head`) end the process quietly, as for other Unix
/// tools, instead of a panic in `println!`.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    restore_sigpipe();
    let cli: Cli = metasched_coord::cli::parse_or_exit();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Init(a) => commands::init::run(a),
        Command::Metagrad(a) => commands::metagrad::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::SampleTasks(a) => commands::sample_tasks::run(a),
        Command::Compare(a) => commands::compare::run(a),
        Command::Apply(a) => commands::apply::run(a),
        Command::Train(a) => train::run(a).map(|outcome| {
            if let train::Outcome::Interrupted { .. } = outcome {
                std::process::exit(exit::EXIT_INTERRUPTED);
            }
        }),
    };
    if let Err(err) = result {
        eprintln!("error: {}", exit::one_line(&err));
        std::process::exit(exit::exit_code(&err));
    }
}
