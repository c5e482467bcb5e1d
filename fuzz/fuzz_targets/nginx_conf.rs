//! nginx.conf from arbitrary bytes: never a panic, and whatever parses prints and parses
//! back to the same model.
#![no_main]

use std::path::Path;

use fulcrum_nginx_conf::{parse_str, print, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let options = LoadOptions {
        includes: false,
        host_checks: false,
        globals: None,
    };
    let loaded = parse_str(Path::new("fuzz.conf"), &text, &options);
    if let Some(config) = loaded.config {
        let printed = print(&config);
        let again = parse_str(Path::new("printed.conf"), &printed, &options);
        assert_eq!(again.config, Some(config), "{printed}");
    }
});
