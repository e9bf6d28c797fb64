//! `perturb train --checkpoint-dir / --resume` on the command line: the training flags a
//! checkpoint saves, and the plan of a run: a fresh run's checkpoint folder must be free; a
//! resumed run takes its checkpoint's training flags and refuses a given flag that differs.

use super::{TrainArgs, TrainFlags};
use crate::{Error, Result};
use clap::{Args, FromArgMatches, ValueEnum};
use perturb_adv::training::Checkpointing;
use perturb_nn::Checkpoint;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a run does: its effective flags (a resumed run's come from its checkpoint), the
/// checkpoint it resumes, where it writes checkpoints.
pub(super) struct Plan {
    pub flags: TrainFlags,
    pub resume: Option<Checkpoint>,
    pub checkpoint: Option<Checkpointing>,
}

/// The flags that decide the weights a run ends with, by clap id (the field name; the flag is
/// `--` and the id with `-` for `_`), as text; `None` values are left out. A checkpoint saves
/// them and a resume compares the given ones with them. Not here: `--out`, `--backend`,
/// `--threads`, `--json`, `--test-limit` and the checkpoint flags, which a resume may change.
pub(super) fn training_flags(f: &TrainFlags) -> BTreeMap<&'static str, String> {
    fn name<T: ValueEnum>(v: &T) -> String {
        v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
    }
    fn list<T: ToString>(v: &[T]) -> String {
        v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
    }
    let (m, d) = (&f.method, &f.data);
    let mut out = BTreeMap::from([
        ("model", f.model.clone()),
        ("epochs", f.epochs.to_string()),
        ("batch_size", f.batch_size.to_string()),
        ("optimizer", name(&f.optimizer)),
        ("lr", f.lr.to_string()),
        ("momentum", f.momentum.to_string()),
        ("weight_decay", f.weight_decay.to_string()),
        ("nesterov", f.nesterov.to_string()),
        ("betas", list(&f.betas)),
        ("schedule", name(&f.schedule)),
        ("step_every", f.step_every.to_string()),
        ("gamma", f.gamma.to_string()),
        ("seed", f.seed.to_string()),
        ("method", m.method.name().to_string()),
        ("eps", m.eps.to_string()),
        ("mix", m.mix.to_string()),
        ("lambda", m.lambda.to_string()),
        ("pgd_steps", m.pgd_steps.to_string()),
        ("sg_eps", m.sg_eps.to_string()),
        ("stop_on_overfit", m.stop_on_overfit.to_string()),
        ("monitor_examples", m.monitor_examples.to_string()),
        ("monitor_steps", m.monitor_steps.to_string()),
        ("eps_warmup", m.eps_warmup.to_string()),
        ("dataset", name(&d.dataset)),
    ]);
    let optional = [
        ("alpha", m.alpha.map(|v| v.to_string())),
        ("rs_step", m.rs_step.map(|v| v.to_string())),
        ("pgd_step_size", m.pgd_step_size.map(|v| v.to_string())),
        ("sg_layers", m.sg_layers.as_deref().map(list)),
        ("data", d.data.as_ref().map(|p| p.to_string_lossy().into_owned())),
        ("classes", d.classes.as_deref().map(list)),
        ("train_limit", d.train_limit.map(|v| v.to_string())),
    ];
    out.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    out
}

/// The flags a checkpoint saved, parsed back by clap as if typed (so every default and check
/// is the command line's own).
fn parse_training_flags(saved: &BTreeMap<String, String>) -> std::result::Result<TrainFlags, clap::Error> {
    let mut argv = Vec::new();
    for (id, v) in saved {
        let flag = flag_name(id);
        if id == "stop_on_overfit" {
            if v == "true" {
                argv.push(flag);
            }
        } else {
            // `--flag=value`, so a value starting with '-' is not read as a flag.
            argv.push(format!("{flag}={v}"));
        }
    }
    let cmd = TrainFlags::augment_args(clap::Command::new("train").no_binary_name(true));
    TrainFlags::from_arg_matches(&cmd.try_get_matches_from(argv)?)
}

fn flag_name(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// A fresh run: checks that its checkpoint folder is free. A resume: reads the checkpoint,
/// refuses given flags that differ from its saved ones, and takes those.
pub(super) fn plan(args: &TrainArgs) -> Result<Plan> {
    let command = |flags: &TrainFlags, every: u64| json!({"flags": training_flags(flags), "checkpoint_every": every, "perturb": env!("CARGO_PKG_VERSION")});
    let Some(from) = &args.resume else {
        if let Some(dir) = &args.checkpoint_dir {
            refuse_occupied(dir)?;
        }
        let checkpoint = args.checkpoint_dir.clone().map(|dir| Checkpointing {
            dir,
            every: args.checkpoint_every,
            command: command(&args.flags, args.checkpoint_every),
        });
        return Ok(Plan { flags: args.flags.clone(), resume: None, checkpoint });
    };
    let ck = Checkpoint::read(from)?;
    let file = ck.source.clone().unwrap_or_else(|| Checkpoint::resolve(from));
    let bad = |msg: String| Error::flag("--resume", format!("{}: {msg}", file.display()));
    let cmd = ck.config.get("command").filter(|c| !c.is_null()).ok_or_else(|| {
        bad("the checkpoint was not written by `perturb train` (no command-line flags in its configuration)".into())
    })?;
    let saved: BTreeMap<String, String> = cmd
        .get("flags")
        .cloned()
        .and_then(|f| serde_json::from_value(f).ok())
        .ok_or_else(|| bad("the checkpoint's saved flags are not a map of flag to value".into()))?;
    let now = training_flags(&args.flags);
    let ids: BTreeSet<&str> = now.keys().copied().chain(saved.keys().map(String::as_str)).collect();
    let conflicts: Vec<String> = ids
        .into_iter()
        .filter(|id| args.given.contains(*id))
        .filter(|id| now.get(id) != saved.get(*id))
        .map(|id| {
            let given = now.get(id).map_or("(none)".to_string(), |v| v.clone());
            let had = saved.get(id).map_or("the default".to_string(), |v| format!("{} {v}", flag_name(id)));
            format!("{} {given} (the checkpoint has {had})", flag_name(id))
        })
        .collect();
    if !conflicts.is_empty() {
        return Err(bad(format!(
            "this command's training flags differ from the checkpoint's: {}. A resumed run keeps the flags it was \
             started with: drop these, or start a new run in another --checkpoint-dir",
            conflicts.join("; ")
        )));
    }
    let mut flags = parse_training_flags(&saved).map_err(|e| bad(format!("the saved flags do not parse: {e}")))?;
    // What a resume may change.
    flags.out = args.out.clone();
    flags.backend = args.backend;
    flags.json = args.json;
    flags.data.test_limit = args.data.test_limit;
    flags.resume = args.resume.clone();
    let every = match cmd.get("checkpoint_every").and_then(|v| v.as_u64()) {
        Some(saved) if !args.given.contains("checkpoint_every") => saved,
        _ => args.checkpoint_every,
    };
    let same_dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let same = |d: &Path| {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        canon(&Checkpoint::resolve(d)) == canon(&file)
    };
    let dir = match &args.checkpoint_dir {
        Some(d) if !same(d) => {
            refuse_occupied(d)?;
            d.clone()
        }
        _ => same_dir,
    };
    flags.checkpoint_dir = Some(dir.clone());
    flags.checkpoint_every = every;
    let checkpoint = Some(Checkpointing { dir, every, command: command(&flags, every) });
    Ok(Plan { flags, resume: Some(ck), checkpoint })
}

/// A fresh run would overwrite the checkpoint of another run: refused.
fn refuse_occupied(dir: &Path) -> Result<()> {
    if !Checkpoint::exists_in(dir) {
        return Ok(());
    }
    let what = match Checkpoint::read(dir) {
        Ok(c) => format!(
            "after step {} of {}",
            c.state.get("step").and_then(|v| v.as_u64()).unwrap_or(0),
            c.state.get("total_steps").and_then(|v| v.as_u64()).unwrap_or(0)
        ),
        Err(e) => format!("unreadable: {e}"),
    };
    Err(Error::flag(
        "--checkpoint-dir",
        format!(
            "{} already holds a checkpoint ({what}); continue that run with --resume {}, or give another folder",
            Checkpoint::file_in(dir).display(),
            dir.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(line: &str) -> TrainArgs {
        let argv = std::iter::once("perturb").chain(line.split_whitespace());
        match crate::Cli::try_parse_from(argv).expect("parses").command {
            crate::Command::Train(a) => a,
            other => panic!("not train: {other:?}"),
        }
    }

    #[test]
    fn saved_flags_parse_back_to_the_same_flags() {
        let a = args(
            "train --model mlp --lr 1e30 --betas 0.8,0.99 --nesterov false --method pgd --alpha 0.05 \
             --lambda=-1 --sg-layers 1,3 --classes 3,7 --train-limit 300 --stop-on-overfit --data /tmp/x",
        );
        let saved: BTreeMap<String, String> = training_flags(&a).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let back = parse_training_flags(&saved).expect("parses back");
        assert_eq!(training_flags(&back), training_flags(&a));
        assert_eq!((back.lr, back.nesterov, back.method.lambda), (1e30, false, -1.0));
        assert!(back.method.stop_on_overfit && back.data.classes == Some(vec![3, 7]));
        // Defaults stay defaults (absent optional values are absent).
        let d = args("train");
        let saved: BTreeMap<String, String> = training_flags(&d).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert!(!saved.contains_key("alpha") && !saved.contains_key("data"));
        assert_eq!(training_flags(&parse_training_flags(&saved).expect("parses")), training_flags(&d));
    }

    #[test]
    fn only_flags_given_on_the_command_line_count_as_given() {
        let a = args("train --lr 0.1 --epochs 3 --method fgsm --json");
        let given: Vec<&str> = a.given.iter().map(String::as_str).collect();
        assert_eq!(given, ["epochs", "json", "lr", "method"]);
        assert_eq!(a.batch_size, 16, "defaults still fill the flags");
    }
}
