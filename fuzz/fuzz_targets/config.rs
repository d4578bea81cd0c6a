//! Any text as a config file: vigil answers with a config or with errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = vigil::config::parse(std::path::Path::new("/fuzz/vigil.toml"), text, None);
});
