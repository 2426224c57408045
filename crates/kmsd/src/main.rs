//! kmsd binary: parse, configure, run. Everything else lives in the library so tests can start
//! a whole node in-process.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = kmsd::config::Cli::parse();
    let settings = match kmsd::config::Settings::load(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kmsd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", settings.to_toml());
        return std::process::ExitCode::SUCCESS;
    }
    // Held to the end: dropping it writes out every queued log line.
    let log = kmsd::logging::init(settings.log_format, &settings.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kmsd")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log.flush();
            eprintln!("kmsd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kmsd::run(settings, kmsd::shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kmsd stopped with an error");
            log.flush();
            eprintln!("kmsd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
