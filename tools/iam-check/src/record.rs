//! Recording: which file a process's calls go to (a function's own, or the policy a CLI command needs), where the
//! tables, queues and functions of its calls came from, and appending them as JSON lines. The recording proxies that
//! use this sit in front of the local stack's endpoints (`devstack::iam`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::identify::Call;

/// The test process's variable naming the directory the calls are recorded in.
pub const RECORD_VAR: &str = "FLEET_IAM_RECORD";

/// The recording of the CLI's read-only commands, held against both operator policies.
pub const CLI_READONLY: &str = "shadow-fleet-readonly";
/// The recording of the commands that start or steer pushes, held against the operator policy.
pub const CLI_OPERATOR: &str = "shadow-fleet-operator";
/// A command [`cli_recording`] does not know: no policy holds it, so `iam-check` reports its calls.
pub const CLI_UNCLASSIFIED: &str = "shadow-fleet-unclassified";

/// The policy a `shadow-fleet` command needs, as the name of the recording its calls go to: [`CLI_READONLY`] for
/// `history`, `shadow get`, `push show|list|watch`; [`CLI_OPERATOR`] for `push start|pause|resume|abort`.
pub fn cli_recording(args: &[&str]) -> &'static str {
    let mut words = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            // The global options that take a value.
            "--output" | "--stack" | "--profile" | "--region" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            word => words.push(word),
        }
        if words.len() == 2 {
            break;
        }
    }
    match words.as_slice() {
        ["history" | "drift", ..] | ["shadow", "get" | "diff"] | ["push", "show" | "list" | "watch"] => CLI_READONLY,
        ["push", "start" | "pause" | "resume" | "abort"] | ["dlq", "list" | "replay"] => CLI_OPERATOR,
        _ => CLI_UNCLASSIFIED,
    }
}

/// A process's environment, value -> the variables holding it, and the outputs of the stacks it described: where
/// the tables, queues and functions of its calls came from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    vars: HashMap<String, Vec<String>>,
}

impl Sources {
    /// The variables of `effective` (everything the process sees) that could name a resource: not the SDK's own
    /// `AWS_*` settings, not [`RECORD_VAR`], nothing empty.
    pub fn of_env(effective: &BTreeMap<String, String>) -> Self {
        let mut vars: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in effective {
            if !name.starts_with("AWS_") && name != RECORD_VAR && !value.is_empty() {
                vars.entry(value.clone()).or_default().push(name.clone());
            }
        }
        Self { vars }
    }

    /// The variables whose value is `value` (a query-protocol queue may show only as the URL's path).
    pub fn of(&self, value: &str) -> Vec<String> {
        let sources = &self.vars;
        let mut vars: Vec<String> = sources.get(value).cloned().unwrap_or_default();
        if vars.is_empty() && value.starts_with('/') && value.len() > 1 {
            vars = sources
                .iter()
                .filter(|(v, _)| v.ends_with(value) && v.contains("://"))
                .flat_map(|(_, vars)| vars.iter().cloned())
                .collect();
        }
        vars.sort();
        vars.dedup();
        vars
    }

    /// Sets each call's `from`: the variables its table, queue or function came from.
    pub fn trace(&self, calls: &mut [Call]) {
        for call in calls {
            if let Some(name) = call.table.as_deref().or(call.queue_url.as_deref()).or(call.function.as_deref()) {
                call.from = self.of(name);
            }
        }
    }

    /// `--stack NAME`: the CLI takes its tables and function from the stack's outputs; later calls on them are
    /// traced to the template's resources through the outputs' names. `xml` is a DescribeStacks answer.
    pub fn learn_stack_outputs(&mut self, xml: &str) {
        for (value, key) in stack_outputs(xml) {
            let keys = self.vars.entry(value).or_default();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
}

/// The outputs in a DescribeStacks answer (query protocol XML): value -> key.
pub fn stack_outputs(xml: &str) -> Vec<(String, String)> {
    let element = |text: &str, name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = start + text[start..].find(&format!("</{name}>"))?;
        let value = &text[start..end];
        Some(
            value
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        )
    };
    xml.split("<member>")
        .filter_map(|member| Some((element(member, "OutputValue")?, element(member, "OutputKey")?)))
        .collect()
}

/// One writer at a time in this process; `O_APPEND` and one write per request keep lines whole across processes.
static APPEND: Mutex<()> = Mutex::new(());

/// The file `<dir>/<name>.jsonl` that one process's calls (or one CLI policy's) are appended to, a [`Call`] a line.
#[derive(Debug, Clone)]
pub struct CallLog {
    file: PathBuf,
}

impl CallLog {
    pub fn new(dir: &Path, name: &str) -> Self {
        Self { file: dir.join(format!("{name}.jsonl")) }
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Appends `calls`, one line each, in one write.
    pub fn append(&self, calls: &[Call]) -> std::io::Result<()> {
        let mut lines = String::new();
        for call in calls {
            lines.push_str(&serde_json::to_string(call)?);
            lines.push('\n');
        }
        let _one_writer = APPEND.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.file)?;
        file.write_all(lines.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_commands_are_filed_under_the_policy_they_need() {
        for (args, expected) in [
            (&["history", "dev", "--shadow", "cfg"][..], CLI_READONLY),
            (&["--output", "json", "shadow", "get", "t1"], CLI_READONLY),
            (&["push", "show", "p1", "--failures"], CLI_READONLY),
            (&["--stack", "push", "push", "list", "--since", "1h"], CLI_READONLY),
            (&["push", "--output", "json", "watch", "p1"], CLI_READONLY),
            (&["push", "start", "request.json", "--wait"], CLI_OPERATOR),
            (&["--stack", "fleet", "push", "pause", "p1"], CLI_OPERATOR),
            (&["push", "resume", "p1"], CLI_OPERATOR),
            (&["push", "abort", "p1", "--rollback"], CLI_OPERATOR),
            (&["dlq", "list", "--function", "history"], CLI_OPERATOR),
            (&["--stack", "s", "dlq", "replay", "--function", "push"], CLI_OPERATOR),
            // A command nobody has classified yet: its calls are held against no policy, and iam-check says so.
            (&["push", "frobnicate"], CLI_UNCLASSIFIED),
            (&["drift", "--group", "prod", "--shadow", "cfg"], CLI_READONLY),
            (&["--region", "eu-west-1", "--profile", "ops", "push", "abort", "p1"], CLI_OPERATOR),
            (&["shadow", "frobnicate"], CLI_UNCLASSIFIED),
            (&["--help"], CLI_UNCLASSIFIED),
        ] {
            assert_eq!(cli_recording(args), expected, "{args:?}");
        }
    }
}
