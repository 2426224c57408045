//! Fuzz target: kmsd's configuration parsers on arbitrary text — the TOML file
//! (`config::parse_toml`), `--initial-cluster` (`config::parse_initial_cluster`), `--log-level`
//! (`logging::check_filter`), the `KMSD_*` variable check (`config::unknown_env_vars`), and the
//! command line (`config::Cli` through clap's `try_parse_from`) followed by `Settings::load`.
//!
//! Input layout (UTF-8, invalid bytes replaced): everything before the first NUL is the
//! argument vector, one argument per line, after `kmsd`; everything after it is the text of
//! the file a `--config` argument names. Every parser also gets the whole text on its own.
//!
//! Invariants: nothing panics (errors are values), and a configuration that loads prints
//! (`Settings::to_toml`, what `--print-config` shows) as TOML that parses back to the same
//! layer and loads again.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Parser;
use kmsd::config::{Cli, Settings, parse_initial_cluster, parse_toml, unknown_env_vars};
use kmsd::logging::check_filter;
use libfuzzer_sys::fuzz_target;

/// The file `--config` is pointed at: one per fuzzing process, rewritten for each input, so
/// `Settings::load` never reads whatever path the input names (`/dev/zero`, a FIFO, …).
fn config_file() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("kmsd-fuzz-config-{}.toml", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (args, file) = text.split_once('\0').unwrap_or((&text, ""));

    // Each parser on the whole text.
    let _ = parse_toml(Path::new("fuzz.toml"), &text);
    let _ = parse_initial_cluster(&text);
    if let Ok(normalized) = check_filter(&text) {
        // The normalized filter is what the node runs with: it must pass the check again.
        assert_eq!(
            check_filter(&normalized).as_deref(),
            Ok(normalized.as_str()),
            "check_filter is not idempotent"
        );
    }
    let _ = unknown_env_vars(text.lines());

    // The command line, then the whole load (flags over file over defaults).
    let argv = std::iter::once("kmsd").chain(args.split('\n'));
    let Ok(mut cli) = Cli::try_parse_from(argv) else {
        return;
    };
    if cli.config.is_some() {
        if std::fs::write(config_file(), file).is_err() {
            return;
        }
        cli.config = Some(config_file().to_owned());
    }
    let Ok(settings) = Settings::load(&cli) else {
        return;
    };
    let printed = settings.to_toml();
    let layer = match parse_toml(Path::new("printed.toml"), &printed) {
        Ok(layer) => layer,
        Err(e) => panic!("--print-config output does not parse: {e}\n{printed}"),
    };
    assert_eq!(
        layer, settings.effective,
        "--print-config output does not read back as the same settings:\n{printed}"
    );
    if let Err(e) = Settings::from_layer(layer) {
        panic!("--print-config output does not load: {e}\n{printed}");
    }
});
