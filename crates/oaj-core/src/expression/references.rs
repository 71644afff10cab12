//! The variable paths an expression reads, found by walking the CEL syntax tree.

use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr, LiteralValue};
use cel::IdedExpr;

/// Collects every path rooted at a free variable, such as `["steps", "a", "outputs", "o"]` for
/// `steps.a.outputs.o` or `steps["a"].outputs.o`. Variables bound by macros such as `map(x, ...)`
/// are left out. A path stops at the first part that is computed at run time.
pub(crate) fn expression_paths(expression: &IdedExpr) -> Vec<Vec<String>> {
    let mut walker = PathWalker {
        bound: Vec::new(),
        paths: Vec::new(),
    };
    walker.visit(expression);
    walker.paths
}

/// Returns the depth of the syntax tree, counting a leaf as 1.
pub(crate) fn expression_depth(expression: &IdedExpr) -> usize {
    let children: Vec<&IdedExpr> = match &expression.expr {
        Expr::Select(select) => vec![&select.operand],
        Expr::Call(call) => call
            .target
            .iter()
            .map(|target| &**target)
            .chain(&call.args)
            .collect(),
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => entry_values(&map.entries),
        Expr::Struct(structure) => entry_values(&structure.entries),
        Expr::Comprehension(comprehension) => vec![
            &comprehension.iter_range,
            &comprehension.accu_init,
            &comprehension.loop_cond,
            &comprehension.loop_step,
            &comprehension.result,
        ],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    };
    1 + children
        .into_iter()
        .map(expression_depth)
        .max()
        .unwrap_or(0)
}

fn entry_values(entries: &[IdedEntryExpr]) -> Vec<&IdedExpr> {
    let mut values = Vec::new();
    for entry in entries {
        match &entry.expr {
            EntryExpr::StructField(field) => values.push(&field.value),
            EntryExpr::MapEntry(map_entry) => values.extend([&map_entry.key, &map_entry.value]),
        }
    }
    values
}

struct PathWalker {
    bound: Vec<String>,
    paths: Vec<Vec<String>>,
}

impl PathWalker {
    fn visit(&mut self, expression: &IdedExpr) {
        if let Some(path) = self.path_of(expression) {
            self.paths.push(path);
            return;
        }
        match &expression.expr {
            Expr::Select(select) => self.visit(&select.operand),
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.visit(target);
                }
                call.args.iter().for_each(|argument| self.visit(argument));
            }
            Expr::List(list) => list.elements.iter().for_each(|element| self.visit(element)),
            Expr::Map(map) => self.visit_entries(&map.entries),
            Expr::Struct(structure) => self.visit_entries(&structure.entries),
            Expr::Comprehension(comprehension) => {
                self.visit(&comprehension.iter_range);
                self.visit(&comprehension.accu_init);
                let depth = self.bound.len();
                self.bound.push(comprehension.iter_var.clone());
                self.bound.extend(comprehension.iter_var2.clone());
                self.bound.push(comprehension.accu_var.clone());
                self.visit(&comprehension.loop_cond);
                self.visit(&comprehension.loop_step);
                self.visit(&comprehension.result);
                self.bound.truncate(depth);
            }
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn visit_entries(&mut self, entries: &[IdedEntryExpr]) {
        for entry in entries {
            match &entry.expr {
                EntryExpr::StructField(field) => self.visit(&field.value),
                EntryExpr::MapEntry(map_entry) => {
                    self.visit(&map_entry.key);
                    self.visit(&map_entry.value);
                }
            }
        }
    }

    /// Returns the path when `expression` is a chain of field selections and constant string
    /// indexes on a free variable. Parts inside the chain, such as a computed index, are visited.
    fn path_of(&mut self, expression: &IdedExpr) -> Option<Vec<String>> {
        match &expression.expr {
            Expr::Ident(name) if !name.starts_with('@') && !self.bound.contains(name) => {
                Some(vec![name.clone()])
            }
            Expr::Select(select) if !select.test => {
                let mut path = self.path_of(&select.operand)?;
                path.push(select.field.clone());
                Some(path)
            }
            Expr::Call(call) if call.func_name == "_[_]" && call.args.len() == 2 => {
                let mut path = self.path_of(&call.args[0])?;
                match &call.args[1].expr {
                    Expr::Literal(LiteralValue::String(key)) => path.push(key.to_string()),
                    _ => self.visit(&call.args[1]),
                }
                Some(path)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(source: &str) -> Vec<Vec<String>> {
        let program = cel::Program::compile(source).unwrap();
        expression_paths(program.expression())
    }

    #[test]
    fn select_chain_is_one_path() {
        assert_eq!(
            paths("steps.a.outputs.o"),
            vec![vec!["steps", "a", "outputs", "o"]]
        );
    }

    #[test]
    fn string_index_extends_path() {
        assert_eq!(
            paths("steps['a'].outputs"),
            vec![vec!["steps", "a", "outputs"]]
        );
    }

    #[test]
    fn macro_variables_are_not_paths() {
        let found = paths("inputs.items.map(x, x.name + item)");
        assert_eq!(found, vec![vec!["inputs", "items"], vec!["item"]]);
    }

    #[test]
    fn operands_of_calls_are_visited() {
        let found = paths("size(inputs.a) > 2 && steps.b.outputs.ok");
        assert_eq!(
            found,
            vec![vec!["inputs", "a"], vec!["steps", "b", "outputs", "ok"]]
        );
    }
}
