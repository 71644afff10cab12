//! The agents a worker can call, by name, and the construction of inline agents.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use oaj_core::workflow::AgentSpec;

use super::{
    Agent, CommandAgent, EchoAgent, FailAgent, HttpAgent, LlmAgent, NoopAgent, SleepAgent,
};

/// Agents by name: the built-ins and those an embedding application or the server registers.
/// Inline agents of a workflow are built with [`agent_from_spec`] instead.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<String, Arc<dyn Agent>>,
}

impl AgentRegistry {
    /// Creates an empty registry.
    pub fn new() -> AgentRegistry {
        AgentRegistry::default()
    }

    /// Creates a registry holding the built-in agents `noop`, `echo`, `sleep` and `fail`.
    pub fn with_builtins() -> AgentRegistry {
        let mut registry = AgentRegistry::new();
        registry.register("noop", Arc::new(NoopAgent));
        registry.register("echo", Arc::new(EchoAgent));
        registry.register("sleep", Arc::new(SleepAgent));
        registry.register("fail", Arc::new(FailAgent));
        registry
    }

    /// Adds `agent` under `name`, replacing and returning the agent that had that name.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        agent: Arc<dyn Agent>,
    ) -> Option<Arc<dyn Agent>> {
        self.agents.insert(name.into(), agent)
    }

    /// Returns the agent registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Agent>> {
        self.agents.get(name).cloned()
    }

    /// Returns the registered names in sorted order.
    pub fn names(&self) -> Vec<String> {
        self.agents.keys().cloned().collect()
    }
}

impl std::fmt::Debug for AgentRegistry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_set().entries(self.agents.keys()).finish()
    }
}

/// Builds the agent that an inline definition of a workflow describes.
///
/// `base_dir` is the workflow file's folder, against which a command's relative paths are
/// resolved. `client` is shared by HTTP and LLM agents, so that they reuse connections.
pub fn agent_from_spec(
    spec: &AgentSpec,
    base_dir: Option<&Path>,
    client: &reqwest::Client,
) -> Arc<dyn Agent> {
    match spec {
        AgentSpec::Command(command) => Arc::new(CommandAgent::new(
            command.clone(),
            base_dir.map(Path::to_path_buf),
        )),
        AgentSpec::Http(http) => Arc::new(HttpAgent::new(http.clone(), client.clone())),
        AgentSpec::Llm(llm) => Arc::new(LlmAgent::new(llm.clone(), client.clone())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::agent::test_support::call_with;

    #[test]
    fn builtins_are_registered() {
        let names = AgentRegistry::with_builtins().names();
        assert_eq!(names, ["echo", "fail", "noop", "sleep"]);
    }

    #[tokio::test]
    async fn register_replaces_and_get_finds() {
        let mut registry = AgentRegistry::with_builtins();
        let previous = registry.register("echo", Arc::new(NoopAgent));
        assert!(previous.is_some());

        let agent = registry.get("echo").expect("echo is registered");
        let output = agent.call(call_with(json!({"a": 1}))).await;
        assert_eq!(output.map(|o| o.output), Ok(json!({})));
        assert!(registry.get("missing").is_none());
    }

    #[tokio::test]
    async fn agent_from_spec_builds_command() {
        let spec: AgentSpec =
            serde_json::from_value(json!({"kind": "command", "command": ["cat"]}))
                .expect("a valid command spec");
        let agent = agent_from_spec(&spec, None, &reqwest::Client::new());

        let output = agent.call(call_with(json!({"x": [1, 2]}))).await;

        assert_eq!(output.map(|o| o.output), Ok(json!({"x": [1, 2]})));
    }
}
