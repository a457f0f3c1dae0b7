//! `meta-coord`: the metasched coordinator's command line.

mod cli;
mod commands;
mod device;
mod exit;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
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
    };
    if let Err(err) = result {
        eprintln!("error: {}", one_line(&err));
        std::process::exit(exit::exit_code(&err));
    }
}

/// The error and its causes on one line, skipping a cause whose text the message already
/// holds (many errors print their source themselves).
fn one_line(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg.replace('\n', " ")
}
