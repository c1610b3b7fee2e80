//! The `backfill` command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = backfill_cli::args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("backfill: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    std::process::ExitCode::from(runtime.block_on(backfill_cli::main(cli)))
}
