//! A topology's `resources/` folder: the files its components use (scripts of `shell-bolt`s,
//! data), kept beside the topology file as Storm keeps them in the jar's `resources/`.
//!
//! Contract: [`beside`] names the `resources/` folder next to a topology file if it is a
//! directory, else nothing. Components learn the folder through their context
//! ([`squall_api::TopologyContext::resources_dir`]); relative paths in their config resolve
//! against it.

use std::path::{Path, PathBuf};

/// The name of the folder beside a topology file.
pub const FOLDER: &str = "resources";

/// The `resources/` directory beside the topology file `file`, if there is one.
pub fn beside(file: &Path) -> Option<PathBuf> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = parent.join(FOLDER);
    dir.is_dir().then(|| std::path::absolute(&dir).unwrap_or(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_beside_the_file_is_found_only_if_it_exists() {
        let root = std::env::temp_dir().join(format!("squall-resources-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let file = root.join("t.toml");
        assert_eq!(beside(&file), None);
        std::fs::create_dir_all(root.join(FOLDER)).unwrap();
        assert_eq!(beside(&file), Some(root.join(FOLDER)));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
