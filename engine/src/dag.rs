//! The step graph: edges from `needs`, cycle detection, order and rendering.

use std::fmt::Write as _;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::workflow::NeedOn;

/// The DAG of a workflow's steps. Node `i` is step `i` of the plan; an edge
/// runs from a needed step to the step that needs it.
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<String, NeedOn>,
    order: Vec<usize>,
}

impl Dag {
    /// Builds the graph from step ids and `(needed, needing, on)` edges.
    /// On a cycle, returns the ids of every cycle's steps.
    pub fn new(ids: &[String], edges: &[(usize, usize, NeedOn)]) -> Result<Self, Vec<Vec<String>>> {
        let mut graph = DiGraph::with_capacity(ids.len(), edges.len());
        for id in ids {
            graph.add_node(id.clone());
        }
        for &(from, to, on) in edges {
            graph.add_edge(NodeIndex::new(from), NodeIndex::new(to), on);
        }
        match toposort(&graph, None) {
            Ok(order) => Ok(Dag {
                order: order.into_iter().map(|n| n.index()).collect(),
                graph,
            }),
            Err(_) => {
                let cycles = tarjan_scc(&graph)
                    .into_iter()
                    .filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
                    .map(|scc| {
                        let mut names: Vec<String> =
                            scc.into_iter().map(|n| graph[n].clone()).collect();
                        names.sort();
                        names
                    })
                    .collect();
                Err(cycles)
            }
        }
    }

    /// Step indices in an order where every step comes after the steps it needs.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Every step upstream of `step` (transitively), without `step` itself.
    pub fn ancestors(&self, step: usize) -> Vec<usize> {
        let mut seen = vec![false; self.graph.node_count()];
        let mut stack = vec![NodeIndex::new(step)];
        let mut out = Vec::new();
        while let Some(n) = stack.pop() {
            for up in self
                .graph
                .neighbors_directed(n, petgraph::Direction::Incoming)
            {
                if !seen[up.index()] {
                    seen[up.index()] = true;
                    out.push(up.index());
                    stack.push(up);
                }
            }
        }
        out
    }

    /// Every step downstream of `step` (transitively), without `step` itself.
    pub fn descendants(&self, step: usize) -> Vec<usize> {
        let mut seen = vec![false; self.graph.node_count()];
        let mut stack = vec![NodeIndex::new(step)];
        let mut out = Vec::new();
        while let Some(n) = stack.pop() {
            for down in self
                .graph
                .neighbors_directed(n, petgraph::Direction::Outgoing)
            {
                if !seen[down.index()] {
                    seen[down.index()] = true;
                    out.push(down.index());
                    stack.push(down);
                }
            }
        }
        out
    }

    /// The graph in Graphviz DOT; failure edges are red, `always` edges dashed.
    pub fn to_dot(&self, name: &str) -> String {
        let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", escape(name));
        for n in self.graph.node_indices() {
            let _ = writeln!(out, "  \"{}\";", escape(&self.graph[n]));
        }
        for e in self.graph.edge_indices() {
            if let Some((a, b)) = self.graph.edge_endpoints(e) {
                let style = match self.graph[e] {
                    NeedOn::Success => "",
                    NeedOn::Failure => " [color=red, label=\"on failure\"]",
                    NeedOn::Always => " [style=dashed, label=\"always\"]",
                };
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\"{style};",
                    escape(&self.graph[a]),
                    escape(&self.graph[b])
                );
            }
        }
        out.push_str("}\n");
        out
    }

    /// The graph as a Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for n in self.graph.node_indices() {
            let _ = writeln!(out, "  s{}[\"{}\"]", n.index(), self.graph[n]);
        }
        for e in self.graph.edge_indices() {
            if let Some((a, b)) = self.graph.edge_endpoints(e) {
                let arrow = match self.graph[e] {
                    NeedOn::Success => "-->".to_owned(),
                    NeedOn::Failure => "-- on failure -->".to_owned(),
                    NeedOn::Always => "-. always .->".to_owned(),
                };
                let _ = writeln!(out, "  s{} {arrow} s{}", a.index(), b.index());
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn diamond_orders_needs_first() {
        let dag = Dag::new(
            &ids(&["a", "b", "c", "d"]),
            &[
                (0, 1, NeedOn::Success),
                (0, 2, NeedOn::Success),
                (1, 3, NeedOn::Success),
                (2, 3, NeedOn::Success),
            ],
        )
        .expect("acyclic");
        let pos = |i| dag.order().iter().position(|&x| x == i).expect("present");
        assert!(pos(0) < pos(1) && pos(0) < pos(2) && pos(1) < pos(3) && pos(2) < pos(3));
        let mut up = dag.ancestors(3);
        up.sort();
        assert_eq!(up, vec![0, 1, 2]);
    }

    #[test]
    fn cycle_names_its_steps() {
        let err = Dag::new(
            &ids(&["a", "b", "c"]),
            &[
                (0, 1, NeedOn::Success),
                (1, 2, NeedOn::Success),
                (2, 1, NeedOn::Success),
            ],
        )
        .expect_err("cyclic");
        assert_eq!(err, vec![vec!["b".to_string(), "c".to_string()]]);
    }
}
