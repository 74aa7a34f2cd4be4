#![no_main]

//! JobSpec messages: any bytes give a job or positioned problems, never a panic; a job
//! written back out reads to the same job; the policy check never panics on it.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match agent_config::jobspec::parse(data) {
        Ok(job) => {
            let text = serde_json::to_vec(&job).expect("a parsed job serialises");
            let again = agent_config::jobspec::parse(&text)
                .unwrap_or_else(|e| panic!("re-reading {}: {e}", String::from_utf8_lossy(&text)));
            assert_eq!(job, again);
            let config = agent_config::parse(
                "version = 1\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
                "fuzz.toml",
            )
            .expect("minimal config");
            if let Err(refusals) = agent_config::check_policy(&job, &config) {
                assert!(
                    refusals
                        .iter()
                        .all(|r| !r.message.is_empty() && !r.hint.is_empty())
                );
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            let lines = data.split(|&b| b == b'\n').count();
            for p in &e.problems {
                assert!(
                    p.line >= 1 && p.line <= lines.max(1),
                    "{p:?} in {lines} lines"
                );
                assert!(p.column >= 1, "{p:?}");
                assert!(!p.message.is_empty());
            }
        }
    }
});
