//! kmsctl binary: parse, build the runtime, call the library, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use kmsctl::cli::Cli;
use kmsctl::exit::ExitClass;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; everything else is a usage
            // error (64, not clap's default 2, which means "invalid response" here).
            let code = if e.use_stderr() {
                ExitClass::Usage.code()
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kmsctl")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kmsctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let result = runtime.block_on(kmsctl::execute(&cli, &mut stdout));
    match result {
        Ok(class) => ExitCode::from(class.code()),
        Err(e) => {
            let class = e.class();
            eprintln!("kmsctl: {e}");
            ExitCode::from(class.code())
        }
    }
}
