//! Entry point: logger, parse, run, exit code. Nothing else lives here.

use clap::Parser;

// mimalloc: a run allocates and frees small buffers for every message (rendering, the MIME
// body, statements); this allocator spends less CPU on them than the system one (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // A panic's message may quote the data that caused it (a patient's name in a header):
    // say where it happened, never what it said.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "an unknown place".into());
        eprintln!("journeyctl: internal error (a defect) at {at}; its message is withheld");
    }));
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
