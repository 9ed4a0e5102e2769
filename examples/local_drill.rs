//! Runs the local upgrade drill (`workflows/local-upgrade-drill.yaml`) with
//! kpilot as a library: validate, create a run in a throw-away state
//! directory, drive it, and print each step's outcome. No cluster needed.
//!
//! cargo run --example local_drill

use std::sync::Arc;

use kpilot_engine::executor::Executors;
use kpilot_engine::scheduler::{self, Silent};
use kpilot_engine::state::{RunRecord, RunState};
use kpilot_engine::store::{RunStore, StateDir};
use kpilot_engine::{validate, RunId, WorkflowSource};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/local-upgrade-drill.yaml");
    let source = WorkflowSource::read(&path)?;
    let plan = validate::validate(&source, &kpilot_tasks::registry())?;
    let state = tempfile::tempdir()?;
    let cluster = state.path().join("cluster.json");
    let params = plan.bind_params(
        &source,
        &[("cluster".into(), cluster.display().to_string())],
    )?;
    let now = chrono::Utc::now();
    let record = RunRecord {
        id: RunId::generate(&plan.name),
        workflow: plan.name.clone(),
        file: path.clone(),
        source: source.text.clone(),
        params,
        workdir: std::env::current_dir()?,
        created_at: now,
        updated_at: now,
        state: RunState::Running,
        approvals: Default::default(),
    };
    let store = RunStore::create(&StateDir::new(state.path()), &record)?;
    let outcome = scheduler::start(Arc::new(plan), store, Executors::new(), &Silent).await?;
    for (step, _, r) in &outcome.snapshot.steps {
        println!(
            "{step:<18} {:<10} {}",
            r.state.as_str(),
            r.reason.as_deref().unwrap_or("")
        );
    }
    println!("run {}: {}", record.id, outcome.state.as_str());
    Ok(())
}
