//! The image step's object through the API server: checked before it is
//! created, created once, found again, watched until it gives its verdict,
//! its logs read, and deleted.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};

use super::{Kind, Launch, CONTAINER};
use crate::actions::{api_code, api_message};

/// Why the object could not be made, found or read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The cluster could not be reached (kubeconfig, connection).
    #[error("{0}")]
    Connect(String),
    /// The API server refused what the step asks for; `hint` says what to change.
    #[error("{message}; {hint}")]
    Refused {
        /// What the API server said.
        message: String,
        /// What to change in the step.
        hint: String,
    },
    /// An API request failed.
    #[error("{what}: {message}")]
    Api {
        /// What was asked.
        what: String,
        /// What the API server (or the connection) said.
        message: String,
    },
}

impl ImageError {
    fn api(what: impl Into<String>, e: &kube::Error) -> Self {
        ImageError::Api {
            what: what.into(),
            message: api_message(e),
        }
    }
}

/// How a container that is waiting to start shows it can never start: kpilot
/// ends the step at once instead of waiting for its timeout.
const HOPELESS: &[&str] = &[
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
];

/// What the object's container ended with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// The Pod that ran the container.
    pub pod: Option<String>,
    /// The node it ran on.
    pub node: Option<String>,
    /// The container's exit code, when it ran.
    pub exit_code: Option<i32>,
    /// The container's (or the Job's) reason: `Completed`, `Error`, `OOMKilled`...
    pub reason: Option<String>,
    /// The container's termination message: what it wrote to its
    /// `terminationMessagePath`.
    pub message: Option<String>,
    /// Why there is no exit code to judge (the Pod could not be created or
    /// started); `None` when the container ran to its end.
    pub failure: Option<String>,
}

/// Where the object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// It does not exist (any more).
    Gone,
    /// It has not ended; the text says what it waits for.
    Waiting(String),
    /// It ended.
    Ended(Ended),
}

/// The objects of image steps in one namespace.
#[derive(Clone)]
pub struct Objects {
    client: kube::Client,
    namespace: String,
}

impl Objects {
    /// The objects of `namespace`, through `client`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Objects {
            client,
            namespace: namespace.to_owned(),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Refuses, with the API server's words and what to change, what would
    /// only fail later: a namespace or service account that does not exist,
    /// a Pod that admission (PodSecurity, quotas) rejects. A dry run of a
    /// Pod that kpilot's identity may not create is skipped: a Job's Pod is
    /// created by the Job controller, and its refusals are read from the
    /// Job's events while kpilot waits.
    pub async fn check(&self, launch: &Launch) -> Result<(), ImageError> {
        let ns = &self.namespace;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.get_opt(ns).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ImageError::Refused {
                    message: format!("namespace `{ns}` does not exist"),
                    hint: format!(
                        "create it (kubectl create namespace {ns}) or set `image.namespace` to one that exists"
                    ),
                })
            }
            // Reading namespaces may be forbidden to an identity that may
            // create Jobs in one: the dry run below still speaks.
            Err(e) if api_code(&e) == Some(403) => {}
            Err(e) => return Err(ImageError::api(format!("reading namespace `{ns}`"), &e)),
        }
        if let Some(node) = launch.node.as_deref() {
            // A Pod pinned to a node that does not exist waits for ever.
            let nodes: Api<Node> = Api::all(self.client.clone());
            match nodes.get_opt(node).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(ImageError::Refused {
                        message: format!("node `{node}` is not a node of the cluster"),
                        hint: "an image step's Pods run on the cluster's nodes: name agents after their nodes in the inventory, or use `executor: cluster-nodes`".into(),
                    })
                }
                Err(e) if api_code(&e) == Some(403) => {}
                Err(e) => return Err(ImageError::api(format!("reading node `{node}`"), &e)),
            }
        }
        if let Some(sa) = launch.pod.service_account_name.as_deref() {
            let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
            match accounts.get_opt(sa).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(ImageError::Refused {
                        message: format!("service account `{sa}` does not exist in namespace `{ns}`"),
                        hint: format!(
                            "create it (kubectl -n {ns} create serviceaccount {sa}) or change `image.serviceAccount`"
                        ),
                    })
                }
                Err(e) if api_code(&e) == Some(403) => {}
                Err(e) => {
                    return Err(ImageError::api(
                        format!("reading service account `{ns}/{sa}`"),
                        &e,
                    ))
                }
            }
        }
        let pod = launch.pod();
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        match self.pods().create(&dry, &pod).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(r))
                if r.code == 403 && r.message.contains("cannot create resource") =>
            {
                Ok(())
            }
            // The name is taken: an object of this attempt exists already.
            Err(kube::Error::Api(r)) if r.code == 409 => Ok(()),
            Err(kube::Error::Api(r)) if matches!(r.code, 400 | 403 | 422) => {
                Err(ImageError::Refused {
                    message: format!(
                        "the API server refuses the step's Pod: {} ({} {})",
                        r.message, r.code, r.reason
                    ),
                    hint: "change the step's `image` fields (serviceAccount, privileged, hostPID, hostNetwork, volumes) or the namespace's policy".into(),
                })
            }
            Err(e) => Err(ImageError::api("checking the step's Pod (dry run)", &e)),
        }
    }

    /// Creates the object; one that exists already under its name (an
    /// attempt whose create kpilot did not see answered) is taken as it is.
    /// Returns whether it was there before.
    pub async fn create(&self, launch: &Launch) -> Result<bool, ImageError> {
        let pp = PostParams::default();
        let name = launch.owner.object_name();
        let result = match launch.kind() {
            Kind::Job => self.jobs().create(&pp, &launch.job()).await.map(|_| ()),
            Kind::Pod => self.pods().create(&pp, &launch.pod()).await.map(|_| ()),
        };
        match result {
            Ok(()) => Ok(false),
            Err(e) if api_code(&e) == Some(409) => Ok(true),
            Err(kube::Error::Api(r)) if matches!(r.code, 400 | 403 | 404 | 422) => {
                Err(ImageError::Refused {
                    message: format!(
                        "creating {} `{}/{name}`: {} ({} {})",
                        launch.kind().as_str(),
                        self.namespace,
                        r.message,
                        r.code,
                        r.reason
                    ),
                    hint: "change the step's `image` fields, or give kpilot's identity the right to create it (see docs/image-steps.md)".into(),
                })
            }
            Err(e) => Err(ImageError::api(
                format!(
                    "creating {} `{}/{name}`",
                    launch.kind().as_str(),
                    self.namespace
                ),
                &e,
            )),
        }
    }

    /// Where the object named `name` is.
    pub async fn observe(&self, kind: Kind, name: &str) -> Result<Observed, ImageError> {
        match kind {
            Kind::Pod => match self.pods().get_opt(name).await {
                Ok(None) => Ok(Observed::Gone),
                Ok(Some(pod)) => Ok(observe_pod(&pod)),
                Err(e) => Err(ImageError::api(format!("reading pod `{name}`"), &e)),
            },
            Kind::Job => self.observe_job(name).await,
        }
    }

    async fn observe_job(&self, name: &str) -> Result<Observed, ImageError> {
        let job = match self.jobs().get_opt(name).await {
            Ok(None) => return Ok(Observed::Gone),
            Ok(Some(job)) => job,
            Err(e) => return Err(ImageError::api(format!("reading job `{name}`"), &e)),
        };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        // The Job's pods carry its controller-uid label; a Pod of an earlier
        // Job of the same name never matches.
        let lp = ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}"));
        let pods = self
            .pods()
            .list(&lp)
            .await
            .map_err(|e| ImageError::api(format!("listing the pods of job `{name}`"), &e))?;
        let observed: Vec<Observed> = pods.items.iter().map(observe_pod).collect();
        if let Some(ended) = observed.iter().find(|o| matches!(o, Observed::Ended(_))) {
            return Ok(ended.clone());
        }
        let condition = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| {
                        c.status == "True" && matches!(c.type_.as_str(), "Failed" | "Complete")
                    })
                    .cloned()
            });
        if let Some(c) = condition {
            if c.type_ == "Failed" {
                return Ok(Observed::Ended(Ended {
                    reason: c.reason.clone(),
                    failure: Some(format!(
                        "job `{name}` failed: {}{}",
                        c.reason.as_deref().unwrap_or("no reason"),
                        c.message
                            .as_deref()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    )),
                    ..Ended::default()
                }));
            }
        }
        if let Some(Observed::Waiting(what)) = observed.first() {
            return Ok(Observed::Waiting(what.clone()));
        }
        // No Pod: the Job controller could not create it (a refused service
        // account, PodSecurity, a quota), and would try for ever.
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().fields(&format!(
            "involvedObject.kind=Job,involvedObject.name={name},reason=FailedCreate"
        ));
        match events.list(&lp).await {
            Ok(list) => {
                let uid = job.metadata.uid.as_deref();
                if let Some(e) = list
                    .items
                    .iter()
                    .filter(|e| uid.is_none() || e.involved_object.uid.as_deref() == uid)
                    .max_by_key(|e| e.metadata.creation_timestamp.clone())
                {
                    return Ok(Observed::Ended(Ended {
                        reason: Some("FailedCreate".into()),
                        failure: Some(format!(
                            "job `{name}` could not create its pod: {}",
                            e.message.as_deref().unwrap_or("no message")
                        )),
                        ..Ended::default()
                    }));
                }
            }
            // Events are a diagnosis, not the verdict.
            Err(e) => tracing::debug!(error = %api_message(&e), "reading the job's events"),
        }
        Ok(Observed::Waiting(format!("job `{name}` has no pod yet")))
    }

    /// The container's logs, as the API server serves them from the
    /// kubelet: the last lines, or why they cannot be read.
    pub async fn logs(&self, pod: &str) -> Result<String, String> {
        let lp = LogParams {
            container: Some(CONTAINER.into()),
            tail_lines: Some(10_000),
            ..LogParams::default()
        };
        match tokio::time::timeout(Duration::from_secs(10), self.pods().logs(pod, &lp)).await {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(e)) => Err(api_message(&e)),
            Err(_) => Err(
                "the API server gave no logs within 10s (the node's kubelet did not answer)".into(),
            ),
        }
    }

    /// Deletes the object (a Job with its Pod), and waits at most `budget`
    /// for it to be gone; returns whether it is.
    pub async fn delete(
        &self,
        kind: Kind,
        name: &str,
        budget: Duration,
    ) -> Result<bool, ImageError> {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        };
        let result = match kind {
            Kind::Job => self.jobs().delete(name, &dp).await.map(|_| ()),
            Kind::Pod => self.pods().delete(name, &dp).await.map(|_| ()),
        };
        match result {
            Ok(()) => {}
            Err(e) if api_code(&e) == Some(404) => return Ok(true),
            Err(e) => {
                return Err(ImageError::api(
                    format!("deleting {} `{}/{name}`", kind.resource(), self.namespace),
                    &e,
                ))
            }
        }
        let until = tokio::time::Instant::now() + budget;
        let mut pause = Duration::from_millis(50);
        loop {
            let exists = match kind {
                Kind::Job => self.jobs().get_opt(name).await.map(|o| o.is_some()),
                Kind::Pod => self.pods().get_opt(name).await.map(|o| o.is_some()),
            };
            match exists {
                Ok(false) => return Ok(true),
                Ok(true) => {}
                Err(e) => tracing::debug!(error = %api_message(&e), "waiting for the object to go"),
            }
            if tokio::time::Instant::now() + pause > until {
                return Ok(false);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// What a Pod's state says about the step's container.
pub fn observe_pod(pod: &Pod) -> Observed {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec_node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let Some(status) = &pod.status else {
        return Observed::Waiting(format!("pod `{name}` has no status yet"));
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER));
    let state = container.and_then(|c| c.state.as_ref());
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        if matches!(phase, "Succeeded" | "Failed") {
            return Observed::Ended(Ended {
                pod: Some(name),
                node: spec_node,
                exit_code: Some(t.exit_code),
                reason: t.reason.clone(),
                message: t.message.clone().filter(|m| !m.is_empty()),
                failure: None,
            });
        }
    }
    if matches!(phase, "Succeeded" | "Failed") {
        // Ended without a container result: evicted, or the node went away.
        return Observed::Ended(Ended {
            pod: Some(name.clone()),
            node: spec_node,
            reason: status.reason.clone(),
            failure: Some(format!(
                "pod `{name}` ended {phase} without its container's result: {}",
                status
                    .message
                    .as_deref()
                    .or(status.reason.as_deref())
                    .unwrap_or("no reason given")
            )),
            ..Ended::default()
        });
    }
    if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.as_deref().unwrap_or("waiting");
        let what = format!(
            "pod `{name}` is {phase}: its container is waiting ({reason}{})",
            w.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        if HOPELESS.contains(&reason) {
            return Observed::Ended(Ended {
                pod: Some(name),
                node: spec_node,
                reason: Some(reason.to_owned()),
                failure: Some(what),
                ..Ended::default()
            });
        }
        return Observed::Waiting(what);
    }
    let unscheduled = status.conditions.as_ref().and_then(|cs| {
        cs.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .map(|c| c.message.clone().unwrap_or_default())
    });
    match unscheduled {
        Some(why) => Observed::Waiting(format!("pod `{name}` is not scheduled: {why}")),
        None => Observed::Waiting(format!("pod `{name}` is {phase}")),
    }
}

/// Deletes every object the run's image steps left in the cluster (see
/// [`super::left_behind`]) and forgets it in the ledger: `kpilot abort RUN
/// --restore`. Returns the objects deleted, or gone already, as a person
/// names them.
pub async fn remove_left_behind(
    ledger: &kpilot_engine::store::Ledger,
    client: &kube::Client,
) -> Result<Vec<String>, ImageError> {
    let mut removed = Vec::new();
    for (at, entry) in super::left_behind(ledger) {
        let objects = Objects::new(client.clone(), &entry.namespace);
        if objects
            .delete(entry.kind, &entry.name, Duration::from_secs(30))
            .await?
        {
            ledger
                .remove(&format!("{}{at}", super::LEDGER_PREFIX))
                .await
                .map_err(ImageError::Connect)?;
        }
        removed.push(entry.describe());
    }
    Ok(removed)
}
