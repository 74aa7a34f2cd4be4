//! `batch`: build-list, build-graph, build-matrix and build-fanout.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::Variable;
use super::decode::variables;
use crate::decode::{Decoder, Spanned, join};
use crate::diag::Code;
use crate::yaml::{Node, Value};

#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    /// Stop every running member when one fails.
    pub fast_fail: bool,
    pub kind: BatchKind,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchKind {
    /// Independent builds run in parallel.
    BuildList(Vec<BatchTask>),
    /// Builds that wait for the ones named in `depend-on`.
    BuildGraph(Vec<BatchTask>),
    /// One build per combination of the dynamic values.
    BuildMatrix(Box<BuildMatrix>),
    /// `parallelism` identical builds, each running a shard of the tests.
    BuildFanout(BuildFanout),
}

impl Batch {
    /// The identifiers of the members that run the buildspec holding the batch, for want
    /// of a `buildspec` of their own; `None` for a fan-out, whose members all do.
    pub fn members_without_own_buildspec(&self) -> Option<Vec<&str>> {
        match &self.kind {
            BatchKind::BuildList(tasks) | BatchKind::BuildGraph(tasks) => Some(
                tasks
                    .iter()
                    .filter(|t| t.buildspec.is_none())
                    .map(|t| t.identifier.value.as_str())
                    .collect(),
            ),
            BatchKind::BuildMatrix(matrix) if !matrix.dynamic.buildspec.is_empty() => {
                Some(Vec::new())
            }
            BatchKind::BuildMatrix(_) | BatchKind::BuildFanout(_) => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchTask {
    pub identifier: Spanned<String>,
    pub buildspec: Option<Spanned<String>>,
    pub debug_session: bool,
    pub env: BatchEnv,
    pub ignore_failure: bool,
    pub depend_on: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchEnv {
    pub compute_type: Option<String>,
    pub fleet: Option<String>,
    pub image: Option<String>,
    pub privileged_mode: Option<bool>,
    pub r#type: Option<String>,
    pub variables: Vec<Variable>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildMatrix {
    pub ignore_failure: bool,
    /// Settings shared by every member.
    pub static_env: BatchEnv,
    pub dynamic: MatrixDynamic,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MatrixDynamic {
    pub buildspec: Vec<String>,
    pub compute_type: Vec<String>,
    pub image: Vec<String>,
    /// Variable name → the values it takes, one member per combination.
    pub variables: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct BuildFanout {
    pub parallelism: u32,
    pub ignore_failure: bool,
}

const KINDS: [&str; 4] = ["build-list", "build-graph", "build-matrix", "build-fanout"];
const TASK_KEYS: [&str; 6] = [
    "identifier",
    "buildspec",
    "debug-session",
    "env",
    "ignore-failure",
    "depend-on",
];
const ENV_KEYS: [&str; 6] = [
    "compute-type",
    "fleet",
    "image",
    "privileged-mode",
    "type",
    "variables",
];

pub(super) fn decode_batch(d: &mut Decoder<'_>, node: &Node) -> Option<Batch> {
    let mut known = vec!["fast-fail"];
    known.extend(KINDS);
    let fields = d.fields(node, "batch", &known)?;
    let fast_fail = d.opt_bool(&fields, "fast-fail", "batch").unwrap_or(false);
    let present: Vec<&str> = KINDS
        .into_iter()
        .filter(|k| fields.get(k).is_some())
        .collect();
    let Some(&first) = present.first() else {
        d.diags.error(
            Code::InvalidBatch,
            fields.key_span("fast-fail").unwrap_or(node.span),
            "`batch` defines no builds",
            "add one of `build-list`, `build-graph`, `build-matrix` or `build-fanout`",
        );
        return None;
    };
    for extra in &present[1..] {
        let span = fields.key_span(extra).unwrap_or(node.span);
        d.diags.error(
            Code::InvalidBatch,
            span,
            format!("`batch` has both `{first}` and `{extra}`"),
            "a batch is of one type: keep one of them",
        );
    }
    let body = fields.get(first)?;
    let path = join("batch", first);
    let kind = match first {
        "build-list" => BatchKind::BuildList(decode_tasks(d, body, &path, false)?),
        "build-graph" => BatchKind::BuildGraph(decode_tasks(d, body, &path, true)?),
        "build-matrix" => BatchKind::BuildMatrix(Box::new(decode_matrix(d, body, &path)?)),
        _ => BatchKind::BuildFanout(decode_fanout(d, body, &path)?),
    };
    Some(Batch { fast_fail, kind })
}

fn decode_tasks(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    graph: bool,
) -> Option<Vec<BatchTask>> {
    let Value::Seq(items) = &node.value else {
        d.wrong_type(
            node,
            path,
            "a list of tasks",
            "write each task as `- identifier: NAME`",
        );
        return None;
    };
    if items.is_empty() {
        d.diags.error(
            Code::InvalidBatch,
            node.span,
            format!("`{path}` has no tasks"),
            "add at least one `- identifier: NAME` task",
        );
    }
    let mut tasks = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in items {
        let task_path = format!("{path}[]");
        let Some(fields) = d.fields(item, &task_path, &TASK_KEYS) else {
            continue;
        };
        let Some(identifier) = d.opt_string(&fields, "identifier", &task_path) else {
            d.diags.error(
                Code::MissingField,
                item.span,
                format!("a task in `{path}` has no `identifier`"),
                "give every task `identifier: NAME`, unique in the batch",
            );
            continue;
        };
        if let Some(line) = seen.get(identifier.as_str()) {
            d.diags.error(
                Code::InvalidBatch,
                identifier.span,
                format!(
                    "task identifier `{}` is used twice (first on line {line})",
                    *identifier
                ),
                "give each task its own identifier",
            );
        } else {
            let line = d.diags.source().position(identifier.span.start).line;
            seen.insert(identifier.value.clone(), line);
        }
        let depend_on = match fields.get("depend-on") {
            Some(node) if !graph => {
                d.diags.error(
                    Code::InvalidBatch,
                    node.span,
                    "`depend-on` is only meaningful in a `build-graph`",
                    "use `batch.build-graph` for tasks that wait for others, or remove `depend-on`",
                );
                Vec::new()
            }
            Some(node) => d.string_list(node, &join(&task_path, "depend-on")),
            None => Vec::new(),
        };
        tasks.push(BatchTask {
            buildspec: d.opt_string(&fields, "buildspec", &task_path),
            debug_session: d
                .opt_bool(&fields, "debug-session", &task_path)
                .unwrap_or(false),
            env: fields
                .get("env")
                .map(|n| decode_env(d, n, &join(&task_path, "env")))
                .unwrap_or_default(),
            ignore_failure: d
                .opt_bool(&fields, "ignore-failure", &task_path)
                .unwrap_or(false),
            identifier,
            depend_on,
        });
    }
    if graph {
        check_graph(d, &tasks);
    }
    Some(tasks)
}

/// Every `depend-on` names a task, and no task waits for itself, directly or not.
fn check_graph(d: &mut Decoder<'_>, tasks: &[BatchTask]) {
    let ids: HashSet<&str> = tasks.iter().map(|t| t.identifier.as_str()).collect();
    for task in tasks {
        for dep in &task.depend_on {
            if !ids.contains(dep.as_str()) {
                let hint = match crate::diag::did_you_mean(
                    dep,
                    &ids.iter().copied().collect::<Vec<_>>(),
                ) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => "name the identifier of a task in this build-graph".to_string(),
                };
                d.diags.error(
                    Code::InvalidBatch,
                    dep.span,
                    format!(
                        "`{}` depends on `{}`, which is not a task of this build-graph",
                        *task.identifier, dep.value
                    ),
                    hint,
                );
            }
        }
    }
    // Depth-first search for a cycle; report it once, at the task that closes it.
    let index: HashMap<&str, &BatchTask> =
        tasks.iter().map(|t| (t.identifier.as_str(), t)).collect();
    let mut state: HashMap<&str, u8> = HashMap::new();
    for task in tasks {
        let mut stack: Vec<(&BatchTask, usize)> = vec![(task, 0)];
        if state.contains_key(task.identifier.as_str()) {
            continue;
        }
        state.insert(task.identifier.as_str(), 1);
        while let Some((current, next)) = stack.pop() {
            let Some(dep) = current.depend_on.get(next) else {
                state.insert(current.identifier.as_str(), 2);
                continue;
            };
            stack.push((current, next + 1));
            let Some(&target) = index.get(dep.as_str()) else {
                continue;
            };
            match state.get(target.identifier.as_str()) {
                Some(1) => {
                    let cycle: Vec<&str> = stack
                        .iter()
                        .map(|(t, _)| t.identifier.as_str())
                        .skip_while(|id| *id != target.identifier.as_str())
                        .collect();
                    d.diags.error(
                        Code::InvalidBatch,
                        dep.span,
                        format!(
                            "the build-graph has a cycle: {} -> {}",
                            cycle.join(" -> "),
                            target.identifier.as_str()
                        ),
                        "remove one `depend-on` entry so the tasks can start",
                    );
                    return;
                }
                Some(_) => {}
                None => {
                    state.insert(target.identifier.as_str(), 1);
                    stack.push((target, 0));
                }
            }
        }
    }
}

fn decode_env(d: &mut Decoder<'_>, node: &Node, path: &str) -> BatchEnv {
    let Some(fields) = d.fields(node, path, &ENV_KEYS) else {
        return BatchEnv::default();
    };
    let env = BatchEnv {
        compute_type: d.opt_string(&fields, "compute-type", path).map(|s| s.value),
        fleet: d.opt_string(&fields, "fleet", path).map(|s| s.value),
        image: d.opt_string(&fields, "image", path).map(|s| s.value),
        privileged_mode: d.opt_bool(&fields, "privileged-mode", path),
        r#type: d.opt_string(&fields, "type", path).map(|s| s.value),
        variables: fields
            .get("variables")
            .map(|n| variables(d, n, &join(path, "variables")))
            .unwrap_or_default(),
    };
    if env.compute_type.is_some() && env.fleet.is_some() {
        let span = fields.key_span("fleet").unwrap_or(node.span);
        d.diags.error(
            Code::InvalidBatch,
            span,
            format!("`{path}` sets both `compute-type` and `fleet`"),
            "a build runs either on a compute type or on a fleet: keep one",
        );
    }
    env
}

fn decode_matrix(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<BuildMatrix> {
    let fields = d.fields(node, path, &["static", "dynamic"])?;
    let mut matrix = BuildMatrix::default();
    if let Some(stat) = fields.get("static") {
        let spath = join(path, "static");
        if let Some(sf) = d.fields(stat, &spath, &["ignore-failure", "env"]) {
            matrix.ignore_failure = d.opt_bool(&sf, "ignore-failure", &spath).unwrap_or(false);
            if let Some(env) = sf.get("env") {
                matrix.static_env = decode_env(d, env, &join(&spath, "env"));
            }
        }
    }
    let Some(dynamic) = fields.get("dynamic") else {
        d.diags.error(
            Code::InvalidBatch,
            node.span,
            format!("`{path}` has no `dynamic` section"),
            "list the values to combine under `dynamic` (buildspec, env.image, env.variables…)",
        );
        return None;
    };
    let dpath = join(path, "dynamic");
    let df = d.fields(dynamic, &dpath, &["buildspec", "env"])?;
    matrix.dynamic.buildspec = strings(d, df.get("buildspec"), &join(&dpath, "buildspec"));
    if let Some(env) = df.get("env") {
        let epath = join(&dpath, "env");
        if let Some(ef) = d.fields(env, &epath, &["compute-type", "image", "variables"]) {
            matrix.dynamic.compute_type =
                strings(d, ef.get("compute-type"), &join(&epath, "compute-type"));
            matrix.dynamic.image = strings(d, ef.get("image"), &join(&epath, "image"));
            if let Some(vars) = ef.get("variables") {
                let vpath = join(&epath, "variables");
                if let Some(vf) = d.fields(vars, &vpath, &[]) {
                    for (name, _, values) in vf.iter() {
                        let values = strings(d, Some(values), &join(&vpath, name));
                        matrix.dynamic.variables.push((name.to_string(), values));
                    }
                }
            }
        }
    }
    let dims = [
        matrix.dynamic.buildspec.len(),
        matrix.dynamic.compute_type.len(),
        matrix.dynamic.image.len(),
    ]
    .into_iter()
    .chain(matrix.dynamic.variables.iter().map(|(_, v)| v.len()));
    if dims.into_iter().all(|n| n == 0) {
        d.diags.error(
            Code::InvalidBatch,
            dynamic.span,
            format!("`{dpath}` lists no values to combine"),
            "give at least one of buildspec, env.compute-type, env.image or env.variables a list of values",
        );
    }
    Some(matrix)
}

fn strings(d: &mut Decoder<'_>, node: Option<&Node>, path: &str) -> Vec<String> {
    node.map(|n| {
        d.string_list(n, path)
            .into_iter()
            .map(|s| s.value)
            .collect()
    })
    .unwrap_or_default()
}

fn decode_fanout(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<BuildFanout> {
    let fields = d.fields(node, path, &["parallelism", "ignore-failure"])?;
    let Some(parallelism) = fields.get("parallelism") else {
        d.diags.error(
            Code::MissingField,
            node.span,
            format!("`{path}` has no `parallelism`"),
            "set `parallelism: N`, the number of builds to split the tests across",
        );
        return None;
    };
    let parallelism = d.number(
        parallelism,
        &join(path, "parallelism"),
        (1, 100),
        "set how many builds share the tests, e.g. `parallelism: 5`",
    )?;
    Some(BuildFanout {
        parallelism: u32::try_from(parallelism).ok()?,
        ignore_failure: d.opt_bool(&fields, "ignore-failure", path).unwrap_or(false),
    })
}
