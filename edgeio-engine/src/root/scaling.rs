//! Scaling a job up (more replicas, spilling to other clusters) and down (the newest first).

use super::*;

impl RootState {
    pub(super) fn on_scale_outcome(
        &mut self,
        job: &JobId,
        cluster: &str,
        from: u32,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        let Some((error, unschedulable)) = refusal(cluster, outcome) else {
            return;
        };
        let Some(record) = self.jobs.get_mut(job.as_str()) else {
            return;
        };
        if record.lifecycle.state() != JobState::Scaling {
            return;
        }
        let to = record.spec.replicas;
        record.unschedulable.extend(unschedulable);
        if to > from {
            // the extra replicas go to a cluster that holds none of the job yet
            let extra = to - from;
            if record.at.parts.is_empty() {
                record.at.parts.push(Part {
                    cluster: cluster.to_string(),
                    replicas: from,
                });
            } else if let Some(part) = record.at.parts.iter_mut().find(|p| p.cluster == cluster) {
                part.replicas = part.replicas.saturating_sub(extra);
            }
            let why = format!("cluster {cluster} cannot take {extra} more: {error}");
            if self.place_part(job.as_str(), extra, &why, fx) {
                return;
            }
        }
        let Some(record) = self.jobs.get_mut(job.as_str()) else {
            return;
        };
        if record.at.parts.len() == 1 {
            record.at.parts.clear();
        }
        record.spec.replicas = from;
        let why = format!("scale to {to} refused by cluster {cluster}: {error}; it keeps {from}");
        if let Err(e) = record
            .lifecycle
            .reconcile(JobState::Running, self.cx.now_ms(), &why)
        {
            self.refusals.note(
                job.as_str(),
                None,
                &e,
                "the job keeps its state; the count is restored all the same",
            );
        }
        warn!(job = %job, %why, "scale refused");
        record.settle(self.cx.now_ms(), &mut self.refusals);
        fx.persist.push(job_key(job.as_str()));
    }

    /// Validates and starts a scale (see [`RootApi::scale`]).
    pub(super) fn scale(
        &mut self,
        id: &str,
        replicas: u32,
        fx: &mut Fx,
    ) -> Result<JobView, ApiError> {
        check_replicas(replicas)?;
        let now = self.cx.now_ms();
        let job = self.jobs.get_mut(id).ok_or_else(|| ApiError::NotFound {
            kind: "job",
            id: id.to_string(),
        })?;
        let state = job.lifecycle.state();
        let from = job.spec.replicas;
        match state {
            _ if from == replicas && !state.is_final() => return Ok(job.view()),
            JobState::Requested | JobState::NotDeployable => {
                job.spec.replicas = replicas;
                fx.persist.push(job_key(id));
                if state == JobState::NotDeployable {
                    let why = format!("scaled from {from} to {replicas} replicas; retrying");
                    self.reschedule(id, &why, fx);
                }
            }
            JobState::ScheduledNode | JobState::Running => {
                let changes = scale_placed(job, replicas, now, &mut self.refusals)?;
                let job_id = job.id.clone();
                for (cluster, count) in changes {
                    let command = match count {
                        Some(n) => self.scale_command(&job_id, cluster, n, from),
                        None => terminate_command(&self.cx, &self.config, &cluster, &job_id),
                    };
                    fx.commands.push(command);
                }
                fx.persist.push(job_key(id));
            }
            other => {
                return Err(ApiError::Conflict {
                    message: format!("job {id} is {other}; it scales when REQUESTED, NOT_DEPLOYABLE, SCHEDULED_NODE or RUNNING"),
                    details: vec![FieldError {
                        path: "job".into(),
                        value: id.to_string(),
                        rule: "must be placed or waiting, and not moving".into(),
                    }],
                })
            }
        }
        Ok(self
            .jobs
            .get(id)
            .map(RootJob::view)
            .expect("the job just changed"))
    }

    /// Asks `cluster` to run `replicas` of `job` (which had `from` in all).
    fn scale_command(
        &self,
        job: &JobId,
        cluster: String,
        replicas: u32,
        from: u32,
    ) -> (String, Envelope, Tag) {
        let body = Message::Scale(Scale {
            job: job.clone(),
            replicas,
        });
        let envelope = Envelope::new_in(&self.cx, &self.config.id, body);
        let tag = Tag::Scale {
            job: job.clone(),
            cluster: cluster.clone(),
            from,
        };
        (cluster, envelope, tag)
    }
}

/// A count of replicas the API takes: 1 to [`MAX_REPLICAS`].
fn check_replicas(replicas: u32) -> Result<(), ApiError> {
    if (1..=MAX_REPLICAS).contains(&replicas) {
        return Ok(());
    }
    Err(ApiError::Invalid {
        message: format!("replicas: {replicas} is out of range"),
        details: vec![FieldError {
            path: "replicas".into(),
            value: replicas.to_string(),
            rule: format!(
                "must be a whole number from 1 to {MAX_REPLICAS} (terminate a job to stop it)"
            ),
        }],
    })
}

/// Scales a placed job to `replicas`: SCALING, its count and its parts changed, and what each
/// cluster is told: (cluster, its new count, or `None`: let go of its part).
fn scale_placed(
    job: &mut RootJob,
    replicas: u32,
    now: u64,
    refusals: &mut Refusals,
) -> Result<Vec<(String, Option<u32>)>, ApiError> {
    let Some(cluster) = job.at.cluster.clone() else {
        return Err(ApiError::Conflict {
            message: format!("job {} has no cluster yet", job.id),
            details: Vec::new(),
        });
    };
    let from = job.spec.replicas;
    job.spec.replicas = replicas;
    let why = format!("scale from {from} to {replicas} replicas requested");
    if let Err(e) = job.lifecycle.reconcile(JobState::Scaling, now, &why) {
        let instead = "the scale goes ahead; the job settles when its replicas run";
        refusals.note(job.id.as_str(), None, &e, instead);
    }
    if job.at.parts.is_empty() {
        return Ok(vec![(cluster, Some(replicas))]);
    }
    let mut changes = Vec::new();
    if replicas > from {
        // more: asked of the newest part's cluster first
        let last = job.at.parts.last_mut().expect("a spread job has parts");
        last.replicas += replicas - from;
        changes.push((last.cluster.clone(), Some(last.replicas)));
        return Ok(changes);
    }
    // fewer: the newest parts shrink or go first
    let mut excess = from - replicas;
    while excess > 0 {
        let Some(last) = job.at.parts.last_mut() else {
            break;
        };
        if last.replicas <= excess {
            excess -= last.replicas;
            changes.push((last.cluster.clone(), None));
            job.at.parts.pop();
        } else {
            last.replicas -= excess;
            excess = 0;
            changes.push((last.cluster.clone(), Some(last.replicas)));
        }
    }
    Ok(changes)
}
