//! `agent job check`: checks JobSpec messages before they are sent, as the daemon would
//! when it receives them, and optionally against an agent's config.

use std::path::{Path, PathBuf};

use agent_config::jobspec::MAX_JOBSPEC_BYTES;

use crate::exit;

/// Checks every file and prints each problem; exit 0 when all are valid (and allowed), 2
/// otherwise.
pub fn run(files: &[PathBuf], config: Option<&Path>) -> u8 {
    let config = match config.map(agent_config::load).transpose() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return exit::BAD_INPUT;
        }
    };
    let mut valid = true;
    for file in files {
        match check(file, config.as_ref()) {
            Ok(id) => println!("{}: valid (job {id})", file.display()),
            Err(report) => {
                valid = false;
                eprintln!("{report}");
            }
        }
    }
    if valid {
        exit::SUCCESS
    } else {
        exit::BAD_INPUT
    }
}

fn check(file: &Path, config: Option<&agent_config::Config>) -> Result<String, String> {
    let origin = file.display().to_string();
    let bytes = read(file).map_err(|e| format!("{origin}: error: cannot read it: {e}"))?;
    let job = agent_config::jobspec::parse(&bytes).map_err(|e| e.render(&origin))?;
    if let Some(config) = config {
        agent_config::check_policy(&job, config).map_err(|refusals| {
            refusals
                .iter()
                .map(|r| format!("{origin}: {r}"))
                .collect::<Vec<_>>()
                .join("\n")
        })?;
    }
    Ok(job.id)
}

/// A file, or standard input for `-`; reading stops one byte past what a message may hold,
/// which is enough for the parser to refuse it.
fn read(file: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let limit = MAX_JOBSPEC_BYTES as u64 + 1;
    if file == Path::new("-") {
        std::io::stdin().take(limit).read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(file)?
            .take(limit)
            .read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}
