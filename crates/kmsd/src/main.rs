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
    // A misspelt KMSD_* variable has no effect: say so (on stderr for --print-config).
    let unknown_env = kmsd::config::unknown_env_vars(std::env::vars_os().map(|(name, _)| name));
    if cli.print_config {
        for v in &unknown_env {
            eprintln!("kmsd: warning: {v}");
        }
        print!("{}", settings.to_toml());
        return std::process::ExitCode::SUCCESS;
    }
    // Everything kmsd creates — the data directory, the store, checkpoints, journals — is for
    // its own user only, whatever umask it was started with.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Held to the end: dropping it writes out every queued log line.
    let log = kmsd::logging::init(settings.log_format, &settings.log_level);
    for v in &unknown_env {
        tracing::warn!(
            variable = %v.name,
            did_you_mean = v.suggestion.as_deref(),
            "unknown KMSD_* environment variable ignored"
        );
    }
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
        Ok(()) if kmsd::restart_requested() => {
            // The storage recovered after a failure that stopped the Raft core: start again in
            // this process (same pid), with the same arguments and environment.
            drop(runtime);
            log.flush();
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("kmsd: cannot restart in place: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            use std::os::unix::process::CommandExt as _;
            let e = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .exec();
            eprintln!("kmsd: cannot restart in place: {e}");
            std::process::ExitCode::FAILURE
        }
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kmsd stopped with an error");
            log.flush();
            eprintln!("kmsd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
