//! `dvc-exec executor ...`: configure executors like `dvc remote`.

use serde_json::json;

use super::args::ExecutorCommand;
use super::{cwd, level_of};
use crate::config::keys;
use crate::config::{Config, Level, Paths, display_path, edit};
use crate::error::{Error, Result};
use crate::output::Ui;

fn parse_pairs(settings: &[String]) -> Result<Vec<(String, String)>> {
    settings
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    Error::usage(format!("{s:?} is not KEY=VALUE"))
                        .hint("settings are given as KEY=VALUE, for example host=gpu-box port=2222")
                })
        })
        .collect()
}

/// Run an executor subcommand.
pub fn run(cmd: ExecutorCommand, ui: Ui) -> Result<()> {
    let paths = Paths::discover(&cwd()?);
    match cmd {
        ExecutorCommand::Add {
            default,
            force,
            level,
            name,
            kind,
            settings,
        } => {
            let level = level_of(level).unwrap_or(Level::Repo);
            let pairs = parse_pairs(&settings)?;
            edit::add(&paths, level, &name, &kind, &pairs, default, force)?;
            ui.result(
                json!({"executor": name, "level": level.as_str(), "default": default}),
                &format!(
                    "added executor {name:?} to {}{}",
                    display_path(&paths.exec_file(level).unwrap_or_default()),
                    if default { " as the default" } else { "" }
                ),
            );
        }
        ExecutorCommand::Modify {
            level,
            unset,
            name,
            key,
            value,
        } => {
            let level = level_of(level).unwrap_or(Level::Repo);
            let value = match (unset, value) {
                (true, Some(_)) => {
                    return Err(Error::usage("--unset takes no value")
                        .hint(format!("dvc-exec executor modify --unset {name} {key}")));
                }
                (true, None) => None,
                (false, Some(v)) => Some(v),
                (false, None) => {
                    return Err(
                        Error::usage(format!("no value given for `{key}`")).hint(format!(
                            "dvc-exec executor modify {name} {key} VALUE, or --unset to remove it"
                        )),
                    );
                }
            };
            edit::modify(&paths, level, &name, &key, value.as_deref())?;
            ui.result(
                json!({"executor": name, "key": key, "level": level.as_str(), "unset": unset}),
                "",
            );
        }
        ExecutorCommand::List { show_origin } => list(&paths, show_origin, ui)?,
        ExecutorCommand::Remove { level, name } => {
            let files = edit::remove(&paths, level_of(level), &name)?;
            ui.result(
                json!({"executor": name, "files": files}),
                &format!(
                    "removed executor {name:?} from {}",
                    files
                        .iter()
                        .map(|f| display_path(f))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        ExecutorCommand::Rename { level, old, new } => {
            edit::rename(&paths, level_of(level), &old, &new)?;
            ui.result(json!({"executor": new, "old": old}), "");
        }
        ExecutorCommand::Default { level, unset, name } => match (unset, name) {
            (true, Some(_)) => {
                return Err(
                    Error::usage("--unset takes no name").hint("dvc-exec executor default --unset")
                );
            }
            (true, None) => {
                let level = level_of(level).unwrap_or(Level::Repo);
                edit::set_default(&paths, level, None)?;
                ui.result(json!({"default": null}), "");
            }
            (false, Some(name)) => {
                let level = level_of(level).unwrap_or(Level::Repo);
                edit::set_default(&paths, level, Some(&name))?;
                ui.result(json!({"default": name, "level": level.as_str()}), "");
            }
            (false, None) => {
                let config = Config::load(paths)?;
                match &config.default {
                    Some(d) => {
                        if ui.json {
                            ui.event(json!({"event": "result", "default": d.value, "origin": d.origin.to_string()}));
                        } else {
                            println!("{}", d.value);
                        }
                    }
                    None => {
                        return Err(Error::usage("no default executor is set")
                            .hint("set one: dvc-exec executor default NAME"));
                    }
                }
            }
        },
    }
    Ok(())
}

fn list(paths: &Paths, show_origin: bool, ui: Ui) -> Result<()> {
    let config = Config::load(paths.clone())?;
    let default = config.default.as_ref().map(|d| d.value.clone());
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for name in config.executors.keys() {
        let exec = config.executor(name)?;
        let origin = exec.origin().map(|o| o.to_string()).unwrap_or_default();
        let is_default = default.as_deref() == Some(name.as_str());
        let settings: serde_json::Map<String, serde_json::Value> = exec
            .raw
            .keys
            .iter()
            .map(|(k, s)| {
                let shown = if keys::key(k).is_some_and(|d| d.secret) {
                    "***".to_string()
                } else {
                    s.value.clone()
                };
                (k.clone(), json!(shown))
            })
            .collect();
        items.push(json!({
            "name": name,
            "type": exec.kind.as_str(),
            "default": is_default,
            "origin": origin,
            "legacy": exec.origin().is_some_and(|o| o.legacy),
            "summary": exec.summary(),
            "settings": settings,
        }));
        let mut row = Vec::new();
        if show_origin {
            row.push(origin.clone());
        }
        row.push(name.clone());
        row.push(exec.kind.as_str().to_string());
        let mut summary = exec.summary();
        if exec.origin().is_some_and(|o| o.legacy) {
            summary.push_str(" (DVC machine)");
        }
        if is_default {
            summary.push_str(" (default)");
        }
        row.push(summary);
        rows.push(row);
    }
    if ui.json {
        ui.event(json!({"event": "result", "executors": items}));
        return Ok(());
    }
    super::print_table(&rows);
    Ok(())
}
