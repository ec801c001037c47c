use super::*;
use crate::job::{
    ApiVersion, Dependency, DependencyCondition, PortMapping, Protocol, RestartKind, RestartPolicy,
};
use crate::model::{Arch, Location, RuntimeKind};

const THESIS: &str = "\
api_version: v0.1
job_name: image_detection
image: quay.io/codait/max-object-detector
image_runtime: docker
requirements:
    cpu: 2 # cores
    memory: 1000 # in MB
cluster_location: Garching
worker_node: e580
";

const MIB: u64 = 1 << 20;

fn parse(text: &str) -> Result<JobSpec, DescriptorError> {
    parse_descriptor(text.as_bytes(), &KnownRuntimes::default())
}

/// The problem lines of a descriptor that must be refused.
fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(spec) => panic!("accepted: {spec:?}"),
        Err(err) => err.problems(),
    }
}

/// A minimal valid v1 descriptor with `extra` lines appended at the top level.
fn v1(extra: &str) -> String {
    format!(
        "api_version: v1\njob_name: web\nimage: nginx:1.27\nimage_runtime: docker\n\
         requirements:\n  cpu: 1\n  memory: 256\n{extra}\n"
    )
}

/// A v1 descriptor whose requirements are `requirements`.
fn v1_requirements(requirements: &str) -> String {
    format!(
        "api_version: v1\njob_name: web\nimage: nginx\nimage_runtime: docker\n\
         requirements:\n{requirements}\n"
    )
}

/// The only problem of a descriptor that must be refused for exactly one reason.
fn only_problem(text: &str) -> String {
    let mut all = problems(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

#[test]
fn the_thesis_example_normalizes_exactly() {
    let spec = parse(THESIS).unwrap();
    let mut expected = JobSpec::minimal(
        "image_detection",
        "quay.io/codait/max-object-detector",
        "docker",
        Resources {
            cpu_millis: 2000,
            memory_bytes: 1000 * MIB,
            disk_bytes: 0,
            gpus: 0,
        },
    );
    expected.api_version = ApiVersion::V0_1;
    expected.cluster_location = Some(Location::named("Garching"));
    expected.worker_node = Some("e580".to_string());
    assert_eq!(spec, expected);
}

use crate::model::Resources;

#[test]
fn the_thesis_example_also_reads_as_json() {
    let json = r#"{"api_version": "v0.1", "job_name": "image_detection",
        "image": "quay.io/codait/max-object-detector", "image_runtime": "docker",
        "requirements": {"cpu": 2, "memory": 1000},
        "cluster_location": "Garching", "worker_node": "e580"}"#;
    assert_eq!(parse(json).unwrap(), parse(THESIS).unwrap());
}

#[test]
fn a_full_v1_descriptor_normalizes() {
    let text = r#"
api_version: v1
job_name: web-frontend
image: ghcr.io/example/web:2.1
image_runtime: Unikernel
replicas: 3
requirements:
  cpu: "500m"
  memory: 512Mi
  disk: 2Gi
gpu: 1
arch: x86_64
ports:
  - 80
  - "8080:8000"
  - "53/udp"
  - {container: 9000, host: 19000, protocol: UDP}
env:
  LOG_LEVEL: debug
  WORKERS: 4
  DEBUG: false
  RATIO: 0.5
args: ["--port", 8000, true]
node_selector:
  zone: garching
  gpu: yes
restart:
  policy: always
  limit: 5
  backoff: 2s
depends_on:
  - db
  - {job: migrate, condition: succeeded}
affinity: [cache]
anti_affinity: [web-frontend, batch]
cluster: cluster-garching
cluster_location:
  name: Garching
  latitude: 48.2489
  longitude: 11.6532
worker_node: e580
"#;
    let spec = parse(text).unwrap();
    assert_eq!(spec.api_version, ApiVersion::V1);
    assert_eq!(spec.name, "web-frontend");
    assert_eq!(spec.runtime, RuntimeKind::new("mirage"));
    assert_eq!(spec.replicas, 3);
    assert_eq!(
        spec.resources,
        Resources {
            cpu_millis: 500,
            memory_bytes: 512 * MIB,
            disk_bytes: 2 << 30,
            gpus: 1,
        }
    );
    assert_eq!(spec.arch, Some(Arch::Amd64));
    assert_eq!(
        spec.ports,
        [
            PortMapping {
                container: 80,
                host: None,
                protocol: Protocol::Tcp
            },
            PortMapping {
                container: 8000,
                host: Some(8080),
                protocol: Protocol::Tcp
            },
            PortMapping {
                container: 53,
                host: None,
                protocol: Protocol::Udp
            },
            PortMapping {
                container: 9000,
                host: Some(19000),
                protocol: Protocol::Udp
            },
        ]
    );
    let env: Vec<(&str, &str)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("DEBUG", "false"),
            ("LOG_LEVEL", "debug"),
            ("RATIO", "0.5"),
            ("WORKERS", "4")
        ]
    );
    assert_eq!(spec.args, ["--port", "8000", "true"]);
    assert_eq!(
        spec.node_selector.get("zone").map(String::as_str),
        Some("garching")
    );
    // YAML 1.2: `yes` is a string, not a boolean.
    assert_eq!(
        spec.node_selector.get("gpu").map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        spec.restart,
        RestartPolicy {
            policy: RestartKind::Always,
            limit: 5,
            backoff_ms: 2000
        }
    );
    assert_eq!(
        spec.depends_on,
        [
            Dependency {
                job: "db".into(),
                condition: DependencyCondition::Running
            },
            Dependency {
                job: "migrate".into(),
                condition: DependencyCondition::Succeeded
            },
        ]
    );
    assert_eq!(spec.affinity, ["cache"]);
    assert_eq!(spec.anti_affinity, ["web-frontend", "batch"]);
    assert_eq!(spec.cluster.as_deref(), Some("cluster-garching"));
    assert_eq!(
        spec.cluster_location,
        Some(Location {
            name: "Garching".into(),
            latitude: Some(48.2489),
            longitude: Some(11.6532),
        })
    );
    assert_eq!(spec.worker_node.as_deref(), Some("e580"));
}

#[test]
fn a_minimal_v1_descriptor_takes_the_defaults() {
    let spec = parse(&v1("")).unwrap();
    assert_eq!(spec.replicas, 1);
    assert_eq!(spec.restart, RestartPolicy::default());
    assert!(spec.ports.is_empty() && spec.env.is_empty() && spec.depends_on.is_empty());
    assert_eq!(spec.cluster_location, None);
}

#[test]
fn optional_fields_without_a_value_count_as_absent() {
    let spec = parse(&v1("worker_node:\nports:\nreplicas: ~")).unwrap();
    assert_eq!(spec.worker_node, None);
    assert_eq!(spec.replicas, 1);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "\
api_version: v1
job_name: -bad
image: nginx
image_runtime: podman
requirements:
  cpu: 0
  memory: \"-5\"
";
    assert_eq!(
        problems(text),
        [
            "job_name: \"-bad\": must start with a letter or digit",
            "image_runtime: \"podman\": must be one of docker, mirage, native, unikernel",
            "requirements.cpu: 0: must be a positive number of cores",
            "requirements.memory: \"-5\": must be a positive number of MB",
        ]
    );
}

#[test]
fn missing_fields_are_named() {
    assert_eq!(
        problems("api_version: v0.1\n"),
        [
            "job_name: (missing): is required",
            "image: (missing): is required",
            "image_runtime: (missing): is required",
            "requirements: (missing): is required",
        ]
    );
    assert_eq!(
        problems("job_name: x\nimage: y\nimage_runtime: docker\nrequirements: {cpu: 1}\n"),
        [
            "api_version: (missing): is required",
            "requirements.memory: (missing): is required",
        ]
    );
}

#[test]
fn a_required_field_without_a_value_is_missing() {
    let text = THESIS.replace("job_name: image_detection", "job_name:");
    assert_eq!(only_problem(&text), "job_name: null: is required");
}

#[test]
fn unknown_versions_name_the_supported_ones() {
    let text = THESIS.replace("v0.1", "v2");
    assert_eq!(
        only_problem(&text),
        "api_version: \"v2\": must be one of v0.1, v1"
    );
    let text = THESIS.replace("v0.1", "1");
    assert_eq!(
        only_problem(&text),
        "api_version: 1: must be one of v0.1, v1"
    );
}

#[test]
fn an_unknown_version_still_reports_the_other_problems() {
    let text = "api_version: v9\njob_name: ok\nimage: nginx\nimage_runtime: docker\n\
                requirements: {cpu: -1, memory: 1}\n";
    assert_eq!(problems(text).len(), 2, "{:?}", problems(text));
}

#[test]
fn unknown_fields_name_the_known_ones_and_guess_the_typo() {
    let text = THESIS.replace("image_runtime", "image_runtim");
    let all = problems(&text);
    assert_eq!(
        all[0],
        "image_runtim: \"docker\": unknown field (did you mean image_runtime?); known fields: \
         api_version, job_name, image, image_runtime, requirements, cluster_location, worker_node"
    );
    assert_eq!(all[1], "image_runtime: (missing): is required");
    let line = only_problem(&v1("requirments2: x").replace("requirments2", "colour"));
    assert!(
        line.starts_with("colour: \"x\": unknown field; known fields: api_version"),
        "{line}"
    );
    assert!(line.contains("anti_affinity"), "{line}");
}

#[test]
fn unknown_fields_inside_mappings_are_errors_too() {
    let line = only_problem(&v1_requirements("  cpu: 1\n  memory: 1\n  memroy: 2"));
    assert_eq!(
        line,
        "requirements.memroy: 2: unknown field (did you mean memory?); known fields: cpu, memory, disk"
    );
}

#[test]
fn v1_fields_in_a_v0_1_descriptor_need_v1() {
    let text = format!("{THESIS}replicas: 3\n");
    assert_eq!(
        only_problem(&text),
        "replicas: 3: only allowed with api_version v1"
    );
    let text = THESIS.replace("memory: 1000 # in MB", "memory: 1000\n    disk: 10");
    assert_eq!(
        only_problem(&text),
        "requirements.disk: 10: only allowed with api_version v1"
    );
}

#[test]
fn v0_1_reads_only_plain_numbers_for_cpu_and_memory() {
    let text = THESIS.replace("cpu: 2 # cores", "cpu: \"500m\"");
    assert_eq!(
        only_problem(&text),
        "requirements.cpu: \"500m\": must be a plain number of cores; human units need api_version v1"
    );
    let text = THESIS.replace("memory: 1000 # in MB", "memory: 1Gi");
    assert_eq!(
        only_problem(&text),
        "requirements.memory: \"1Gi\": must be a plain number of MB; human units need api_version v1"
    );
    let text = THESIS.replace("cpu: 2 # cores", "cpu: 0.5");
    assert_eq!(parse(&text).unwrap().resources.cpu_millis, 500);
}

#[test]
fn v0_1_cluster_location_is_a_name_only() {
    let text = THESIS.replace("cluster_location: Garching", "cluster_location: {name: x}");
    assert_eq!(
        only_problem(&text),
        "cluster_location: {name: \"x\"}: must be a string; a location with coordinates needs api_version v1"
    );
}

#[test]
fn cpu_reads_cores_and_millicores_in_v1() {
    for (written, millis) in [
        ("2", 2000),
        ("0.5", 500),
        ("\"0.5\"", 500),
        ("\"500m\"", 500),
        ("1024", 1_024_000),
        ("0.001", 1),
    ] {
        let spec = parse(&v1_requirements(&format!("  cpu: {written}\n  memory: 1"))).unwrap();
        assert_eq!(spec.resources.cpu_millis, millis, "{written}");
    }
}

#[test]
fn cpu_rules() {
    for (written, rule) in [
        ("0", "0: must be a positive number of cores"),
        ("-1", "-1: must be a positive number of cores"),
        ("1025", "1025: must be at most 1024 cores"),
        ("1e300", "1e300: must be at most 1024 cores"),
        (
            "99999999999999999999999999999999999999999",
            "must be at most 1024 cores",
        ),
        (".nan", ".nan: must be a finite number of cores"),
        (".inf", ".inf: must be a finite number of cores"),
        ("0.0001", "0.0001: must be a whole number of millicores"),
        ("\"0.5m\"", "\"0.5m\": must be a whole number of millicores"),
        (
            "true",
            "true: must be a number of cores or a string such as \"500m\", not a boolean",
        ),
        (
            "[1]",
            "[1]: must be a number of cores or a string such as \"500m\", not a list",
        ),
        (
            "\"two\"",
            "\"two\": must be a number of cores such as 0.5 or millicores such as \"500m\"",
        ),
        (
            "\"2 cores\"",
            "\"2 cores\": unknown unit \"cores\"; use m for millicores, or no unit for cores",
        ),
    ] {
        let line = only_problem(&v1_requirements(&format!("  cpu: {written}\n  memory: 1")));
        assert!(line.starts_with("requirements.cpu: "), "{line}");
        assert!(line.ends_with(rule), "{written}: {line}");
    }
}

#[test]
fn memory_reads_mb_and_human_sizes_in_v1() {
    for (written, bytes) in [
        ("1000", 1000 * MIB),
        ("\"1000\"", 1000 * MIB),
        ("0.5", MIB / 2),
        ("512Mi", 512 * MIB),
        ("1.5Gi", 1_610_612_736),
        ("1G", 1_000_000_000),
        ("1k", 1000),
        ("64B", 64),
        ("16Ti", 16 << 40),
    ] {
        let spec = parse(&v1_requirements(&format!("  cpu: 1\n  memory: {written}"))).unwrap();
        assert_eq!(spec.resources.memory_bytes, bytes, "{written}");
    }
}

#[test]
fn memory_rules() {
    for (written, rule) in [
        ("\"-5\"", "\"-5\": must be a positive number of MB"),
        ("-5", "-5: must be a positive number of MB"),
        ("0", "0: must be a positive number of MB"),
        ("-1Gi", "\"-1Gi\": must be a positive size"),
        ("17Ti", "\"17Ti\": must be at most 16 TiB"),
        ("16777217", "16777217: must be at most 16 TiB"),
        ("18446744073709551615", "must be at most 16 TiB"),
        ("99999999999999999999999Ti", "must be at most 16 TiB"),
        ("1.5B", "\"1.5B\": must be a whole number of bytes"),
        (
            "12MB",
            "\"12MB\": unknown unit \"MB\"; use B, K, M, G, T, Ki, Mi, Gi or Ti",
        ),
        (
            "lots",
            "\"lots\": must be a number of MB or a size such as \"512Mi\"",
        ),
        (
            "false",
            "false: must be a number of MB or a size such as \"512Mi\", not a boolean",
        ),
        (
            "{a: 1}",
            "must be a number of MB or a size such as \"512Mi\", not a mapping",
        ),
        (".nan", ".nan: must be a finite number of MB"),
        ("-.inf", "-.inf: must be a finite number of MB"),
    ] {
        let line = only_problem(&v1_requirements(&format!("  cpu: 1\n  memory: {written}")));
        assert!(line.starts_with("requirements.memory: "), "{line}");
        assert!(line.ends_with(rule), "{written}: {line}");
    }
}

#[test]
fn disk_follows_the_memory_rules() {
    let spec = parse(&v1_requirements("  cpu: 1\n  memory: 1\n  disk: 10Gi")).unwrap();
    assert_eq!(spec.resources.disk_bytes, 10 << 30);
    assert_eq!(
        only_problem(&v1_requirements("  cpu: 1\n  memory: 1\n  disk: 0")),
        "requirements.disk: 0: must be a positive number of MB"
    );
}

#[test]
fn requirements_must_be_a_mapping() {
    assert_eq!(
        only_problem(&v1_requirements("  - 1")),
        "requirements: [1]: must be a mapping with cpu and memory, not a list"
    );
}

#[test]
fn job_name_rules() {
    let long = "a".repeat(64);
    for (written, rule) in [
        ("\"\"", "must not be empty"),
        (long.as_str(), "must be at most 63 characters"),
        ("_x", "must start with a letter or digit"),
        ("a/b", "may only hold letters, digits, '_', '.' and '-'"),
        ("\"a b\"", "may only hold letters, digits, '_', '.' and '-'"),
        ("123", "must be a string, not a number"),
        ("[a]", "must be a string, not a list"),
    ] {
        let text = THESIS.replace("job_name: image_detection", &format!("job_name: {written}"));
        let line = only_problem(&text);
        assert!(line.starts_with("job_name: "), "{line}");
        assert!(line.ends_with(rule), "{written}: {line}");
    }
    let name = "a".repeat(63);
    let text = THESIS.replace("image_detection", &name);
    assert_eq!(parse(&text).unwrap().name, name);
}

#[test]
fn image_rules() {
    let long = "i".repeat(1025);
    for (written, rule) in [
        ("\"\"", "must not be empty"),
        (long.as_str(), "must be at most 1024 characters"),
        (
            "\"nginx latest\"",
            "must not contain whitespace or control characters",
        ),
        (
            "\"nginx\\tx\"",
            "must not contain whitespace or control characters",
        ),
        ("7", "must be a string, not a number"),
    ] {
        let text = THESIS.replace(
            "image: quay.io/codait/max-object-detector",
            &format!("image: {written}"),
        );
        let line = only_problem(&text);
        assert!(line.starts_with("image: "), "{line}");
        assert!(line.ends_with(rule), "{written}: {line}");
    }
}

#[test]
fn runtimes_resolve_through_the_known_set() {
    let text = THESIS.replace("image_runtime: docker", "image_runtime: unikernel");
    assert_eq!(parse(&text).unwrap().runtime.as_str(), "mirage");
    let text = THESIS.replace("image_runtime: docker", "image_runtime: DOCKER");
    assert_eq!(parse(&text).unwrap().runtime.as_str(), "docker");
    let text = THESIS.replace("image_runtime: docker", "image_runtime: wasm");
    assert!(parse(&text).is_err());
    let mut known = KnownRuntimes::default();
    known.register("wasm");
    assert_eq!(
        parse_descriptor(text.as_bytes(), &known)
            .unwrap()
            .runtime
            .as_str(),
        "wasm"
    );
    let text = THESIS.replace("image_runtime: docker", "image_runtime: 5");
    assert_eq!(
        only_problem(&text),
        "image_runtime: 5: must be one of docker, mirage, native, unikernel, not a number"
    );
}

#[test]
fn replicas_and_gpu_are_bounded_whole_numbers() {
    for (field, written, rule) in [
        ("replicas", "0", "0: must be a whole number from 1 to 1000"),
        (
            "replicas",
            "1001",
            "1001: must be a whole number from 1 to 1000",
        ),
        (
            "replicas",
            "2.5",
            "2.5: must be a whole number from 1 to 1000",
        ),
        (
            "replicas",
            "-3",
            "-3: must be a whole number from 1 to 1000",
        ),
        (
            "replicas",
            "\"3\"",
            "\"3\": must be a whole number from 1 to 1000, not a string",
        ),
        (
            "replicas",
            "true",
            "true: must be a whole number from 1 to 1000, not a boolean",
        ),
        ("gpu", "65", "65: must be a whole number from 0 to 64"),
        ("gpu", "-1", "-1: must be a whole number from 0 to 64"),
    ] {
        let line = only_problem(&v1(&format!("{field}: {written}")));
        assert_eq!(line, format!("{field}: {rule}"));
    }
    assert_eq!(parse(&v1("replicas: 1000")).unwrap().replicas, 1000);
    assert_eq!(parse(&v1("gpu: 0")).unwrap().resources.gpus, 0);
    assert_eq!(parse(&v1("gpu: 64")).unwrap().resources.gpus, 64);
}

#[test]
fn port_rules() {
    for (written, line) in [
        ("[0]", "ports[0]: 0: must be a whole number from 1 to 65535"),
        ("[65536]", "ports[0]: 65536: must be a whole number from 1 to 65535"),
        ("[\"70000:80\"]", "ports[0]: \"70000:80\": ports must be from 1 to 65535"),
        (
            "[\"http\"]",
            "ports[0]: \"http\": must be a port such as 8080, \"8080:80\" (host:container) or \"53/udp\"",
        ),
        ("[\"53/sctp\"]", "ports[0]: \"53/sctp\": protocol must be tcp or udp"),
        (
            "[{host: 80}]",
            "ports[0].container: (missing): is required",
        ),
        (
            "[{container: 80, protocol: icmp}]",
            "ports[0].protocol: \"icmp\": must be tcp or udp",
        ),
        (
            "[{container: 80, hots: 1}]",
            "ports[0].hots: 1: unknown field (did you mean host?); known fields: container, host, protocol",
        ),
        ("[80, \"80\"]", "ports[1]: \"80\": container port 80/tcp is already listed at ports[0]"),
        (
            "[\"8080:80\", \"8080:81\"]",
            "ports[1]: \"8080:81\": host port 8080/tcp is already used by ports[0]",
        ),
        ("8080", "ports: 8080: must be a list of ports, not a number"),
        (
            "[true]",
            "ports[0]: true: must be a port number, a string such as \"8080:80\" or a mapping with container, host and protocol, not a boolean",
        ),
    ] {
        assert_eq!(only_problem(&v1(&format!("ports: {written}"))), line, "{written}");
    }
    let spec = parse(&v1("ports: [53, \"53/udp\"]")).unwrap();
    assert_eq!(spec.ports.len(), 2);
}

#[test]
fn env_rules() {
    for (written, line) in [
        (
            "{1BAD: x}",
            "env: \"1BAD\": variable names must match [A-Za-z_][A-Za-z0-9_]*",
        ),
        (
            "{\"A-B\": x}",
            "env: \"A-B\": variable names must match [A-Za-z_][A-Za-z0-9_]*",
        ),
        (
            "{7: x}",
            "env: 7: variable names must be strings, not a number",
        ),
        (
            "{A: }",
            "env.A: null: must be a string, number or boolean (write \"\" for an empty value)",
        ),
        (
            "{A: [1]}",
            "env.A: [1]: must be a string, number or boolean, not a list",
        ),
        (
            "{A: \"a\\0b\"}",
            "env.A: \"a\\u0000b\": must not contain NUL characters",
        ),
        (
            "[A]",
            "env: [\"A\"]: must be a mapping of names to values, not a list",
        ),
    ] {
        assert_eq!(
            only_problem(&v1(&format!("env: {written}"))),
            line,
            "{written}"
        );
    }
}

#[test]
fn args_and_node_selector_take_scalars() {
    assert_eq!(
        only_problem(&v1("args: \"--verbose\"")),
        "args: \"--verbose\": must be a list of strings, not a string"
    );
    assert_eq!(
        only_problem(&v1("args: [a, {b: c}]")),
        "args[1]: {b: \"c\"}: must be a string, number or boolean, not a mapping"
    );
    assert_eq!(
        only_problem(&v1("node_selector: {\"a b\": x}")),
        "node_selector: \"a b\": label names must be 1 to 253 characters without whitespace"
    );
    assert_eq!(
        only_problem(&v1("node_selector: {zone: [x]}")),
        "node_selector.zone: [\"x\"]: must be a string, number or boolean, not a list"
    );
}

#[test]
fn arch_accepts_known_names_and_aliases_only() {
    for (written, arch) in [
        ("amd64", Arch::Amd64),
        ("x86_64", Arch::Amd64),
        ("aarch64", Arch::Arm64),
        ("ARM64", Arch::Arm64),
        ("armv7", Arch::Arm),
        ("riscv64", Arch::Riscv64),
    ] {
        assert_eq!(
            parse(&v1(&format!("arch: {written}"))).unwrap().arch,
            Some(arch)
        );
    }
    assert_eq!(
        only_problem(&v1("arch: s390x")),
        "arch: \"s390x\": must be one of amd64 (x86_64, x86-64), arm64 (aarch64), arm (armv7, armv7l, armhf), riscv64"
    );
}

#[test]
fn restart_rules() {
    let spec = parse(&v1("restart: never")).unwrap();
    assert_eq!(spec.restart.policy, RestartKind::Never);
    assert_eq!(spec.restart.limit, 3);
    let spec = parse(&v1("restart: {backoff: 500ms}")).unwrap();
    assert_eq!(spec.restart.backoff_ms, 500);
    assert_eq!(spec.restart.policy, RestartKind::OnFailure);
    let spec = parse(&v1("restart: {backoff: 250, limit: 0}")).unwrap();
    assert_eq!((spec.restart.backoff_ms, spec.restart.limit), (250, 0));
    for (written, line) in [
        ("sometimes", "restart: \"sometimes\": must be never, on-failure or always"),
        ("{limit: 101}", "restart.limit: 101: must be a whole number from 0 to 100"),
        ("{backoff: -1s}", "restart.backoff: \"-1s\": must not be negative"),
        ("{backoff: 2h}", "restart.backoff: \"2h\": must be at most 1h"),
        ("{backoff: 5 fortnights}", "restart.backoff: \"5 fortnights\": unknown unit \"fortnights\"; use ms, s, m or h"),
        ("{backoff: soon}", "restart.backoff: \"soon\": must be a duration such as \"500ms\" or \"2s\", or a number of milliseconds"),
        ("{policy: maybe}", "restart.policy: \"maybe\": must be never, on-failure or always"),
        ("5", "restart: 5: must be never, on-failure, always or a mapping with policy, limit and backoff, not a number"),
    ] {
        assert_eq!(only_problem(&v1(&format!("restart: {written}"))), line, "{written}");
    }
}

#[test]
fn dependency_rules() {
    assert_eq!(
        only_problem(&v1("depends_on: [web]")),
        "depends_on[0]: \"web\": a job cannot depend on itself"
    );
    assert_eq!(
        only_problem(&v1("depends_on: [{job: web, condition: failed}]")),
        "depends_on[0]: {job: \"web\", condition: \"failed\"}: a job cannot depend on itself"
    );
    assert_eq!(
        only_problem(&v1("depends_on: [db, {job: db}]")),
        "depends_on[1]: {job: \"db\"}: job \"db\" is listed twice"
    );
    assert_eq!(
        only_problem(&v1("depends_on: [{job: db, condition: done}]")),
        "depends_on[0].condition: \"done\": must be RUNNING, SUCCEEDED or FAILED"
    );
    assert_eq!(
        only_problem(&v1("depends_on: [{condition: running}]")),
        "depends_on[0].job: (missing): is required"
    );
    assert_eq!(
        only_problem(&v1("depends_on: db")),
        "depends_on: \"db\": must be a list of job names, not a string"
    );
    let spec = parse(&v1("depends_on: [{job: db, condition: Failed}]")).unwrap();
    assert_eq!(spec.depends_on[0].condition, DependencyCondition::Failed);
}

#[test]
fn affinity_and_anti_affinity_must_not_overlap() {
    assert_eq!(
        only_problem(&v1("affinity: [cache, db]\nanti_affinity: [db]")),
        "anti_affinity[0]: \"db\": also listed in affinity[1]; a job cannot both attract and repel another"
    );
    assert_eq!(
        only_problem(&v1("affinity: [cache, cache]")),
        "affinity[1]: \"cache\": job \"cache\" is listed twice"
    );
    assert_eq!(
        only_problem(&v1("anti_affinity: [\"bad name\"]")),
        "anti_affinity[0]: \"bad name\": may only hold letters, digits, '_', '.' and '-'"
    );
}

#[test]
fn cluster_and_worker_node_obey_the_id_rule() {
    assert_eq!(
        only_problem(&v1("cluster: a/b")),
        "cluster: \"a/b\": may only hold letters, digits, '.', '_' and '-'"
    );
    assert_eq!(
        only_problem(&v1("worker_node: \"-x\"")),
        "worker_node: \"-x\": must not start with '.' or '-'"
    );
    assert_eq!(
        only_problem(&v1("worker_node: 580")),
        "worker_node: 580: must be a string, not a number"
    );
}

#[test]
fn cluster_location_rules() {
    for (written, line) in [
        (
            "{name: x, latitude: 91, longitude: 0}",
            "cluster_location.latitude: 91: must be a number from -90 to 90",
        ),
        (
            "{name: x, latitude: 0, longitude: -180.5}",
            "cluster_location.longitude: -180.5: must be a number from -180 to 180",
        ),
        (
            "{name: x, latitude: .nan, longitude: 0}",
            "cluster_location.latitude: .nan: must be a number from -90 to 90",
        ),
        (
            "{name: x, latitude: 1}",
            "cluster_location.longitude: null: is required when latitude is given",
        ),
        ("{latitude: 1, longitude: 2}", "cluster_location.name: (missing): is required"),
        ("\"\"", "cluster_location: \"\": must not be empty"),
        (
            "[x]",
            "cluster_location: [\"x\"]: must be a place name or a mapping with name, latitude and longitude, not a list",
        ),
    ] {
        assert_eq!(only_problem(&v1(&format!("cluster_location: {written}"))), line, "{written}");
    }
}

#[test]
fn the_top_level_must_be_a_mapping() {
    assert_eq!(
        problems("- a\n- b\n"),
        ["(top level): [\"a\", \"b\"]: must be a mapping of fields such as api_version and job_name, not a list"]
    );
    assert_eq!(
        problems("just text"),
        ["(top level): \"just text\": must be a mapping of fields such as api_version and job_name, not a string"]
    );
    assert_eq!(
        problems("{1: a, api_version: v1, job_name: x, image: y, image_runtime: docker, requirements: {cpu: 1, memory: 1}}"),
        ["(top level): 1: field names must be strings, not a number"]
    );
}

#[test]
fn empty_documents_are_empty() {
    for text in [
        "",
        "   \n\t\n",
        "# only a comment\n  # another\n",
        "---\n",
        "\u{feff}",
    ] {
        assert_eq!(parse(text), Err(DescriptorError::Empty), "{text:?}");
    }
    assert_eq!(DescriptorError::Empty.problems(), ["descriptor is empty"]);
}

#[test]
fn size_is_checked_before_anything_else() {
    let mut bytes = vec![0xff; MAX_DESCRIPTOR_BYTES + 1];
    bytes[0] = b'a';
    assert_eq!(
        parse_descriptor(&bytes, &KnownRuntimes::default()),
        Err(DescriptorError::TooLarge {
            size: MAX_DESCRIPTOR_BYTES + 1,
            limit: MAX_DESCRIPTOR_BYTES
        })
    );
    let spaces = vec![b' '; MAX_DESCRIPTOR_BYTES];
    assert_eq!(
        parse_descriptor(&spaces, &KnownRuntimes::default()),
        Err(DescriptorError::Empty)
    );
}

#[test]
fn invalid_utf8_names_the_offset() {
    let err = parse_descriptor(
        b"api_version: v1\njob_name: \xc3\x28\n",
        &KnownRuntimes::default(),
    )
    .unwrap_err();
    assert_eq!(err, DescriptorError::NotUtf8 { offset: 26 });
    assert_eq!(
        err.problems(),
        ["descriptor is not UTF-8: invalid byte at offset 26"]
    );
}

#[test]
fn syntax_errors_carry_their_location() {
    let err = parse("api_version: v1\njob_name: [unclosed\n").unwrap_err();
    let DescriptorError::Syntax {
        line,
        column,
        message,
    } = &err
    else {
        panic!("{err:?}");
    };
    let (Some(line), Some(column)) = (line, column) else {
        panic!("{err:?}");
    };
    let said_twice = format!(" at line {line} column {column}");
    assert!(!message.contains(&said_twice), "{message}");
    assert!(
        err.to_string().starts_with("yaml syntax error at line "),
        "{err}"
    );
}

#[test]
fn duplicate_keys_are_syntax_errors() {
    let err = parse(&format!("{THESIS}job_name: again\n")).unwrap_err();
    assert!(matches!(err, DescriptorError::Syntax { .. }), "{err:?}");
    assert!(
        err.to_string().contains("duplicate key \"job_name\""),
        "{err}"
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for text in [
        "[".repeat(10_000),
        format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)),
        format!("a: {}", "{b: ".repeat(3_000)),
    ] {
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, DescriptorError::Syntax { .. }), "{err:?}");
    }
    let err = parse(&format!("{}{}", "[".repeat(200), "]".repeat(200))).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("the limit is {MAX_NESTING}")),
        "{err}"
    );
}

/// libyaml's scanner takes time quadratic in flow nesting (100,000 nested `[` held a core for
/// 22 s): the nesting is bounded first, in linear time, and the refusal says where and why.
#[test]
fn nesting_past_the_limit_is_refused_before_the_yaml_parser_reads_it() {
    let deep = format!(
        "api_version: v1\nimage: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let err = parse(&deep).unwrap_err();
    let DescriptorError::Syntax {
        line,
        column,
        message,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*line, Some(2), "{err}");
    assert!(column.is_some_and(|c| c > MAX_NESTING), "{err}");
    assert!(
        message.contains(&format!("the limit is {MAX_NESTING}")),
        "{err}"
    );

    // block nesting counts too: compact sequences on one line, and indentation
    let compact = format!("api_version: v1\nimage:\n{}x\n", "- ".repeat(100_000));
    let err = parse(&compact).unwrap_err();
    assert!(err.to_string().contains("more than 16 levels"), "{err}");
    let mut block = String::from("api_version: v1\nimage:\n");
    for depth in 1..=MAX_NESTING + 2 {
        block.push_str(&format!("{}k:\n", " ".repeat(depth)));
    }
    let err = parse(&block).unwrap_err();
    assert!(err.to_string().contains("levels deep"), "{err}");

    // at the limit, nesting is the checks' business, not a syntax error
    let at_limit = format!(
        "api_version: v1\njob_name: web\nimage: x\nimage_runtime: docker\nargs: {}{}\n",
        "[".repeat(MAX_NESTING - 1),
        "]".repeat(MAX_NESTING - 1)
    );
    let err = parse(&at_limit).unwrap_err();
    assert!(matches!(err, DescriptorError::Invalid(_)), "{err:?}");
}

/// Every hostile shape of the test kit (deep and wide nesting, long keys, many keys, alias
/// bombs, huge numbers, many documents) is answered, never a panic.
#[test]
fn hostile_descriptors_are_answered() {
    let known = KnownRuntimes::default();
    for (name, text) in crate::testing::hostile::descriptors(64 * 1024) {
        assert!(text.len() <= 64 * 1024, "{name}: {} bytes", text.len());
        let answer = std::panic::catch_unwind(|| parse_descriptor(text.as_bytes(), &known));
        let answer = answer.unwrap_or_else(|_| panic!("{name}: panicked"));
        if name == "plain" {
            assert!(answer.is_ok(), "{name}: {answer:?}");
        } else {
            assert!(answer.is_err(), "{name}: accepted");
        }
    }
}

#[test]
fn alias_bombs_hit_the_repetition_limit() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..9u8 {
        let prev = (b'a' + i) as char;
        let next = (b'a' + i + 1) as char;
        text.push_str(&format!(
            "{next}: &{next} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    let err = parse(&text).unwrap_err();
    assert!(
        err.to_string().contains("repetition limit exceeded"),
        "{err}"
    );
}

#[test]
fn long_values_are_cut_in_messages() {
    let name = "n".repeat(300);
    let line = only_problem(&THESIS.replace("image_detection", &name));
    assert!(line.len() < 200, "{line}");
    assert!(line.contains('…'), "{line}");
}

#[test]
fn field_errors_display_path_value_and_rule() {
    let err = FieldError {
        path: "requirements.memory".into(),
        value: "\"-5\"".into(),
        rule: "must be a positive number of MB".into(),
    };
    assert_eq!(
        err.to_string(),
        "requirements.memory: \"-5\": must be a positive number of MB"
    );
    let invalid = DescriptorError::Invalid(vec![err.clone(), err]);
    assert!(
        invalid
            .to_string()
            .starts_with("invalid descriptor, 2 problems: "),
        "{invalid}"
    );
}

#[test]
fn odd_keys_are_quoted_in_paths() {
    assert_eq!(
        only_problem(&v1("\"a.b\": 1")).split(':').next(),
        Some("[\"a.b\"]")
    );
    let paths: Vec<String> = problems(&v1("env: {A: [1]}\nnode_selector: {\"x.y/z\": [1]}"))
        .iter()
        .filter_map(|line| line.split(": ").next().map(str::to_string))
        .collect();
    assert_eq!(paths, ["env.A", "node_selector[\"x.y/z\"]"]);
}

#[test]
fn positions_in_messages_count_entries_as_written() {
    assert_eq!(
        problems(&v1("affinity: [db]\nanti_affinity: [\"bad name\", db]")),
        [
            "anti_affinity[0]: \"bad name\": may only hold letters, digits, '_', '.' and '-'",
            "anti_affinity[1]: \"db\": also listed in affinity[0]; a job cannot both attract and repel another",
        ]
    );
    assert_eq!(
        problems(&v1("ports: [0, 80, 80]")),
        [
            "ports[0]: 0: must be a whole number from 1 to 65535",
            "ports[2]: 80: container port 80/tcp is already listed at ports[1]",
        ]
    );
}

#[test]
fn huge_lists_are_checked_in_linear_time() {
    let ports: Vec<String> = (1..=30_000).map(|p| p.to_string()).collect();
    let text = v1(&format!("ports: [{}, 1]", ports.join(", ")));
    let started = std::time::Instant::now();
    assert_eq!(
        only_problem(&text),
        "ports[30000]: 1: container port 1/tcp is already listed at ports[0]"
    );
    let names: Vec<String> = (0..10_000).map(|i| format!("j{i}")).collect();
    let text = v1(&format!(
        "affinity: [{0}]\nanti_affinity: [{0}]",
        names.join(", ")
    ));
    assert_eq!(problems(&text).len(), 10_000);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
