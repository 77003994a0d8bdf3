//! A topology's `resources/` folder: the files its components use (scripts of `shell-bolt`s,
//! data), kept beside the topology file as Storm keeps them in the jar's `resources/`.
//!
//! Contract: [`beside`] names the `resources/` folder next to a topology file if it is a
//! directory, else nothing. Components learn the folder through their context
//! ([`squall_api::TopologyContext::resources_dir`]); relative paths in their config resolve
//! against it. To travel to a cluster, [`pack`] makes one tar archive of the folder (files
//! with their permissions, symbolic links followed, the same bytes for the same contents),
//! at most [`MAX_PACKED`] bytes; [`unpack`] writes one into a directory that appears whole
//! or not at all (written beside it, then renamed), refusing entries that would land
//! outside it.

use std::path::{Path, PathBuf};

/// The name of the folder beside a topology file.
pub const FOLDER: &str = "resources";

/// The largest packed `resources/` folder.
pub const MAX_PACKED: u64 = 256 << 20;

/// The tar archive of `dir` (see the module docs).
pub fn pack(dir: &Path) -> Result<Vec<u8>, String> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(true);
    builder.append_dir_all(".", dir).map_err(|e| format!("cannot pack {}: {e}", dir.display()))?;
    let bytes = builder.into_inner().map_err(|e| format!("cannot pack {}: {e}", dir.display()))?;
    if bytes.len() as u64 > MAX_PACKED {
        return Err(format!(
            "{} packs to {} bytes, more than the {MAX_PACKED} a topology may carry",
            dir.display(),
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Writes the archive `bytes` (made by [`pack`]) into `dest`, which must not exist yet.
pub fn unpack(bytes: &[u8], dest: &Path) -> Result<(), String> {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let unpacked = unpack_into(bytes, &tmp).and_then(|()| {
        std::fs::rename(&tmp, dest).map_err(|e| format!("cannot move resources into {}: {e}", dest.display()))
    });
    if unpacked.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    unpacked
}

fn unpack_into(bytes: &[u8], dir: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(bytes);
    archive.set_preserve_permissions(true);
    for entry in archive.entries().map_err(|e| format!("not a resources archive: {e}"))? {
        let mut entry = entry.map_err(|e| format!("a broken resources archive: {e}"))?;
        let path = entry.path().map_err(|e| format!("a broken resources archive: {e}"))?.into_owned();
        // `unpack_in` refuses (returns false for) entries that would land outside `dir`.
        match entry.unpack_in(dir) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!("the resources archive names {}, outside its folder", path.display()))
            }
            Err(e) => return Err(format!("cannot unpack {}: {e}", path.display())),
        }
    }
    Ok(())
}

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

    #[test]
    fn a_packed_folder_unpacks_to_the_same_files_and_packs_the_same_every_time() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("squall-pack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let src = root.join("src");
        std::fs::create_dir_all(src.join("py/lib")).unwrap();
        std::fs::write(src.join("split.py"), "print('hi')\n").unwrap();
        std::fs::write(src.join("py/lib/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(src.join("py/lib/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let packed = pack(&src).unwrap();
        assert_eq!(packed, pack(&src).unwrap(), "the same contents give the same bytes");
        let dest = root.join("dest");
        unpack(&packed, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("split.py")).unwrap(), "print('hi')\n");
        let mode = std::fs::metadata(dest.join("py/lib/run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "executables stay executable");
        assert!(unpack(b"not a tar archive at all, just some words here", &root.join("bad")).is_err());
        assert!(!root.join("bad").exists(), "a failed unpack leaves nothing");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
