//! Entry point: logger, parse, run, exit code. Nothing else lives here.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = journeyctl::cli::Cli::parse();
    journeyctl::init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("journeyctl: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let status = runtime.block_on(journeyctl::run(cli));
    std::process::ExitCode::from(status.code())
}
