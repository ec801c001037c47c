//! Choosing a policy is configuration: binaries switch policies without code.

use crate::filters::FilterChain;
use crate::policies::{BestFit, FirstFit, LeastLoaded, LocationAware, Spread, WeightedPolicy};
use crate::scores::Weighted;
use edgeio_core::scheduler::{Scheduler, SchedulerError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The built-in policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// [`FirstFit`], the thesis' default.
    #[default]
    FirstFit,
    /// [`BestFit`].
    BestFit,
    /// [`LeastLoaded`] with round-robin among equals.
    LeastLoaded,
    /// [`LocationAware`], the thesis' root rule.
    LocationAware,
    /// [`Spread`] over a label.
    Spread,
    /// [`WeightedPolicy`] over configured scores.
    Weighted,
}

impl PolicyKind {
    /// Every policy name, as written in configuration.
    pub const NAMES: &'static [&'static str] = &[
        "first-fit",
        "best-fit",
        "least-loaded",
        "location-aware",
        "spread",
        "weighted",
    ];

    /// The name as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::FirstFit => "first-fit",
            PolicyKind::BestFit => "best-fit",
            PolicyKind::LeastLoaded => "least-loaded",
            PolicyKind::LocationAware => "location-aware",
            PolicyKind::Spread => "spread",
            PolicyKind::Weighted => "weighted",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyKind {
    type Err = SchedulerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [
            PolicyKind::FirstFit,
            PolicyKind::BestFit,
            PolicyKind::LeastLoaded,
            PolicyKind::LocationAware,
            PolicyKind::Spread,
            PolicyKind::Weighted,
        ];
        all.into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| SchedulerError::Invalid {
                field: "policy".into(),
                value: s.to_string(),
                rule: format!("must be one of {}", PolicyKind::NAMES.join(", ")),
            })
    }
}

/// A scheduler's configuration (serde, so it can live in a binary's config file).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// Which policy.
    #[serde(default)]
    pub policy: PolicyKind,
    /// Filter settings (stale-data bound).
    #[serde(default)]
    pub filters: FilterChain,
    /// The label `spread` spreads over (default `zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_label: Option<String>,
    /// The scores of `weighted`, with weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<Weighted>,
}

impl SchedulerConfig {
    /// The configuration of one policy with default settings.
    pub fn policy(policy: PolicyKind) -> Self {
        SchedulerConfig {
            policy,
            ..Self::default()
        }
    }

    /// Builds the scheduler; refuses settings that make no sense, naming them.
    pub fn build(&self) -> Result<Arc<dyn Scheduler>, SchedulerError> {
        let filters = self.filters;
        for (i, w) in self.scores.iter().enumerate() {
            if !w.weight.is_finite() || w.weight < 0.0 {
                return Err(SchedulerError::Invalid {
                    field: format!("scores[{i}].weight"),
                    value: w.weight.to_string(),
                    rule: "must be a finite number >= 0".into(),
                });
            }
        }
        if !self.scores.is_empty() && self.policy != PolicyKind::Weighted {
            return Err(SchedulerError::Invalid {
                field: "scores".into(),
                value: format!("{} scores", self.scores.len()),
                rule: format!("only the weighted policy takes scores, not {}", self.policy),
            });
        }
        Ok(match self.policy {
            PolicyKind::FirstFit => Arc::new(FirstFit { filters }),
            PolicyKind::BestFit => Arc::new(BestFit { filters }),
            PolicyKind::LeastLoaded => Arc::new(LeastLoaded::new(filters)),
            PolicyKind::LocationAware => Arc::new(LocationAware { filters }),
            PolicyKind::Spread => Arc::new(Spread {
                filters,
                label: self.spread_label.clone().unwrap_or_else(|| "zone".into()),
            }),
            PolicyKind::Weighted => {
                if self.scores.is_empty() {
                    return Err(SchedulerError::Invalid {
                        field: "scores".into(),
                        value: "[]".into(),
                        rule: "the weighted policy needs at least one score".into(),
                    });
                }
                Arc::new(WeightedPolicy {
                    filters,
                    scores: self.scores.clone(),
                })
            }
        })
    }
}
