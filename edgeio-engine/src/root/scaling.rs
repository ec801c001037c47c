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
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(ApiError::Invalid {
                message: format!("replicas: {replicas} is out of range"),
                details: vec![FieldError {
                    path: "replicas".into(),
                    value: replicas.to_string(),
                    rule: format!("must be a whole number from 1 to {MAX_REPLICAS} (terminate a job to stop it)"),
                }],
            });
        }
        let root = self.config.id.clone();
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
                let Some(cluster) = job.at.cluster.clone() else {
                    return Err(ApiError::Conflict {
                        message: format!("job {id} has no cluster yet"),
                        details: Vec::new(),
                    });
                };
                job.spec.replicas = replicas;
                let why = format!("scale from {from} to {replicas} replicas requested");
                if let Err(e) = job.lifecycle.reconcile(JobState::Scaling, self.cx.now_ms(), &why) {
                    self.refusals.note(id, None, &e, "the scale goes ahead; the job settles when its replicas run");
                }
                // (cluster, its new count, or None: let go of its part)
                let mut changes: Vec<(String, Option<u32>)> = Vec::new();
                if job.at.parts.is_empty() {
                    changes.push((cluster, Some(replicas)));
                } else if replicas > from {
                    // more: asked of the newest part's cluster first
                    let last = job.at.parts.last_mut().expect("a spread job has parts");
                    last.replicas += replicas - from;
                    changes.push((last.cluster.clone(), Some(last.replicas)));
                } else {
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
                }
                let job_id = job.id.clone();
                for (cluster, count) in changes {
                    match count {
                        Some(n) => fx.commands.push((
                            cluster.clone(),
                            Envelope::new_in(&self.cx,
                                &root,
                                Message::Scale(Scale {
                                    job: job_id.clone(),
                                    replicas: n,
                                }),
                            ),
                            Tag::Scale {
                                job: job_id.clone(),
                                cluster,
                                from,
                            },
                        )),
                        None => fx
                            .commands
                            .push(terminate_command(&self.cx, &self.config, &cluster, &job_id)),
                    }
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
}
