//! The step graph: which steps each step waits for, and the cycles among them.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::expression::template::{path_segments, template_parse, Segment};
use crate::expression::CompiledExpression;
use crate::plan::{connection_source, connection_target};
use crate::workflow::Workflow;

use super::references::{step_sites, SiteKind};
use super::{Problem, ProblemCode};

/// Returns, for each step, the sorted indices of the steps it waits for: those its inputs,
/// condition, `for_each`, concurrency key and approval prompt reference, the sources of
/// connections into it, and its `depends_on`. Names of missing steps are skipped, because
/// validation reports them.
pub(crate) fn step_needs(workflow: &Workflow) -> Vec<Vec<usize>> {
    let index_of: HashMap<&str, usize> = workflow
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| (step.id.as_str(), index))
        .collect();
    let mut needs: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); workflow.steps.len()];

    for (index, step) in workflow.steps.iter().enumerate() {
        for site in step_sites(step, index) {
            for id in site_step_ids(site.text, site.kind, &index_of) {
                needs[index].extend(index_of.get(id.as_str()));
            }
        }
        for dependency in &step.depends_on {
            needs[index].extend(index_of.get(dependency.as_str()));
        }
    }
    for connection in &workflow.connections {
        let source = connection_source(&connection.source).map(|source| source.step);
        let target = connection_target(&connection.target).map(|(step, _)| step);
        if let (Some(source), Some(target)) = (source, target) {
            if let (Some(&from), Some(&to)) = (index_of.get(source.as_str()), index_of.get(target))
            {
                needs[to].insert(from);
            }
        }
    }
    needs
        .into_iter()
        .map(|set| set.into_iter().collect())
        .collect()
}

/// Returns the ids of the steps that the references in `text` read.
fn site_step_ids(text: &str, kind: SiteKind, index_of: &HashMap<&str, usize>) -> Vec<String> {
    let references: Vec<(String, bool)> = match kind {
        SiteKind::Expression => vec![(text.to_owned(), false)],
        SiteKind::Template => match template_parse(text) {
            Ok(segments) => segments
                .into_iter()
                .filter_map(|segment| match segment {
                    Segment::Reference { source, legacy } => Some((source, legacy)),
                    Segment::Text(_) => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        },
    };

    let mut ids = Vec::new();
    for (source, legacy) in references {
        if legacy {
            // `{{step.output}}` names the step first when it is not a scope variable.
            let first = path_segments(&source).map(|segments| segments[0].to_owned());
            ids.extend(first.filter(|first| index_of.contains_key(first.as_str())));
        }
        let Ok(compiled) = CompiledExpression::compile(&source) else {
            continue;
        };
        for path in compiled.paths() {
            if path.len() >= 2 && path[0] == "steps" {
                ids.push(path[1].clone());
            }
        }
    }
    ids
}

/// Finds cycles in the graph where `needs[a]` lists the steps that `a` waits for. Each cycle is
/// returned once, as step indices in waiting order, with the first index repeated at the end.
pub(crate) fn cycles_find(needs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![UNVISITED; needs.len()];
    let mut cycles = Vec::new();
    let mut seen: HashSet<BTreeSet<usize>> = HashSet::new();

    for root in 0..needs.len() {
        if state[root] != UNVISITED {
            continue;
        }
        // An explicit stack, because a chain of thousands of steps would overflow recursion.
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = ON_PATH;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let Some(&child) = needs[node].get(*next) else {
                state[node] = DONE;
                path.pop();
                continue;
            };
            *next += 1;
            match state[child] {
                UNVISITED => {
                    state[child] = ON_PATH;
                    path.push((child, 0));
                }
                ON_PATH => {
                    let start = path
                        .iter()
                        .position(|(step, _)| *step == child)
                        .unwrap_or(0);
                    let mut cycle: Vec<usize> =
                        path[start..].iter().map(|(step, _)| *step).collect();
                    if seen.insert(cycle.iter().copied().collect()) {
                        cycle.push(child);
                        cycles.push(cycle);
                    }
                }
                _ => {}
            }
        }
    }
    cycles
}

pub(super) fn graph_check(workflow: &Workflow, problems: &mut Vec<Problem>) {
    let needs = step_needs(workflow);
    for cycle in cycles_find(&needs) {
        problems.push(cycle_problem(workflow, &cycle));
    }
}

/// Describes a cycle, naming its steps in waiting order.
pub(crate) fn cycle_problem(workflow: &Workflow, cycle: &[usize]) -> Problem {
    let first = &workflow.steps[cycle[0]].id;
    let names: Vec<&str> = cycle
        .iter()
        .map(|index| workflow.steps[*index].id.as_str())
        .collect();
    let message = format!(
        "steps wait for each other in a cycle: {}",
        names.join(" -> ")
    );
    let path = format!("/steps/{}", cycle[0]);
    Problem::error(ProblemCode::Cycle, path, message)
        .at_step(first)
        .suggest("remove one of the references, connections or depends_on entries in the cycle")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_is_spelled_in_order() {
        let needs = vec![vec![1], vec![2], vec![0], vec![]];
        assert_eq!(cycles_find(&needs), vec![vec![0, 1, 2, 0]]);
    }

    #[test]
    fn self_wait_is_a_cycle() {
        assert_eq!(cycles_find(&[vec![0]]), vec![vec![0, 0]]);
    }

    #[test]
    fn long_chain_has_no_cycle() {
        let needs: Vec<Vec<usize>> = (0..100_000)
            .map(|index| if index == 0 { vec![] } else { vec![index - 1] })
            .collect();
        assert!(cycles_find(&needs).is_empty());
    }
}
