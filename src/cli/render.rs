//! How `edgectl` shows jobs, clusters and nodes to people: tables for `get`, text for
//! `describe`. Pure functions of the views (and of "now", for ages), so tests can pin them.

use super::config::{mask_token, ConfigFile};
use edgeio_core::api::{ClusterView, JobView, NodeView};
use edgeio_core::auth::{TokenKind, TokenView};
use edgeio_core::model::human_bytes;
use edgeio_core::state::InstanceState;
use serde::Serialize;
use std::collections::BTreeSet;

/// A node with the cluster it belongs to, as `get nodes` lists them (the view itself does
/// not name its cluster: it is asked of one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ClusterNode {
    /// The cluster that reported the node.
    pub(crate) cluster: String,
    /// The node.
    #[serde(flatten)]
    pub(crate) node: NodeView,
}

/// Left-aligned columns, three spaces apart, header first; every line ends with `\n`.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 3;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".to_string(),
    }
}

/// `3s`, `5m`, `7h`, `2d`: how long ago `since_ms` was.
pub(crate) fn age(now_ms: u64, since_ms: u64) -> String {
    let secs = now_ms.saturating_sub(since_ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Unix milliseconds as UTC, RFC 3339 to the second (`2024-05-01T12:00:00Z`).
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Days to civil date (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// CPU in cores as a table shows it: `2`, `500m`.
fn cpu(millis: u64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// The distinct nodes a job's instances are on, in order, or `-`.
fn nodes_of(job: &JobView) -> String {
    let mut seen = BTreeSet::new();
    let nodes: Vec<&str> = job
        .instances
        .iter()
        .filter_map(|i| i.node.as_deref())
        .filter(|n| seen.insert(*n))
        .collect();
    if nodes.is_empty() {
        "-".to_string()
    } else {
        nodes.join(",")
    }
}

/// The cluster a job runs on, or the clusters it is spread over (with each one's count of
/// replicas when `counts`).
fn clusters_of(job: &JobView, counts: bool) -> String {
    if job.parts.is_empty() {
        return or_dash(job.cluster.as_deref());
    }
    let parts: Vec<String> = job
        .parts
        .iter()
        .map(|p| match counts {
            true => format!("{} ({} replicas)", p.cluster, p.replicas),
            false => p.cluster.clone(),
        })
        .collect();
    parts.join(if counts { ", " } else { "," })
}

/// `get jobs`: ID NAME STATE CLUSTER NODE INSTANCES (running/replicas) AGE.
pub(crate) fn jobs_table(jobs: &[JobView], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let running = job
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .count();
            let since = job.history.first().map_or(now_ms, |h| h.at_ms);
            vec![
                job.id.to_string(),
                job.name.clone(),
                job.state.to_string(),
                clusters_of(job, false),
                nodes_of(job),
                format!("{running}/{}", job.spec.replicas),
                age(now_ms, since),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "STATE", "CLUSTER", "NODE", "INSTANCES", "AGE"],
        &rows,
    )
}

/// `get clusters`: ID NAME STATE NODES (ready/registered) LOCATION.
pub(crate) fn clusters_table(clusters: &[ClusterView]) -> String {
    let rows: Vec<Vec<String>> = clusters
        .iter()
        .map(|c| {
            let nodes = c.aggregate.as_ref().map_or("-".to_string(), |a| {
                format!("{}/{}", a.ready_nodes, a.nodes)
            });
            vec![
                c.id.clone(),
                c.name.clone(),
                c.state.to_string(),
                nodes,
                or_dash(c.location.as_ref().map(|l| l.name.as_str())),
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATE", "NODES", "LOCATION"], &rows)
}

/// `token list`: ID NAME ROLE CREATED EXPIRES CREATED-BY (times in UTC; a join token's
/// role reads `join TIER`). Never a secret: the views hold none.
pub(crate) fn tokens_table(tokens: &[TokenView]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let role = match &t.kind {
                TokenKind::Api { role } => role.to_string(),
                TokenKind::Join { tier, cluster } => match cluster {
                    Some(cluster) => format!("join {tier} ({cluster})"),
                    None => format!("join {tier}"),
                },
            };
            let unix_ms = |s: i64| u64::try_from(s).unwrap_or(0).saturating_mul(1000);
            vec![
                t.id.clone(),
                t.name.clone(),
                role,
                utc(unix_ms(t.created)),
                t.expires.map_or("never".to_string(), |at| utc(unix_ms(at))),
                or_dash(Some(&t.created_by)),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "CREATED-BY"],
        &rows,
    )
}

/// `config get-contexts`: CURRENT (`*`) NAME SERVER CA TOKEN, the token masked.
pub(crate) fn contexts_table(config: &ConfigFile) -> String {
    let rows: Vec<Vec<String>> = config
        .contexts
        .iter()
        .map(|(name, c)| {
            let current = config.current_context.as_deref() == Some(name.as_str());
            let ca = match (&c.ca, &c.ca_data) {
                (Some(path), _) => path.display().to_string(),
                (None, Some(_)) => "(inline)".to_string(),
                (None, None) => "-".to_string(),
            };
            let token = match (&c.token, &c.token_file) {
                (Some(token), _) => mask_token(token),
                (None, Some(path)) => format!("(file {})", path.display()),
                (None, None) => "-".to_string(),
            };
            vec![
                if current { "*" } else { "" }.to_string(),
                name.clone(),
                or_dash(c.server.as_deref()),
                ca,
                token,
            ]
        })
        .collect();
    table(&["CURRENT", "NAME", "SERVER", "CA", "TOKEN"], &rows)
}

/// A share in thousandths as a percentage with one decimal, `-` when unknown.
fn percent(permille: Option<u16>) -> String {
    permille.map_or("-".into(), |p| format!("{}.{}", p / 10, p % 10))
}

/// `get nodes`: ID NAME STATE CLUSTER ARCH FREE-CPU FREE-MEM CPU% MEM%.
pub(crate) fn nodes_table(nodes: &[ClusterNode]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.node.id.clone(),
                n.node.name.clone(),
                n.node.state.to_string(),
                n.cluster.clone(),
                n.node.capabilities.arch.to_string(),
                cpu(n.node.free.cpu_millis),
                human_bytes(n.node.free.memory_bytes).replace(' ', ""),
                percent(n.node.usage.map(|u| u.cpu_permille)),
                percent(n.node.usage.map(|u| u.memory_permille)),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "STATE", "CLUSTER", "ARCH", "FREE-CPU", "FREE-MEM", "CPU%", "MEM%",
        ],
        &rows,
    )
}

/// `describe job`: the job, its instances, its whole history and the scheduler's reasons.
pub(crate) fn describe_job(job: &JobView, now_ms: u64) -> String {
    let mut text = String::new();
    let since = job.history.first().map_or(now_ms, |h| h.at_ms);
    let fields = [
        ("Name", job.name.clone()),
        ("ID", job.id.to_string()),
        ("State", job.state.to_string()),
        ("Cluster", clusters_of(job, true)),
        ("Nodes", nodes_of(job)),
        (
            "Image",
            format!("{} ({})", job.spec.image, job.spec.runtime),
        ),
        ("Replicas", job.spec.replicas.to_string()),
        ("Requests", job.spec.resources.to_string()),
        ("Age", age(now_ms, since)),
    ];
    for (name, value) in fields {
        text.push_str(&format!("{:<11}{value}\n", format!("{name}:")));
    }

    if job.instances.is_empty() {
        text.push_str("Instances: none\n");
    } else {
        text.push_str("Instances:\n");
        let rows: Vec<Vec<String>> = job
            .instances
            .iter()
            .map(|i| {
                let reason = i.history.last().map_or(String::new(), |h| h.reason.clone());
                vec![
                    i.id.to_string(),
                    or_dash(i.node.as_deref()),
                    i.state.to_string(),
                    i.exit_code.map_or("-".to_string(), |c| c.to_string()),
                    reason,
                ]
            })
            .collect();
        indent(
            &mut text,
            &table(&["ID", "NODE", "STATE", "EXIT", "REASON"], &rows),
        );
    }

    text.push_str("History:\n");
    let rows: Vec<Vec<String>> = job
        .history
        .iter()
        .map(|h| vec![utc(h.at_ms), h.state.to_string(), h.reason.clone()])
        .collect();
    indent(&mut text, &table(&["TIME", "STATE", "REASON"], &rows));

    if !job.unschedulable.is_empty() {
        text.push_str("Unschedulable:\n");
        for why in &job.unschedulable {
            text.push_str(&format!("  - {why}\n"));
        }
    }
    text
}

fn indent(text: &mut String, block: &str) {
    for line in block.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_714_564_800_999), "2024-05-01T12:00:00Z");
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        assert_eq!(age(59_999, 0), "59s");
        assert_eq!(age(3_600_000, 0), "1h");
        assert_eq!(age(120_000, 0), "2m");
        assert_eq!(age(3 * 86_400_000, 0), "3d");
        assert_eq!(
            age(0, 10),
            "0s",
            "a clock behind the server's is not negative"
        );
    }

    #[test]
    fn token_and_context_tables_show_no_secret() {
        let view = |id: &str, kind: TokenKind, expires: Option<i64>| TokenView {
            id: id.into(),
            name: "ci".into(),
            kind,
            created: 1_714_564_800,
            expires,
            uses_left: None,
            created_by: "bootstrap".into(),
        };
        let text = tokens_table(&[
            view(
                "abcd1234",
                TokenKind::Api {
                    role: edgeio_core::auth::Role::Viewer,
                },
                Some(1_714_651_200),
            ),
            view(
                "efgh5678",
                TokenKind::Join {
                    tier: "worker".into(),
                    cluster: Some("c1".into()),
                },
                None,
            ),
        ]);
        assert_eq!(
            text,
            "ID         NAME   ROLE               CREATED                EXPIRES                CREATED-BY\n\
             abcd1234   ci     viewer             2024-05-01T12:00:00Z   2024-05-02T12:00:00Z   bootstrap\n\
             efgh5678   ci     join worker (c1)   2024-05-01T12:00:00Z   never                  bootstrap\n"
        );

        let config: ConfigFile = serde_yaml_ng::from_str(
            "current-context: b\ncontexts:\n  a:\n    server: http://a:1\n    token-file: /t\n  \
             b:\n    server: https://b:1\n    ca: /ca.crt\n    token: edgeioapi1.abcd1234.secret\n",
        )
        .unwrap();
        assert_eq!(
            contexts_table(&config),
            "CURRENT   NAME   SERVER        CA        TOKEN\n\
             \x20         a      http://a:1    -         (file /t)\n\
             *         b      https://b:1   /ca.crt   edgeioapi1.abcd1234.****\n"
        );
    }

    #[test]
    fn tables_align_columns_and_trim_ends() {
        let text = table(
            &["ID", "NAME"],
            &[
                vec!["job-1".into(), "a".into()],
                vec!["j".into(), "".into()],
            ],
        );
        assert_eq!(text, "ID      NAME\njob-1   a\nj\n");
    }

    #[test]
    fn a_spread_job_names_every_cluster_holding_a_part() {
        let spec = edgeio_core::job::JobSpec::minimal(
            "web",
            "img",
            "native",
            edgeio_core::model::Resources::ZERO,
        );
        let mut job = JobView {
            id: edgeio_core::model::JobId::new("web-1").unwrap(),
            name: "web".into(),
            state: edgeio_core::state::JobState::Running,
            history: Vec::new(),
            cluster: Some("a".into()),
            parts: Vec::new(),
            instances: Vec::new(),
            unschedulable: Vec::new(),
            spec,
        };
        assert_eq!(clusters_of(&job, true), "a");
        job.parts = vec![
            edgeio_core::api::PartView {
                cluster: "a".into(),
                replicas: 2,
            },
            edgeio_core::api::PartView {
                cluster: "b".into(),
                replicas: 1,
            },
        ];
        assert_eq!(clusters_of(&job, true), "a (2 replicas), b (1 replicas)");
        assert_eq!(clusters_of(&job, false), "a,b");
        assert!(describe_job(&job, 0).contains("Cluster:   a (2 replicas), b (1 replicas)\n"));
    }
}
