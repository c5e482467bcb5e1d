//! keepalived.conf from arbitrary bytes: never a panic, and whatever parses prints and
//! parses back to the same model.
#![no_main]

use std::path::Path;

use fulcrum_keepalived_conf::{parse_str, print, LexOptions, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let options = LoadOptions {
        lex: LexOptions {
            config_id: Some("lb1".into()),
            includes: false,
        },
        ..LoadOptions::default()
    };
    let loaded = parse_str(Path::new("fuzz.conf"), &text, &options);
    if let Some(config) = loaded.config {
        let printed = print(&config);
        let again = parse_str(Path::new("printed.conf"), &printed, &options);
        assert_eq!(again.config, Some(config), "{printed}");
    }
});
