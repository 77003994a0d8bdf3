//! The README stays true and self-contained: it points nowhere outside the repository, every
//! file it links exists, and the project it shows is `examples/shout` exactly.

use squall_tests::repo_file;

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The fenced blocks of `text` with this info string (```rust), in order.
fn blocks<'a>(text: &'a str, info: &str) -> Vec<&'a str> {
    let fence = format!("```{info}\n");
    text.match_indices(&fence)
        .map(|(at, _)| {
            let start = at + fence.len();
            let end = text[start..].find("```").map_or(text.len(), |n| start + n);
            &text[start..end]
        })
        .collect()
}

#[test]
fn readme_and_docs_link_only_to_files_in_the_repository() {
    for doc in ["README.md", "docs/benchmarks.md", "docs/topology-file.md", "docs/cluster-file.md"] {
        let text = read(doc);
        assert!(!text.contains(concat!("..", "/shared")), "{doc} points outside the repository");
        let dir = std::path::Path::new(doc).parent().unwrap();
        for (at, _) in text.match_indices("](") {
            let target = &text[at + 2..];
            let target = &target[..target.find(')').unwrap()];
            let path = target.split('#').next().unwrap();
            if path.is_empty() || path.contains("://") {
                continue;
            }
            let file = repo_file(dir.join(path).to_str().unwrap());
            assert!(file.exists(), "{doc} links to {target}, which is not in the repository");
            assert!(
                file.canonicalize().unwrap().starts_with(repo_file("").canonicalize().unwrap()),
                "{doc} links outside the repository: {target}"
            );
        }
    }
}

#[test]
fn readme_shows_the_shout_example_as_it_is() {
    let readme = read("README.md");
    let main = read("examples/shout/src/main.rs");
    let code = &main[main.find("use serde::Deserialize;").expect("main.rs's first use")..];
    assert!(blocks(&readme, "rust").contains(&code), "README's bolt differs from examples/shout/src/main.rs");
    let cargo = read("examples/shout/Cargo.toml");
    assert!(
        blocks(&readme, "toml").contains(&cargo.as_str()),
        "README's Cargo.toml differs from the example's"
    );
}

#[test]
fn readme_shows_the_python_word_count_as_it_is() {
    let readme = read("README.md");
    let bolt = read("config/resources/split_sentence.py");
    assert!(blocks(&readme, "python").contains(&bolt.as_str()), "README's Python bolt differs from the file");
    let topology = read("config/wordcount-python.toml");
    assert!(blocks(&readme, "toml").contains(&topology.as_str()), "README's topology differs from the file");
}
