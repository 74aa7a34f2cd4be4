//! Batch builds: the members a `batch` section describes, and running them with a bound on
//! parallelism, `depend-on` order and `fast-fail`.

use std::collections::HashMap;
use std::future::Future;

use buildspec::buildspec::{Batch, BatchEnv, BatchKind, BatchTask};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::engine::Stop;
use super::summary::{BuildStatus, Summary};

/// One build of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `CODEBUILD_BATCH_BUILD_IDENTIFIER`.
    pub identifier: String,
    /// Another buildspec, relative to the source; `None` runs the same one.
    pub buildspec: Option<String>,
    pub image: Option<String>,
    pub privileged: Option<bool>,
    pub variables: Vec<(String, String)>,
    pub ignore_failure: bool,
    pub depend_on: Vec<String>,
}

/// The members of a batch, in the order they are listed (matrix: in combination order).
pub fn plan(batch: &Batch) -> Vec<Member> {
    match &batch.kind {
        BatchKind::BuildList(tasks) | BatchKind::BuildGraph(tasks) => {
            tasks.iter().map(task_member).collect()
        }
        BatchKind::BuildMatrix(matrix) => {
            let d = &matrix.dynamic;
            let mut combos: Vec<Member> = vec![Member {
                identifier: String::new(),
                buildspec: None,
                image: matrix.static_env.image.clone(),
                privileged: matrix.static_env.privileged_mode,
                variables: env_vars(&matrix.static_env),
                ignore_failure: matrix.ignore_failure,
                depend_on: Vec::new(),
            }];
            let expand =
                |combos: Vec<Member>, values: &[String], set: &dyn Fn(&mut Member, &str)| {
                    if values.is_empty() {
                        return combos;
                    }
                    combos
                        .into_iter()
                        .flat_map(|m| {
                            values.iter().map(move |v| {
                                let mut next = m.clone();
                                set(&mut next, v);
                                next
                            })
                        })
                        .collect()
                };
            combos = expand(combos, &d.buildspec, &|m, v| {
                m.buildspec = Some(v.to_string())
            });
            combos = expand(combos, &d.image, &|m, v| m.image = Some(v.to_string()));
            for (name, values) in &d.variables {
                combos = expand(combos, values, &|m, v| {
                    m.variables.retain(|(n, _)| n != name);
                    m.variables.push((name.clone(), v.to_string()));
                });
            }
            for (i, member) in combos.iter_mut().enumerate() {
                member.identifier = format!("matrix{}", i + 1);
            }
            combos
        }
        BatchKind::BuildFanout(fanout) => (1..=fanout.parallelism)
            .map(|i| Member {
                identifier: format!("fanout{i}"),
                buildspec: None,
                image: None,
                privileged: None,
                variables: Vec::new(),
                ignore_failure: fanout.ignore_failure,
                depend_on: Vec::new(),
            })
            .collect(),
    }
}

fn task_member(task: &BatchTask) -> Member {
    Member {
        identifier: task.identifier.value.clone(),
        buildspec: task.buildspec.as_ref().map(|b| b.value.clone()),
        image: task.env.image.clone(),
        privileged: task.env.privileged_mode,
        variables: env_vars(&task.env),
        ignore_failure: task.ignore_failure,
        depend_on: task.depend_on.iter().map(|d| d.value.clone()).collect(),
    }
}

fn env_vars(env: &BatchEnv) -> Vec<(String, String)> {
    env.variables
        .iter()
        .map(|v| (v.name.value.clone(), v.value.value.clone()))
        .collect()
}

/// What became of a member.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub member: Member,
    pub summary: Option<Summary>,
    /// Why it did not run, when it did not.
    pub skipped: Option<String>,
}

impl Outcome {
    fn counts_as_failure(&self) -> bool {
        if self.member.ignore_failure {
            return false;
        }
        match &self.summary {
            Some(s) => s.status != BuildStatus::Succeeded,
            None => true,
        }
    }
}

/// Runs `members`: at most `parallel` at once, each after its `depend-on` members
/// succeeded; with `fast_fail` the first failure stops the running members and starts no
/// more. `stop` is the user's (Ctrl-C); members see it, and fast-fail, through theirs.
pub async fn run<F, Fut>(
    members: Vec<Member>,
    parallel: usize,
    fast_fail: bool,
    mut stop: watch::Receiver<Stop>,
    run_member: F,
) -> Vec<Outcome>
where
    F: Fn(Member, watch::Receiver<Stop>) -> Fut,
    Fut: Future<Output = Summary> + Send + 'static,
{
    let (member_stop, member_stop_rx) = watch::channel(Stop::Running);
    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    let mut pending: Vec<Member> = members.clone();
    let mut running = JoinSet::new();
    let mut halted: Option<String> = None;
    loop {
        // Members whose dependencies failed, or that a halt keeps from starting, end here.
        let mut i = 0;
        while i < pending.len() {
            let member = &pending[i];
            let failed_dep = member
                .depend_on
                .iter()
                .find(|d| outcomes.get(*d).is_some_and(|o| o.counts_as_failure()));
            let reason = match (&halted, failed_dep) {
                (Some(why), _) => Some(why.clone()),
                (None, Some(dep)) => Some(format!(
                    "not run: build {dep} it depends on did not succeed"
                )),
                _ => None,
            };
            if let Some(reason) = reason {
                let member = pending.remove(i);
                outcomes.insert(
                    member.identifier.clone(),
                    Outcome {
                        member,
                        summary: None,
                        skipped: Some(reason),
                    },
                );
            } else {
                i += 1;
            }
        }
        while running.len() < parallel.max(1) {
            let ready = pending
                .iter()
                .position(|m| m.depend_on.iter().all(|d| outcomes.contains_key(d)));
            let Some(index) = ready else { break };
            let member = pending.remove(index);
            let task = run_member(member.clone(), member_stop_rx.clone());
            running.spawn(async move { (member, task.await) });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(Ok((member, summary))) = joined else { continue };
                let outcome = Outcome { member, summary: Some(summary), skipped: None };
                if outcome.counts_as_failure() && fast_fail && halted.is_none() {
                    halted = Some(format!("not run: fast-fail after build {} failed", outcome.member.identifier));
                    member_stop.send_replace(Stop::Graceful);
                }
                outcomes.insert(outcome.member.identifier.clone(), outcome);
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    // The user's stop channel is gone: nothing more will come from it.
                    stop = watch::channel(Stop::Running).1;
                    continue;
                }
                let level = *stop.borrow();
                if level > Stop::Running {
                    halted.get_or_insert_with(|| "not run: the batch was stopped".to_string());
                    member_stop.send_replace(level);
                }
            }
        }
    }
    members
        .into_iter()
        .filter_map(|m| outcomes.remove(&m.identifier))
        .collect()
}

/// The batch's status: SUCCEEDED when every member did or may fail; STOPPED when stopped.
pub fn status(outcomes: &[Outcome], stopped: bool) -> BuildStatus {
    if stopped {
        BuildStatus::Stopped
    } else if outcomes.iter().any(Outcome::counts_as_failure) {
        BuildStatus::Failed
    } else {
        BuildStatus::Succeeded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildspec::{Source, parse_buildspec};
    use std::sync::{Arc, Mutex};

    fn batch(yaml: &str) -> Batch {
        let text =
            format!("version: 0.2\nbatch:\n{yaml}phases:\n  build:\n    commands:\n      - make\n");
        parse_buildspec(&Source::new("b.yml", text))
            .value
            .unwrap()
            .batch
            .unwrap()
    }

    fn summary(id: &str, status: BuildStatus) -> Summary {
        Summary {
            build_id: id.to_string(),
            status,
            phases: Vec::new(),
            exported_variables: Default::default(),
            artifacts: Vec::new(),
            reports: Vec::new(),
            builds: Vec::new(),
        }
    }

    #[test]
    fn matrix_members_are_every_combination() {
        let b = batch(
            "  build-matrix:\n    static:\n      env:\n        variables:\n          FIXED: x\n    dynamic:\n      env:\n        image:\n          - img1\n          - img2\n        variables:\n          PY:\n            - '3.10'\n            - '3.11'\n            - '3.12'\n",
        );
        let members = plan(&b);
        assert_eq!(members.len(), 6);
        assert_eq!(members[0].identifier, "matrix1");
        assert_eq!(members[0].image.as_deref(), Some("img1"));
        assert_eq!(
            members[0].variables,
            vec![
                ("FIXED".to_string(), "x".to_string()),
                ("PY".to_string(), "3.10".to_string())
            ]
        );
        assert_eq!(members[5].image.as_deref(), Some("img2"));
        assert_eq!(members[5].variables[1].1, "3.12");
    }

    #[test]
    fn fanout_members_are_numbered() {
        let members = plan(&batch("  build-fanout:\n    parallelism: 3\n"));
        let ids: Vec<_> = members.iter().map(|m| m.identifier.as_str()).collect();
        assert_eq!(ids, ["fanout1", "fanout2", "fanout3"]);
    }

    async fn run_graph(
        yaml: &str,
        parallel: usize,
        fast_fail: bool,
        failing: &[&str],
    ) -> (Vec<Outcome>, Vec<String>) {
        let members = plan(&batch(yaml));
        let order = Arc::new(Mutex::new(Vec::new()));
        let failing: Vec<String> = failing.iter().map(|s| s.to_string()).collect();
        let (_tx, rx) = watch::channel(Stop::Running);
        let order2 = Arc::clone(&order);
        let outcomes = run(members, parallel, fast_fail, rx, move |m, mut stop| {
            let order = Arc::clone(&order2);
            let fails = failing.contains(&m.identifier);
            async move {
                order.lock().unwrap().push(m.identifier.clone());
                if fails {
                    return summary(&m.identifier, BuildStatus::Failed);
                }
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_millis(50)) => summary(&m.identifier, BuildStatus::Succeeded),
                    _ = stop.wait_for(|s| *s >= Stop::Graceful) => summary(&m.identifier, BuildStatus::Stopped),
                }
            }
        })
        .await;
        let order = order.lock().unwrap().clone();
        (outcomes, order)
    }

    #[tokio::test]
    async fn graph_order_and_failed_dependencies() {
        let yaml = "  build-graph:\n    - identifier: a\n    - identifier: b\n      depend-on: [a]\n    - identifier: c\n      depend-on: [b]\n    - identifier: d\n";
        let (outcomes, order) = run_graph(yaml, 2, false, &[]).await;
        assert!(order.iter().position(|x| x == "a") < order.iter().position(|x| x == "b"));
        assert!(order.iter().position(|x| x == "b") < order.iter().position(|x| x == "c"));
        assert_eq!(status(&outcomes, false), BuildStatus::Succeeded);

        let (outcomes, order) = run_graph(yaml, 2, false, &["b"]).await;
        assert!(!order.contains(&"c".to_string()));
        let c = outcomes
            .iter()
            .find(|o| o.member.identifier == "c")
            .unwrap();
        assert!(c.skipped.as_deref().unwrap().contains("build b"));
        assert_eq!(status(&outcomes, false), BuildStatus::Failed);
    }

    #[tokio::test]
    async fn fast_fail_stops_the_others_and_ignore_failure_does_not_count() {
        let yaml = "  fast-fail: true\n  build-list:\n    - identifier: slow\n    - identifier: bad\n    - identifier: later\n";
        let (outcomes, _) = run_graph(yaml, 2, true, &["bad"]).await;
        let slow = outcomes
            .iter()
            .find(|o| o.member.identifier == "slow")
            .unwrap();
        assert_eq!(slow.summary.as_ref().unwrap().status, BuildStatus::Stopped);
        let later = outcomes
            .iter()
            .find(|o| o.member.identifier == "later")
            .unwrap();
        assert!(later.skipped.as_deref().unwrap().contains("fast-fail"));

        let yaml = "  build-list:\n    - identifier: ok\n    - identifier: bad\n      ignore-failure: true\n";
        let (outcomes, _) = run_graph(yaml, 1, false, &["bad"]).await;
        assert_eq!(status(&outcomes, false), BuildStatus::Succeeded);
    }
}
