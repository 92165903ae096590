//! `k8shell`: the command line of k8shell.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod blueprint;

/// k8shell: developer workspaces reached over SSH, the browser and this CLI.
#[derive(Debug, Parser)]
#[command(name = "k8shell", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, show and build workspace blueprints (Nickel files).
    #[command(subcommand)]
    Blueprint(BlueprintCommand),
}

#[derive(Debug, Subcommand)]
enum BlueprintCommand {
    /// Check blueprint files against the contract; exit status 1 if any is wrong.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show what a blueprint compiles to.
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The WorkspaceSpec as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Build a blueprint's image and push it; nothing happens if the registry has it already.
    Build(blueprint::BuildArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Blueprint(BlueprintCommand::Check { files }) => blueprint::check(&files),
        Command::Blueprint(BlueprintCommand::Show { file, json }) => blueprint::show(&file, json),
        Command::Blueprint(BlueprintCommand::Build(args)) => blueprint::build(&args),
    }
}
