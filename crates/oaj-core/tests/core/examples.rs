//! Every document in the repository's `examples/` folder must validate without problems.

use std::path::PathBuf;

use oaj_core::{workflow_parse_validate, Plan};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn examples_validate_without_problems() {
    let mut checked = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples/ exists") {
        let path = entry.expect("directory entry is readable").path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("example is readable");
        let validation = workflow_parse_validate(&text, &|_| false);
        assert!(
            validation.report.problems.is_empty(),
            "{}:\n{}",
            path.display(),
            validation.report
        );

        let workflow = validation
            .workflow
            .expect("a valid document has a workflow");
        let plan = Plan::new(workflow).expect("a valid workflow has an acyclic plan");
        assert_eq!(plan.order().len(), plan.steps.len());
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected at least three examples, found {checked}"
    );
}
