//! Property tests: no input makes the descriptor parser panic, and every refusal explains itself.

use edgeio_core::job::{parse_descriptor, DescriptorError};
use edgeio_core::model::KnownRuntimes;
use proptest::prelude::*;

/// A YAML value, written out by hand so that the text stays close to what people type.
#[derive(Debug, Clone)]
enum Doc {
    Scalar(String),
    List(Vec<Doc>),
    Map(Vec<(String, Doc)>),
}

impl Doc {
    /// Flow-style YAML; every key is quoted so duplicates are the only key-level error.
    fn write(&self, out: &mut String) {
        match self {
            Doc::Scalar(s) => out.push_str(s),
            Doc::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Doc::Map(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&format!("{key:?}: "));
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

/// Field names the validator knows (at every level), plus a few it does not.
const KEYS: &[&str] = &[
    "api_version",
    "job_name",
    "image",
    "image_runtime",
    "requirements",
    "cpu",
    "memory",
    "disk",
    "cluster_location",
    "worker_node",
    "replicas",
    "ports",
    "env",
    "args",
    "node_selector",
    "arch",
    "gpu",
    "restart",
    "policy",
    "limit",
    "backoff",
    "depends_on",
    "job",
    "condition",
    "affinity",
    "anti_affinity",
    "cluster",
    "container",
    "host",
    "protocol",
    "name",
    "latitude",
    "longitude",
    "PATH",
    "typo",
];

/// Scalars that hit the interesting branches: versions, runtimes, units, edge numbers.
const SCALARS: &[&str] = &[
    "v0.1",
    "v1",
    "v2",
    "docker",
    "unikernel",
    "podman",
    "web",
    "\"500m\"",
    "\"512Mi\"",
    "\"1.5Gi\"",
    "\"-5\"",
    "\"8080:80\"",
    "\"53/udp\"",
    "\"70000:1\"",
    "2s",
    "500ms",
    "always",
    "on-failure",
    "RUNNING",
    "x86_64",
    "0",
    "-1",
    "1",
    "2",
    "0.5",
    "1e300",
    "99999999999999999999999",
    "340282366920938463463374607431768211456",
    ".nan",
    ".inf",
    "-.inf",
    "true",
    "null",
    "~",
    "\"\"",
    "Garching",
];

fn scalar() -> impl Strategy<Value = Doc> {
    prop_oneof![
        3 => proptest::sample::select(SCALARS).prop_map(|s| Doc::Scalar(s.to_string())),
        1 => any::<i64>().prop_map(|i| Doc::Scalar(i.to_string())),
        1 => any::<f64>().prop_map(|f| Doc::Scalar(format!("{f:?}"))),
        1 => "[a-zA-Z0-9 ._:/-]{0,12}".prop_map(|s| Doc::Scalar(format!("{s:?}"))),
    ]
}

fn doc() -> impl Strategy<Value = Doc> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Doc::List),
            proptest::collection::vec(
                (
                    proptest::sample::select(KEYS).prop_map(str::to_string),
                    inner
                ),
                0..6
            )
            .prop_map(Doc::Map),
        ]
    })
}

/// A top-level mapping that usually has a version and a few real fields.
fn descriptor() -> impl Strategy<Value = Doc> {
    (
        proptest::sample::select(&["v0.1", "v1", "v1", "v3"][..]),
        proptest::collection::vec(
            (
                proptest::sample::select(KEYS).prop_map(str::to_string),
                doc(),
            ),
            0..10,
        ),
    )
        .prop_map(|(version, fields)| {
            let mut entries = vec![("api_version".to_string(), Doc::Scalar(version.to_string()))];
            entries.extend(fields);
            Doc::Map(entries)
        })
}

fn assert_explained(result: Result<edgeio_core::job::JobSpec, DescriptorError>) {
    if let Err(err) = result {
        let problems = err.problems();
        assert!(!problems.is_empty(), "{err:?}");
        assert!(problems.iter().all(|p| !p.trim().is_empty()), "{err:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        assert_explained(parse_descriptor(&bytes, &KnownRuntimes::default()));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[ -~\n\t]{0,300}") {
        assert_explained(parse_descriptor(text.as_bytes(), &KnownRuntimes::default()));
    }

    #[test]
    fn arbitrary_documents_never_panic_and_refusals_explain_themselves(doc in doc()) {
        assert_explained(parse_descriptor(doc.text().as_bytes(), &KnownRuntimes::default()));
    }

    #[test]
    fn arbitrary_descriptors_never_panic_and_refusals_explain_themselves(doc in descriptor()) {
        assert_explained(parse_descriptor(doc.text().as_bytes(), &KnownRuntimes::default()));
    }

    #[test]
    fn valid_descriptors_survive_small_damage(
        cpu in prop_oneof![Just("2".to_string()), "-?[0-9]{1,6}(\\.[0-9]{1,4})?m?".prop_map(|s| format!("{s:?}"))],
        memory in prop_oneof![Just("1000".to_string()), "-?[0-9]{1,8}(\\.[0-9]{1,3})?(Ki|Mi|Gi|Ti|K|M|G|T|B|XB)?".prop_map(|s| format!("{s:?}"))],
        replicas in any::<i64>(),
    ) {
        let text = format!(
            "api_version: v1\njob_name: web\nimage: nginx\nimage_runtime: docker\n\
             replicas: {replicas}\nrequirements:\n  cpu: {cpu}\n  memory: {memory}\n"
        );
        match parse_descriptor(text.as_bytes(), &KnownRuntimes::default()) {
            Ok(spec) => {
                prop_assert!(spec.resources.cpu_millis > 0 && spec.resources.cpu_millis <= 1_024_000);
                prop_assert!(spec.resources.memory_bytes > 0 && spec.resources.memory_bytes <= 16 << 40);
                prop_assert!((1..=1000).contains(&spec.replicas));
            }
            Err(err) => prop_assert!(!err.problems().is_empty()),
        }
    }
}
