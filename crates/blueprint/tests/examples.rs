//! Every file under `blueprints/` evaluates as its header says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// Runs one example: `# test = 'pass'` must compile; `# test = 'fail'` must fail with a message
/// containing each `# error = "…"` line.
fn check_example(path: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let header = |key: &str| -> Vec<String> {
        text.lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| {
                l.strip_prefix('#')?
                    .trim()
                    .strip_prefix(key)?
                    .trim()
                    .strip_prefix('=')
                    .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_owned())
            })
            .collect()
    };
    let expect = header("test");
    assert_eq!(
        expect.len(),
        1,
        "{path}: needs exactly one `# test = 'pass'|'fail'` header"
    );
    let result = k8shell_blueprint::compile_file(Path::new(path));
    match (expect[0].as_str(), result) {
        ("pass", Ok(compiled)) => {
            assert!(!compiled.spec.name.is_empty());
            assert_eq!(compiled.hash.len(), 64);
        }
        ("pass", Err(error)) => panic!("{path} should compile:\n{error}"),
        ("fail", Ok(_)) => panic!("{path} should fail to compile"),
        ("fail", Err(error)) => {
            let message = error.to_string();
            let wanted = header("error");
            assert!(
                !wanted.is_empty(),
                "{path}: a failing example names the `# error = \"…\"` it expects"
            );
            for want in wanted {
                assert!(
                    message.contains(&want),
                    "{path}: expected {want:?} in:\n{message}"
                );
            }
        }
        (other, _) => panic!("{path}: unknown test expectation {other:?}"),
    }
}

include!(concat!(env!("OUT_DIR"), "/blueprint_examples.rs"));
