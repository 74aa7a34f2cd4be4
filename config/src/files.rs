//! Reading a whole file the agent was given (a config, a buildspec, an appspec, an env
//! file) without reading more than such a file may hold: a 100 MB file given by mistake, or
//! `/dev/zero`, is refused by its size instead of filling memory.

use std::io::Read;
use std::path::Path;

/// The most a config file, a buildspec, an appspec or an env file may hold: 1 MiB.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads `path` (standard input for `-`) whole when it holds at most `limit` bytes. A
/// regular file's size is checked before reading; anything else is read through a reader
/// that stops one byte past the limit. `what` names the file in the error ("a config
/// file"), which says the size and the limit.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> std::io::Result<Vec<u8>> {
    let too_large = |size: String| {
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "it is {size} bytes; {what} is at most {limit} bytes ({} KiB)",
                limit >> 10
            ),
        )
    };
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)?;
    } else {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_file() && meta.len() > limit {
            return Err(too_large(meta.len().to_string()));
        }
        file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    }
    if bytes.len() as u64 > limit {
        return Err(too_large(format!("more than {limit}")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_past_the_limit_are_refused_by_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(100 << 20).unwrap();
        let err = read_bounded(&path, MAX_FILE_BYTES, "a config file").unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is 104857600 bytes; a config file is at most 1048576 bytes (1024 KiB)"
        );
        std::fs::write(&path, "x".repeat(10)).unwrap();
        assert_eq!(read_bounded(&path, 10, "x").unwrap().len(), 10);
        assert!(read_bounded(Path::new("/dev/zero"), 10, "x").is_err());
    }
}
