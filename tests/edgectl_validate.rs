//! `edgectl validate`: good descriptors print normalized, broken ones exit 2 with one line per
//! problem naming the field or the reason. Runs the CLI in-process through `edgeio::cli::run`.

#![cfg(feature = "transport-ws")]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

const FIXTURES: &str = "tests/fixtures/descriptors";

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn edgectl(args: &[&str], stdin: &[u8]) -> Outcome {
    let mut input = stdin;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("edgectl").chain(args.iter().copied());
    let code = edgeio::cli::run(argv, &mut input, &mut out, &mut err);
    Outcome {
        code,
        stdout: String::from_utf8(out).expect("stdout is UTF-8"),
        stderr: String::from_utf8(err).expect("stderr is UTF-8"),
    }
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// Validates a file that must be refused; checks the shape of the report and returns stderr.
fn refused(path: &str, stdin: &[u8], expect_in_stderr: &[&str]) -> String {
    let outcome = edgectl(&["validate", path], stdin);
    assert_eq!(outcome.code, 2, "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdout, "", "nothing on stdout for a refusal");
    assert!(!outcome.stderr.is_empty());
    let prefix = if path == "-" { "<stdin>: " } else { path };
    for line in outcome.stderr.lines() {
        assert!(line.starts_with(prefix), "{line:?} lacks the file name");
    }
    for needle in expect_in_stderr {
        assert!(
            outcome.stderr.contains(needle),
            "{needle:?} not in:\n{}",
            outcome.stderr
        );
    }
    outcome.stderr
}

/// A fresh path in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with(contents: &[u8]) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "edgectl-validate-{}-{}.yaml",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_thesis_example_validates_and_prints_the_normalized_spec() {
    let outcome = edgectl(&["validate", "examples/jobs/thesis.yaml"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.stderr, "");
    assert!(outcome.stdout.contains("cpu_millis: 2000"));
    assert!(outcome.stdout.contains("memory_bytes: 1048576000"));
    insta::assert_snapshot!(outcome.stdout);
}

#[test]
fn the_thesis_example_prints_as_json_with_dash_o_json() {
    let outcome = edgectl(
        &["-o", "json", "validate", "examples/jobs/thesis.yaml"],
        b"",
    );
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let value: serde_json::Value = serde_json::from_str(&outcome.stdout).expect("valid JSON");
    assert_eq!(value["resources"]["cpu_millis"], 2000);
    assert_eq!(value["cluster_location"]["name"], "Garching");
    insta::assert_snapshot!(outcome.stdout);
}

#[test]
fn the_web_example_uses_most_v1_fields_and_validates() {
    let outcome = edgectl(
        &["validate", "examples/jobs/web.yaml", "--output", "yaml"],
        b"",
    );
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    insta::assert_snapshot!(outcome.stdout);
}

#[test]
fn a_descriptor_on_stdin_validates() {
    let thesis = std::fs::read("examples/jobs/thesis.yaml").expect("thesis example");
    let outcome = edgectl(&["validate", "-"], &thesis);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(
        outcome.stdout,
        edgectl(&["validate", "examples/jobs/thesis.yaml"], b"").stdout
    );
}

#[test]
fn extra_runtimes_are_registered_with_dash_dash_runtime() {
    let path = fixture("unknown_runtime.yaml");
    let outcome = edgectl(
        &[
            "validate",
            &path,
            "--runtime",
            "wasm",
            "--runtime",
            "Podman",
        ],
        b"",
    );
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome.stdout.contains("runtime: podman"),
        "{}",
        outcome.stdout
    );
}

#[test]
fn wrong_types_are_refused_naming_each_field() {
    let stderr = refused(
        &fixture("wrong_types.yaml"),
        b"",
        &[
            "job_name: ",
            "replicas: ",
            "requirements.cpu: true",
            "requirements.memory: ",
            "ports: 8080",
            "env: ",
            "args: ",
            "depends_on: ",
        ],
    );
    assert_eq!(stderr.lines().count(), 8, "{stderr}");
    insta::assert_snapshot!(stderr);
}

#[test]
fn negative_numbers_are_refused() {
    let stderr = refused(
        &fixture("negative_numbers.yaml"),
        b"",
        &[
            "replicas: -1",
            "gpu: -1",
            "requirements.cpu: -2",
            "requirements.memory: \"-5\": must be a positive number of MB",
            "cluster_location.latitude: -91",
        ],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn absurd_numbers_are_refused() {
    let stderr = refused(
        &fixture("absurd_numbers.yaml"),
        b"",
        &[
            "replicas: 100000",
            "gpu: 1000",
            "requirements.cpu: 1000000000.0: must be at most 1024 cores",
            "requirements.memory: 99999999999999999999999: must be at most 16 TiB",
            "requirements.disk: .inf",
            "ports[0]: 70000",
            "restart.limit: 1000000",
            "restart.backoff: \"10h\": must be at most 1h",
        ],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn missing_fields_are_refused_naming_each_one() {
    let stderr = refused(
        &fixture("missing_fields.yaml"),
        b"",
        &[
            "job_name: (missing): is required",
            "image_runtime: (missing): is required",
            "requirements.memory: (missing): is required",
        ],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn an_unknown_version_is_refused_naming_the_supported_ones() {
    let stderr = refused(
        &fixture("unknown_version.yaml"),
        b"",
        &["api_version: \"v2\": must be one of v0.1, v1"],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn an_unknown_runtime_is_refused_naming_the_known_ones() {
    let stderr = refused(
        &fixture("unknown_runtime.yaml"),
        b"",
        &["image_runtime: \"podman\": must be one of docker, mirage, native, unikernel"],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn bad_units_are_refused() {
    let stderr = refused(
        &fixture("bad_units.yaml"),
        b"",
        &[
            "requirements.cpu: \"2 cores\": unknown unit",
            "requirements.memory: \"12MB\": unknown unit",
            "requirements.disk: \"1.5B\": must be a whole number of bytes",
            "restart.backoff: \"5 fortnights\": unknown unit",
        ],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn human_units_in_a_v0_1_descriptor_are_refused() {
    let stderr = refused(
        &fixture("human_units_in_v0_1.yaml"),
        b"",
        &["human units need api_version v1"],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn misspelt_fields_are_refused_with_a_guess() {
    let stderr = refused(
        &fixture("typos.yaml"),
        b"",
        &[
            "imgae: ",
            "did you mean image?",
            "requirements.memroy: 1000",
            "replicas: 2: only allowed with api_version v1",
        ],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn bad_references_are_refused() {
    let stderr = refused(
        &fixture("bad_references.yaml"),
        b"",
        &[
            "ports[2]",
            "depends_on[1]: \"web\": a job cannot depend on itself",
            "anti_affinity[0]",
            "arch: \"sparc\"",
            "cluster: ",
            "env: \"1ST\"",
        ],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_duplicate_key_is_a_syntax_error() {
    let stderr = refused(
        &fixture("duplicate_key.yaml"),
        b"",
        &["duplicate key \"job_name\""],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn bad_indentation_is_a_syntax_error_with_its_line() {
    let stderr = refused(
        &fixture("bad_indentation.yaml"),
        b"",
        &["yaml syntax error at line 3"],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_list_at_the_top_level_is_refused() {
    let stderr = refused(
        &fixture("not_a_mapping.yaml"),
        b"",
        &["(top level): ", "must be a mapping"],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_file_of_comments_is_empty() {
    let stderr = refused(&fixture("empty.yaml"), b"", &["descriptor is empty"]);
    insta::assert_snapshot!(stderr);
}

#[test]
fn an_empty_stdin_is_empty() {
    let stderr = refused("-", b"", &["descriptor is empty"]);
    insta::assert_snapshot!(stderr);
}

#[test]
fn non_utf8_bytes_are_refused_with_their_offset() {
    let mut bytes = b"api_version: v0.1\njob_name: caf".to_vec();
    bytes.extend_from_slice(&[0xe9, b'\n', 0xff, 0xfe]);
    let stderr = refused("-", &bytes, &["not UTF-8", "offset 31"]);
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_ten_megabyte_file_is_refused_without_being_read_whole() {
    let file = TempFile::with(&vec![b'#'; 10_000_000]);
    let stderr = refused(
        file.path(),
        b"",
        &["descriptor is 10000000 bytes, more than the limit of 1048576 bytes"],
    );
    insta::assert_snapshot!(stderr.replace(file.path(), "<temp>/big.yaml"));
}

#[test]
fn a_ten_megabyte_stdin_is_refused() {
    let stderr = refused(
        "-",
        &vec![b' '; 10_000_000],
        &["larger than the limit of 1048576 bytes"],
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn deeply_nested_yaml_is_refused_without_overflowing_the_stack() {
    let stderr = refused("-", "[".repeat(10_000).as_bytes(), &["yaml syntax error"]);
    insta::assert_snapshot!(stderr);
}

#[test]
fn deeply_nested_but_closed_yaml_hits_the_nesting_limit() {
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let stderr = refused("-", nested.as_bytes(), &["the limit is 16"]);
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_missing_file_is_one_line_and_exit_2() {
    let path = fixture("does-not-exist.yaml");
    let stderr = refused(&path, b"", &["cannot read: no such file"]);
    assert_eq!(stderr.lines().count(), 1);
    insta::assert_snapshot!(stderr);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["validate"][..],
        &["frobnicate"],
        &["validate", "x.yaml", "-o", "xml"],
        &["validate", "x.yaml", "--runtime", "a/b"],
        &[],
    ] {
        let outcome = edgectl(args, b"");
        assert_eq!(outcome.code, 2, "{args:?}: {}", outcome.stderr);
        assert!(!outcome.stderr.is_empty(), "{args:?}");
        assert_eq!(outcome.stdout, "", "{args:?}");
    }
}

#[test]
fn help_describes_each_command() {
    let outcome = edgectl(&["--help"], b"");
    assert_eq!(outcome.code, 0);
    assert!(outcome.stdout.contains("validate"), "{}", outcome.stdout);
    insta::assert_snapshot!("help", outcome.stdout);
    let outcome = edgectl(&["validate", "--help"], b"");
    assert_eq!(outcome.code, 0);
    assert!(outcome.stdout.contains("--runtime"), "{}", outcome.stdout);
    insta::assert_snapshot!("validate_help", outcome.stdout);
}
