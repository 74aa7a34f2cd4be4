#![no_main]

//! The daemon's config file: any text gives a config or positioned problems, never a panic;
//! a config written back out reads to the same config.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match agent_config::parse(text, "fuzz.toml") {
        Ok(config) => {
            let written = config.to_toml().expect("a parsed config serialises");
            let again = agent_config::parse(&written, "again.toml")
                .unwrap_or_else(|e| panic!("re-reading\n{written}\n{e}"));
            assert_eq!(config, again);
        }
        Err(agent_config::ConfigError::Invalid { problems, .. }) => {
            assert!(!problems.is_empty());
            let lines = text.split('\n').count();
            for p in &problems {
                assert!(p.line >= 1 && p.line <= lines, "{p:?} in {lines} lines");
                assert!(p.column >= 1, "{p:?}");
                assert!(!p.message.is_empty());
            }
        }
        Err(other) => panic!("parsing text gave {other}"),
    }
});
