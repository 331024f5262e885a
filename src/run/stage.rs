//! `dvc-exec stage -e EXECUTOR -- CMD ARGS...`: one stage of a pipeline on an executor.
//!
//! It is meant as a stage's `cmd` in dvc.yaml. DVC runs the pipeline here as usual and calls
//! it with `DVC_ROOT` and `DVC_STAGE` set; dvc-exec finds the stage in dvc.yaml (plain,
//! `foreach` and `matrix` stages, `wdir`, params files), mirrors its deps and params files into a
//! per-project stage workspace on the executor (rsync's delta transfer: a re-run sends only what
//! changed), runs CMD there in the stage's working directory with its output streamed live, and
//! brings its outs, metrics and plots back before exiting with CMD's exit code. DVC then hashes
//! and caches the outputs as for any local stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::{Config, Paths};
use crate::error::{Error, Result};
use crate::output::Ui;
use crate::provider;
use crate::transport::Transport;

use super::git::Repo;
use super::state::{self, RunRecord};

/// A stage's files, as paths relative to `DVC_ROOT`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StageFiles {
    /// The stage's working directory.
    pub wdir: String,
    /// Dependencies and params files: sent to the executor.
    pub inputs: Vec<String>,
    /// Outs, metrics and plots: brought back.
    pub outputs: Vec<String>,
}

fn to_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

fn is_composite(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Object(_))
}

/// Resolve `${...}` in a string against the context.
fn interpolate(text: &str, ctx: &Value) -> Result<Value> {
    let lookup = |expr: &str| -> Result<Value> {
        let mut cur = ctx;
        for part in expr.trim().split('.') {
            cur = match cur {
                Value::Object(m) => m.get(part),
                Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            }
            .ok_or_else(|| {
                Error::usage(format!("cannot resolve ${{{expr}}} in dvc.yaml"))
                    .hint("dvc-exec stage resolves ${item}, ${key}, vars and params.yaml values")
            })?;
        }
        Ok(cur.clone())
    };
    let t = text.trim();
    if t.starts_with("${") && t.ends_with('}') && t.matches("${").count() == 1 {
        return lookup(&t[2..t.len() - 1]);
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .ok_or_else(|| Error::usage(format!("unclosed ${{ in {text:?} in dvc.yaml")))?;
        out.push_str(&to_str(&lookup(&rest[i + 2..i + end])?));
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

fn resolve(v: &Value, ctx: &Value) -> Result<Value> {
    Ok(match v {
        Value::String(s) if s.contains("${") => interpolate(s, ctx)?,
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve(x, ctx)).collect::<Result<_>>()?),
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let k = if k.contains("${") {
                    to_str(&interpolate(k, ctx)?)
                } else {
                    k.clone()
                };
                out.insert(k, resolve(x, ctx)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// The paths named by a list of deps, outs, metrics or plots entries.
fn entry_paths(v: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    for item in v.and_then(Value::as_array).into_iter().flatten() {
        match item {
            Value::String(s) => out.push(s.clone()),
            Value::Object(m) => out.extend(m.keys().cloned()),
            _ => {}
        }
    }
    out
}

fn norm(base: &str, p: &str) -> String {
    let joined = if base.is_empty() || base == "." {
        p.to_string()
    } else {
        format!("{base}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            x => parts.push(x),
        }
    }
    parts.join("/")
}

/// Find stage `address` (`name`, `name@key`, `dir/dvc.yaml:name`) under `root`.
pub fn find_stage(root: &Path, address: &str) -> Result<StageFiles> {
    let (file, name) = match address.rsplit_once(':') {
        Some((f, n)) => (f.to_string(), n.to_string()),
        None => ("dvc.yaml".to_string(), address.to_string()),
    };
    let yaml_dir = Path::new(&file)
        .parent()
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_default();
    let path = root.join(&file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::usage(format!("cannot read {}", path.display())).source(e))?;
    let doc: Value = serde_saphyr::from_str(&text).map_err(|e| {
        Error::usage(format!("cannot parse {}", path.display()))
            .source(std::io::Error::other(e.to_string()))
    })?;
    let (group, key) = match name.rsplit_once('@') {
        Some((g, k)) => (g.to_string(), Some(k.to_string())),
        None => (name.clone(), None),
    };
    let def = doc
        .get("stages")
        .and_then(|s| s.get(&group))
        .ok_or_else(|| Error::usage(format!("no stage {group:?} in {}", path.display())))?;

    // The interpolation context: vars, then the default params file.
    let mut ctx = serde_json::Map::new();
    let params_path = root.join(&yaml_dir).join("params.yaml");
    if let Ok(t) = std::fs::read_to_string(&params_path)
        && let Ok(Value::Object(m)) = serde_saphyr::from_str::<Value>(&t)
    {
        ctx.extend(m);
    }
    for v in doc
        .get("vars")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Value::Object(m) = v {
            ctx.extend(m.clone());
        }
    }

    let body = match (def.get("foreach"), def.get("matrix"), &key) {
        (Some(iterable), _, Some(key)) => {
            let iterable = resolve(iterable, &Value::Object(ctx.clone()))?;
            let items: BTreeMap<String, Value> = match &iterable {
                Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                Value::Array(a) if a.iter().any(is_composite) => a
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i.to_string(), v.clone()))
                    .collect(),
                Value::Array(a) => a.iter().map(|v| (to_str(v), v.clone())).collect(),
                _ => BTreeMap::new(),
            };
            let item = items.get(key).ok_or_else(|| {
                Error::usage(format!("no item {key:?} in the foreach of stage {group:?}"))
            })?;
            ctx.insert("item".into(), item.clone());
            ctx.insert("key".into(), Value::String(key.clone()));
            resolve(def.get("do").unwrap_or(&Value::Null), &Value::Object(ctx))?
        }
        (_, Some(matrix), Some(key)) => {
            let matrix = resolve(matrix, &Value::Object(ctx.clone()))?;
            let Value::Object(axes) = matrix else {
                return Err(Error::usage(format!(
                    "the matrix of stage {group:?} is not a mapping"
                )));
            };
            let mut combos: Vec<(Vec<String>, serde_json::Map<String, Value>)> =
                vec![(Vec::new(), serde_json::Map::new())];
            for (k, values) in &axes {
                let values = values.as_array().cloned().unwrap_or_default();
                let mut next = Vec::new();
                for (frags, d) in &combos {
                    for (i, v) in values.iter().enumerate() {
                        let mut f = frags.clone();
                        f.push(if is_composite(v) {
                            format!("{k}{i}")
                        } else {
                            to_str(v)
                        });
                        let mut d = d.clone();
                        d.insert(k.clone(), v.clone());
                        next.push((f, d));
                    }
                }
                combos = next;
            }
            let item = combos
                .into_iter()
                .find(|(f, _)| f.join("-") == *key)
                .map(|(_, d)| d)
                .ok_or_else(|| {
                    Error::usage(format!(
                        "no combination {key:?} in the matrix of stage {group:?}"
                    ))
                })?;
            ctx.insert("item".into(), Value::Object(item));
            resolve(def, &Value::Object(ctx))?
        }
        _ => resolve(def, &Value::Object(ctx))?,
    };

    let wdir = norm(
        &yaml_dir,
        body.get("wdir").and_then(Value::as_str).unwrap_or("."),
    );
    let mut inputs: Vec<String> = entry_paths(body.get("deps"))
        .iter()
        .map(|p| norm(&wdir, p))
        .collect();
    // Params: a bare key reads params.yaml; {file: [keys]} reads that file.
    for p in body
        .get("params")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match p {
            Value::String(_) => inputs.push(norm(&wdir, "params.yaml")),
            Value::Object(m) => inputs.extend(m.keys().map(|f| norm(&wdir, f))),
            _ => {}
        }
    }
    inputs.sort();
    inputs.dedup();
    let mut outputs: Vec<String> = ["outs", "metrics", "plots"]
        .iter()
        .flat_map(|k| entry_paths(body.get(*k)))
        .map(|p| norm(&wdir, &p))
        .collect();
    outputs.sort();
    outputs.dedup();
    Ok(StageFiles {
        wdir,
        inputs,
        outputs,
    })
}

/// Run `cmd` as the current DVC stage on `executor` (or the default executor); returns CMD's
/// exit code.
pub async fn run_stage(executor: Option<String>, cmd: Vec<String>, ui: Ui) -> Result<i32> {
    crate::interrupt::listen();
    let root = std::env::var_os("DVC_ROOT").map(PathBuf::from).ok_or_else(|| {
        Error::usage("dvc-exec stage runs as a stage's cmd in dvc.yaml, where DVC sets DVC_ROOT and DVC_STAGE")
            .hint("in dvc.yaml: cmd: dvc-exec stage -e EXECUTOR -- python train.py")
    })?;
    let address = std::env::var("DVC_STAGE").map_err(|_| {
        Error::usage("DVC_STAGE is not set").hint("run dvc-exec stage as a stage's cmd in dvc.yaml")
    })?;
    if cmd.is_empty() {
        return Err(
            Error::usage("no command given").hint("dvc-exec stage -e EXECUTOR -- python train.py")
        );
    }
    let files = find_stage(&root, &address)?;
    let paths = Paths::discover(&root);
    let config = Config::load(paths)?;
    let name = match executor {
        Some(n) => n,
        None => config.default_name()?.to_string(),
    };
    let exec = config.executor(&name)?;
    let repo = Repo::open(&root)?;
    let project = super::project_id(&repo, &root)?;
    let ctx = provider::Context {
        project: project.clone(),
        owner: provider::cloud::owner(),
        root: root.clone(),
    };
    let provider = provider::for_executor(&exec, &ctx)?;
    let run_id = state::new_run_id();
    let machine = provider.acquire(&run_id, &ui).await?;
    let result = async {
        let mut transport = Transport::connect(&machine.address).await?;
        let setup = super::setup_script_text(&exec)?;
        let prep = transport
            .helper_ok(
                "checking the executor",
                &[
                    "prepare".into(),
                    exec.workdir.clone().unwrap_or_else(|| "~/.dvc-exec".into()),
                    project.clone(),
                    exec.dvc.clone(),
                    setup.clone(),
                ],
            )
            .await?;
        let workdir = prep.get("workdir").unwrap_or_default().to_string();
        // A workspace per project and stage, kept between runs so rsync sends only changes.
        let ws_rel = format!("stages/{project}/{}", address.replace(['/', ':'], "_"));
        let ws = PathBuf::from(format!("{workdir}/{ws_rel}"));
        // As DVC does before running a stage: no output from an earlier run is left.
        let mut args = vec!["remove-paths".to_string(), ws.display().to_string()];
        args.extend(files.outputs.iter().cloned());
        transport.helper_ok("preparing the stage's workspace", &args).await?;
        ui.phase("sync", &format!("sending {} inputs of stage {address} to {}", files.inputs.len(), exec.name));
        transport.mirror_paths(true, &root, &ws, &files.inputs).await?;
        let cwd = if files.wdir.is_empty() { ws_rel.clone() } else { format!("{ws_rel}/{}", files.wdir) };
        let mut args = vec![
            "exec-start".to_string(),
            workdir.clone(),
            run_id.clone(),
            cwd,
            setup,
        ];
        let env = super::run_env(&exec, machine.slot);
        args.push(env.len().to_string());
        args.extend(env);
        args.push("--".into());
        args.extend(cmd.iter().cloned());
        transport.helper_ok("starting the stage", &args).await?;
        let mut record = RunRecord {
            id: run_id.clone(),
            executor: exec.name.clone(),
            machine: machine.id.clone(),
            project_root: root.clone(),
            workdir: workdir.clone(),
            project: project.clone(),
            mode: "stage".into(),
            dvc_args: cmd.clone(),
            base: String::new(),
            snapshot: String::new(),
            apply: false,
            state: "running".into(),
            started: state::now(),
            exit_code: None,
            name: None,
            ended: None,
        };
        ui.phase("run", &format!("stage {address} is running on {}", exec.name));
        let ended = tokio::select! {
            r = super::follow(&mut transport, &*provider, &machine, &record, &ui) => r?,
            _ = crate::interrupt::after(0) => {
                let a: Vec<String> = vec!["cancel".into(), workdir.clone(), run_id.clone(), "10".into()];
                let _ = transport.helper(&a).await;
                let _ = transport.helper(&["cleanup".into(), workdir.clone(), run_id.clone()]).await;
                return Err(Error::interrupted(format!("stopped stage {address} on {}", exec.name)));
            }
        };
        record.exit_code = Some(ended.code);
        if ended.code == 0 {
            ui.phase("fetch", &format!("bringing back {} outputs", files.outputs.len()));
            transport.mirror_paths(false, &ws, &root, &files.outputs).await?;
        }
        let _ = transport.helper(&["cleanup".into(), workdir.clone(), run_id.clone()]).await;
        transport.close().await;
        Ok(ended.code)
    }
    .await;
    super::release(&*provider, &machine, &ui).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("dvc.yaml"), yaml).unwrap();
        std::fs::write(d.path().join("params.yaml"), "model:\n  dir: models\n").unwrap();
        d
    }

    #[test]
    fn plain_stage_with_wdir_and_params() {
        let d = project(
            "stages:\n  train:\n    wdir: src\n    cmd: python t.py\n    deps: [t.py, ../data]\n    params: [lr, {../conf.yaml: [x]}]\n    outs: [../model.bin]\n    metrics: [{../m.json: {cache: false}}]\n",
        );
        let f = find_stage(d.path(), "train").unwrap();
        assert_eq!(f.wdir, "src");
        assert_eq!(
            f.inputs,
            ["conf.yaml", "data", "src/params.yaml", "src/t.py"]
        );
        assert_eq!(f.outputs, ["m.json", "model.bin"]);
    }

    #[test]
    fn foreach_and_matrix_stages() {
        let d = project(
            "stages:\n  build:\n    foreach: [us, uk]\n    do:\n      cmd: make ${item}\n      deps:\n      - src/${item}.c\n      outs:\n      - out/${item}\n  fit:\n    matrix:\n      lr: [0.1, 0.2]\n      opt: [adam]\n    cmd: fit\n    deps:\n    - ${model.dir}/base\n    outs:\n    - res/${item.lr}-${item.opt}\n",
        );
        let f = find_stage(d.path(), "build@uk").unwrap();
        assert_eq!(f.inputs, ["src/uk.c"]);
        assert_eq!(f.outputs, ["out/uk"]);
        let f = find_stage(d.path(), "fit@0.2-adam").unwrap();
        assert_eq!(f.inputs, ["models/base"]);
        assert_eq!(f.outputs, ["res/0.2-adam"]);
        assert!(find_stage(d.path(), "build@fr").is_err());
        assert!(find_stage(d.path(), "nope").is_err());
    }
}
