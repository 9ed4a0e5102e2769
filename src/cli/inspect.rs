//! `kpilot inspect`: reads the cluster's facts, picks the catalog checks that
//! apply, runs them as an ordinary persisted run and prints the report.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kpilot_catalog::applies::{kube_version, ClusterType, Scenario};
use kpilot_catalog::{build, select, Catalog, Facts, ReportSpec};

use super::run::{drive_new, NewRun};
use super::{print_warnings, regular_file, ClusterArgs, StateArgs, Usage};
use crate::Exit;

/// How `inspect` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum InspectFormat {
    /// The report for people.
    #[default]
    Text,
    /// The report as JSON (docs/reports.md).
    Json,
    /// With --dry-run: the workflow it would run.
    Yaml,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// upgrade (= upgrade-pre), upgrade-pre, upgrade-post or patrol.
    #[arg(long, value_name = "SCENARIO")]
    scenario: String,
    /// The upgrade target, like 1.16 (upgrade scenarios).
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
    /// managed, self-hosted, serverless, edge or gpu [default: the report's, else self-hosted].
    #[arg(long, value_name = "TYPE")]
    cluster_type: Option<String>,
    /// A `kind: Report` file: which checks, severities, params, own checks.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Manifest files or directories to check for removed APIs (repeatable).
    #[arg(long = "manifests", value_name = "PATH")]
    manifests: Vec<PathBuf>,
    /// Extra API-version rows in pluto's versions.yaml format (repeatable).
    #[arg(long = "api-versions", value_name = "FILE")]
    api_versions: Vec<PathBuf>,
    /// Extra annotation keys that hold an object's applied manifest (repeatable).
    #[arg(long = "annotation", value_name = "KEY")]
    annotations: Vec<String>,
    /// Read no cluster: run only the checks that need none (manifests, commands, agents).
    #[arg(long)]
    no_cluster: bool,
    /// Inventory of node agents: the node checks run on them.
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// Print the workflow it would run (`-o yaml`) and the checks left out, and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// The run's id [default: inspect-SCENARIO, the time and a random suffix].
    #[arg(long)]
    run_id: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: InspectFormat,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// The cluster could not be read, so nothing can be selected by its version:
/// exit 3, like a check that could not read its data.
#[derive(Debug)]
pub struct Unreadable(pub String);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreadable {}

/// How long reading the cluster's version may retry.
const IDENTITY_BUDGET: Duration = Duration::from_secs(15);

/// A file read for inspect: its text, refused with exit 2 when unreadable.
fn read(path: &std::path::Path, what: &str) -> Result<String, Usage> {
    regular_file(path, what)?;
    std::fs::read_to_string(path)
        .map_err(|e| Usage(format!("{}: cannot read {what}: {e}", path.display())))
}

/// The rows of a pluto `versions.yaml` file (`deprecated-versions: [...]`, or
/// a bare list), as JSON for the run's `apiVersions` param.
fn api_version_rows(path: &std::path::Path) -> Result<Vec<serde_json::Value>, Usage> {
    let text = read(path, "an API-version table (pluto's versions.yaml format)")?;
    let bad = |why: String| {
        Usage(format!("--api-versions {}: {why}; write `deprecated-versions: [{{version: cert-manager.io/v1alpha2, kind: Certificate, deprecated-in: v1.4.0, removed-in: v1.6.0, replacement-api: cert-manager.io/v1}}]`", path.display()))
    };
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| bad(format!("not YAML ({e})")))?;
    let rows = match &value {
        serde_yaml::Value::Sequence(_) => value.clone(),
        serde_yaml::Value::Mapping(m) => m
            .get("deprecated-versions")
            .cloned()
            .ok_or_else(|| bad("it has no `deprecated-versions` list".into()))?,
        _ => return Err(bad("it is neither a list nor a mapping".into())),
    };
    let serde_yaml::Value::Sequence(items) = rows else {
        return Err(bad("`deprecated-versions` is not a list".into()));
    };
    items
        .iter()
        .map(|row| {
            if row
                .get("version")
                .and_then(serde_yaml::Value::as_str)
                .is_none()
                || row
                    .get("kind")
                    .and_then(serde_yaml::Value::as_str)
                    .is_none()
            {
                return Err(bad(format!(
                    "a row has no `version` or `kind`: {}",
                    serde_yaml::to_string(row).unwrap_or_default().trim()
                )));
            }
            serde_json::to_value(row).map_err(|e| bad(e.to_string()))
        })
        .collect()
}

/// Writes the shipped checks' driver scripts under the state directory
/// (`drivers/`), each replaced whole so a running inspection never reads a
/// half-written one, and returns that directory for the `drivers` param.
fn write_drivers(state: &kpilot_engine::store::StateDir) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = state.root().join("drivers");
    if kpilot_catalog::shipped::DRIVERS.is_empty() {
        return Ok(String::new());
    }
    let failed = |e: std::io::Error| {
        Usage(format!(
            "{}: cannot write the catalog's driver scripts: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(&dir).map_err(failed)?;
    for (name, text) in kpilot_catalog::shipped::DRIVERS {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == *text) {
            continue;
        }
        let temp = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::write(&temp, text).map_err(failed)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)).map_err(failed)?;
        std::fs::rename(&temp, &path).map_err(failed)?;
    }
    Ok(std::path::absolute(&dir)
        .unwrap_or(dir)
        .display()
        .to_string())
}

/// One inspection of a `kind: Report` file for a patrol's slot, as
/// `kpilot inspect --scenario patrol --report FILE --run-id RUN` runs it.
pub async fn patrol_inspection(
    report: PathBuf,
    run_id: String,
    cluster: ClusterArgs,
    state: &StateArgs,
) -> anyhow::Result<kpilot_engine::scheduler::RunOutcome> {
    let args = InspectArgs {
        scenario: "patrol".into(),
        to: None,
        cluster_type: None,
        report: Some(report),
        manifests: Vec::new(),
        api_versions: Vec::new(),
        annotations: Vec::new(),
        no_cluster: false,
        inventory: None,
        dry_run: false,
        run_id: Some(run_id),
        output: InspectFormat::Text,
        cluster,
    };
    match start(&args, state).await? {
        Some(outcome) => Ok(outcome),
        None => Err(Usage("an inspection without a run".into()).into()),
    }
}

pub async fn inspect(args: InspectArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let Some(outcome) = start(&args, state).await? else {
        return Ok(Exit::Passed);
    };
    for failure in &outcome.internal {
        eprintln!("kpilot: internal error: {failure}");
    }
    let report = kpilot_report::Report::from_run(&outcome.snapshot.run, &outcome.snapshot.steps)?;
    let id = &report.run_id;
    super::report::print(&report, args.output == InspectFormat::Json)?;
    // `resume` reaches the cluster through its own flags: name the same one.
    let mut flags = String::new();
    if let Some(k) = &args.cluster.kubeconfig {
        let k = std::path::absolute(k).unwrap_or_else(|_| k.clone());
        flags.push_str(&format!(" --kubeconfig {}", k.display()));
    }
    if let Some(c) = &args.cluster.context {
        flags.push_str(&format!(" --context {c}"));
    }
    eprintln!("kpilot: inspection {id}: `kpilot report {id}` prints this report again; `kpilot resume {id}{flags}` checks again what did not pass");
    if !outcome.internal.is_empty() {
        return Ok(Exit::Internal);
    }
    Ok(super::report::exit_for(&report))
}

/// Selects the checks, builds the workflow and drives it as a new run;
/// `None` after `--dry-run`, which printed what it would run.
async fn start(
    args: &InspectArgs,
    state: &StateArgs,
) -> anyhow::Result<Option<kpilot_engine::scheduler::RunOutcome>> {
    let scenario = Scenario::parse(&args.scenario).ok_or_else(|| {
        Usage(format!(
            "--scenario {} is not a scenario; write upgrade (the pre-checks of a hop), upgrade-post or patrol",
            args.scenario
        ))
    })?;
    let target = match (&args.to, scenario.has_target()) {
        (Some(t), true) => Some(kube_version(t).ok_or_else(|| {
            Usage(format!(
                "--to {t} is not a Kubernetes version; write e.g. --to 1.16"
            ))
        })?),
        (None, true) => {
            return Err(Usage(format!(
                "--scenario {} needs the upgrade target: add --to VERSION, like --to 1.16",
                args.scenario
            ))
            .into())
        }
        (Some(_), false) => {
            return Err(
                Usage("--to is for the upgrade scenarios; a patrol has no target".into()).into(),
            )
        }
        (None, false) => None,
    };
    let spec = match &args.report {
        Some(path) => {
            let text = read(path, "a `kind: Report` YAML file")?;
            ReportSpec::parse(&path.display().to_string(), &text)
                .map_err(|e| Usage(e.to_string()))?
        }
        None => ReportSpec::default(),
    };
    let cluster_type = match &args.cluster_type {
        Some(t) => ClusterType::parse(t).ok_or_else(|| {
            Usage(format!(
                "--cluster-type {t} is not a cluster type; write one of {}",
                ClusterType::names()
            ))
        })?,
        None => spec.cluster_type.unwrap_or(ClusterType::SelfHosted),
    };
    for path in &args.manifests {
        if !path.exists() {
            return Err(Usage(format!(
                "--manifests {}: no such file or directory",
                path.display()
            ))
            .into());
        }
    }
    let mut rows = spec.api_versions.clone();
    for path in &args.api_versions {
        rows.extend(api_version_rows(path)?);
    }
    let catalog = Catalog::shipped().map_err(|e| Usage(format!("the shipped catalog: {e}")))?;

    let (server, version) = if args.no_cluster {
        (String::new(), String::new())
    } else {
        let cluster = kpilot_tasks::data::Cluster::new(args.cluster.config());
        cluster.identity(IDENTITY_BUDGET).await.map_err(|e| {
            Unreadable(format!(
                "cannot read the cluster's version, which decides the checks that apply: {e}; pass --no-cluster to check only what needs no cluster"
            ))
        })?
    };
    let facts = Facts {
        scenario,
        cluster_version: kube_version(&version),
        target,
        cluster_type,
        cluster: !args.no_cluster,
        nodes: args.inventory.is_some(),
    };
    let selection = select::select(&catalog, &spec, &facts).map_err(|e| Usage(e.to_string()))?;
    let drivers = write_drivers(&state.state_dir()?)?;
    let absolute = |p: &PathBuf| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string()
    };
    let inputs = build::Inputs {
        server,
        version,
        manifests: args.manifests.iter().map(absolute).collect(),
        api_versions: rows,
        annotations: args.annotations.clone(),
        report_file: args.report.as_ref().map(absolute),
        drivers,
    };
    let text = build::workflow(&selection, &facts, &inputs);
    let file = args
        .report
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("<catalog: {}>", scenario.as_str())));
    if args.dry_run {
        for (id, why) in &selection.left_out {
            eprintln!("kpilot: left out {id}: {why}");
        }
        match args.output {
            InspectFormat::Yaml | InspectFormat::Text => crate::out!("{text}")?,
            InspectFormat::Json => {
                let value: serde_yaml::Value = serde_yaml::from_str(&text)?;
                crate::outln!("{}", serde_json::to_string_pretty(&value)?)?
            }
        }
        return Ok(None);
    }
    if args.output == InspectFormat::Yaml {
        return Err(Usage("-o yaml prints the built workflow: add --dry-run".into()).into());
    }
    if selection.checks.is_empty() {
        return Err(Usage(format!(
            "no check applies to a {} {} cluster{} for {}; `kpilot catalog --scenario {}` lists the checks and what they apply to",
            facts.cluster_type.as_str(),
            inputs.version,
            if args.no_cluster { " read with --no-cluster" } else { "" },
            scenario.as_str(),
            scenario.as_str()
        ))
        .into());
    }
    let source = kpilot_engine::WorkflowSource {
        path: file.clone(),
        text,
    };
    let (plan, tree) = super::plan(&source, &args.cluster.registry())?;
    print_warnings(&plan);
    let (outcome, _) = drive_new(
        NewRun {
            file,
            source,
            plan,
            tree,
            overrides: Vec::new(),
            run_id: args.run_id.clone(),
            inventory: args.inventory.clone(),
        },
        &args.cluster,
        state,
    )
    .await?;
    Ok(Some(outcome))
}
