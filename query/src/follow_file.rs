//! A `Follow` client's cursor kept in a file (`verdict follow --cursor-file`, the forwarder's
//! per-destination cursors): read at start, replaced after each delivered message in one rename,
//! so a crash leaves the old cursor or the new one, never a torn one.

use std::io;
use std::path::Path;

/// The saved cursor (`""`: none saved yet, start from the beginning).
pub fn load(file: &Path) -> io::Result<String> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// Replaces the saved cursor with `cursor`.
pub fn save(file: &Path, cursor: &str) -> io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, cursor)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_file_is_no_cursor_and_a_saved_one_reads_back() {
        let dir = std::env::temp_dir().join(format!("verdict-follow-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cursor");
        assert_eq!(super::load(&file).unwrap(), "");
        super::save(&file, "f1.abc").unwrap();
        assert_eq!(super::load(&file).unwrap(), "f1.abc");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
