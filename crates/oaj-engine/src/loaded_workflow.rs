//! A workflow version prepared for running: its plan, its agents and its policies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use oaj_core::plan::Plan;
use oaj_core::retry_policy::seconds;
use oaj_core::workflow::Step;
use oaj_core::RetryPolicy;

use crate::agent::{agent_from_spec, Agent, AgentRegistry};

/// The action that runs a step.
#[derive(Clone)]
pub(crate) enum StepAction {
    /// Call an agent.
    Call {
        /// Agent name, the part of the component before the dot.
        name: String,
        /// Capability, the part after the dot.
        capability: Option<String>,
        /// The agent.
        agent: Arc<dyn Agent>,
    },
    /// Wait for a human decision.
    Approval,
    /// The component names no agent known to this worker; the step fails with this message.
    Missing(String),
}

/// A workflow version ready to run, shared by every job of that version in this process.
pub(crate) struct LoadedWorkflow {
    pub(crate) plan: Plan,
    pub(crate) actions: Vec<StepAction>,
    pub(crate) policies: Vec<RetryPolicy>,
    pub(crate) timeouts: Vec<Option<Duration>>,
    pub(crate) job_timeout: Option<Duration>,
}

impl LoadedWorkflow {
    /// Parses a stored document and binds each step to its agent.
    pub(crate) fn load(
        document: &str,
        registry: &AgentRegistry,
        http: &reqwest::Client,
    ) -> Result<LoadedWorkflow, String> {
        let workflow = crate::submit::workflow_parse_registered(document, registry)
            .map_err(|report| format!("stored workflow is invalid: {report}"))?;
        let inline: HashMap<&str, Arc<dyn Agent>> = workflow
            .agents
            .iter()
            .map(|(name, spec)| (name.as_str(), agent_from_spec(spec, None, http)))
            .collect();
        let defaults = workflow.defaults.clone().unwrap_or_default();
        let actions = workflow
            .steps
            .iter()
            .map(|step| step_action(step, &inline, registry))
            .collect();
        let policies = workflow
            .steps
            .iter()
            .map(|step| RetryPolicy::resolve(step.retry.as_ref(), defaults.retry.as_ref()))
            .collect();
        let timeouts = workflow
            .steps
            .iter()
            .map(|step| step.timeout.or(defaults.timeout).map(seconds))
            .collect();
        let job_timeout = defaults.job_timeout.map(seconds);
        let plan = Plan::new(workflow)
            .map_err(|report| format!("stored workflow is invalid: {report}"))?;
        Ok(LoadedWorkflow {
            plan,
            actions,
            policies,
            timeouts,
            job_timeout,
        })
    }

    /// Returns the step at `index` of the document.
    pub(crate) fn step(&self, index: usize) -> &Step {
        &self.plan.workflow.steps[index]
    }
}

fn step_action(
    step: &Step,
    inline: &HashMap<&str, Arc<dyn Agent>>,
    registry: &AgentRegistry,
) -> StepAction {
    if step.component == "approval" {
        return StepAction::Approval;
    }
    let (name, capability) = match step.component.split_once('.') {
        Some((name, capability)) => (name, Some(capability.to_owned())),
        None => (step.component.as_str(), None),
    };
    let agent = inline.get(name).cloned().or_else(|| registry.get(name));
    match agent {
        Some(agent) => StepAction::Call { name: name.to_owned(), capability, agent },
        None => StepAction::Missing(format!(
            "agent {name:?} of step {:?} is not defined in the workflow nor registered in this worker",
            step.id
        )),
    }
}
