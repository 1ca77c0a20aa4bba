//! Operations with dependencies, priorities and compensation.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::FutureExt;

use crate::report::{BatchReport, Failure};
use crate::retry::ItemError;
use crate::runner::{BatchRunner, ErrorPolicy, Task};

/// One step of a plan. Keys must be unique within a plan.
#[async_trait::async_trait]
pub trait Operation: Send + Sync {
    /// What a successful operation produces (kept in the report).
    type Output: Send + Sync;

    /// Names the operation in the plan, in dependencies and in the report.
    fn key(&self) -> String;

    /// Keys of operations that must succeed before this one starts.
    fn dependencies(&self) -> Vec<String> {
        Vec::new()
    }

    /// Among operations ready to run, higher priority starts first.
    fn priority(&self) -> i32 {
        0
    }

    /// Does the work; a retryable error is retried under the runner's policy.
    async fn execute(&self) -> Result<Self::Output, ItemError>;

    /// Undoes a successful `execute` when an atomic batch fails. The default
    /// has nothing to undo.
    async fn compensate(&self, _output: &Self::Output) -> Result<(), ItemError> {
        Ok(())
    }
}

/// A plan that cannot run; found before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// An operation names a dependency no operation has as key.
    #[error("operation `{operation}` depends on `{dependency}`, which is not in the plan")]
    UnknownDependency {
        /// The operation's key.
        operation: String,
        /// The key it names that is not in the plan.
        dependency: String,
    },
    /// Two operations have this key.
    #[error("operation key `{0}` appears more than once")]
    DuplicateKey(String),
    /// These operations depend on each other in a circle.
    #[error("dependency cycle among operations: {}", .0.join(", "))]
    Cycle(Vec<String>),
}

/// Runs `operations` in dependency order (then priority, then given order)
/// with `runner`'s parallelism and policy. Under [`ErrorPolicy::Atomic`], a
/// failure undoes every success in reverse order of completion.
pub async fn run_operations<Op: Operation>(
    runner: &BatchRunner,
    operations: &[Op],
) -> Result<BatchReport<String, Op::Output>, PlanError> {
    let keys: Vec<String> = operations.iter().map(Operation::key).collect();
    let dependencies = resolve_dependencies(operations, &keys)?;
    check_acyclic(&dependencies, &keys)?;

    let tasks = operations
        .iter()
        .zip(keys)
        .zip(dependencies)
        .map(|((operation, key), dependencies)| Task {
            key,
            dependencies,
            priority: operation.priority(),
            attempt: Box::new(move |_| operation.execute().boxed()),
        })
        .collect();
    let scheduled = runner.schedule(tasks).await;
    let mut report = scheduled.report;
    let atomic_failure = runner.config().policy == ErrorPolicy::Atomic
        && !(report.failed.is_empty() && report.skipped.is_empty() && report.cancelled.is_empty());
    if atomic_failure {
        let done = std::mem::take(&mut report.succeeded);
        let undo_failures = Mutex::new(Vec::new());
        for (success, index) in done.into_iter().zip(scheduled.success_tasks).rev() {
            match operations[index].compensate(&success.outcome).await {
                Ok(()) => report.rolled_back.push(success.key),
                Err(error) => undo_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Failure {
                    key: success.key,
                    reason: format!("undo failed after the atomic batch failed: {}", error.reason),
                }),
            }
        }
        report.failed.extend(undo_failures.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
    Ok(report)
}

fn resolve_dependencies<Op: Operation>(operations: &[Op], keys: &[String]) -> Result<Vec<Vec<usize>>, PlanError> {
    let mut index_of = HashMap::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        if index_of.insert(key.as_str(), index).is_some() {
            return Err(PlanError::DuplicateKey(key.clone()));
        }
    }
    operations
        .iter()
        .zip(keys)
        .map(|(operation, key)| {
            operation
                .dependencies()
                .into_iter()
                .map(|dependency| {
                    index_of
                        .get(dependency.as_str())
                        .copied()
                        .ok_or_else(|| PlanError::UnknownDependency { operation: key.clone(), dependency })
                })
                .collect()
        })
        .collect()
}

/// Kahn's algorithm: whatever cannot be ordered is on or behind a cycle.
fn check_acyclic(dependencies: &[Vec<usize>], keys: &[String]) -> Result<(), PlanError> {
    let mut waiting_on: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); dependencies.len()];
    for (index, deps) in dependencies.iter().enumerate() {
        for &dependency in deps {
            dependents[dependency].push(index);
        }
    }
    let mut ready: Vec<usize> = (0..waiting_on.len()).filter(|&i| waiting_on[i] == 0).collect();
    let mut ordered = 0;
    while let Some(index) = ready.pop() {
        ordered += 1;
        for &dependent in &dependents[index] {
            waiting_on[dependent] -= 1;
            if waiting_on[dependent] == 0 {
                ready.push(dependent);
            }
        }
    }
    if ordered == keys.len() {
        return Ok(());
    }
    let stuck = (0..keys.len()).filter(|&i| waiting_on[i] > 0).map(|i| keys[i].clone()).collect();
    Err(PlanError::Cycle(stuck))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RunnerConfig;

    struct Step<'a> {
        key: &'static str,
        deps: Vec<&'static str>,
        priority: i32,
        fails: bool,
        log: &'a Mutex<Vec<String>>,
    }

    fn step<'a>(key: &'static str, deps: &[&'static str], log: &'a Mutex<Vec<String>>) -> Step<'a> {
        Step { key, deps: deps.to_vec(), priority: 0, fails: false, log }
    }

    #[async_trait::async_trait]
    impl Operation for Step<'_> {
        type Output = String;
        fn key(&self) -> String {
            self.key.to_owned()
        }
        fn dependencies(&self) -> Vec<String> {
            self.deps.iter().map(|d| (*d).to_owned()).collect()
        }
        fn priority(&self) -> i32 {
            self.priority
        }
        async fn execute(&self) -> Result<String, ItemError> {
            self.log.lock().unwrap().push(format!("do {}", self.key));
            if self.fails { Err(ItemError::permanent(format!("{} failed", self.key))) } else { Ok(self.key.to_owned()) }
        }
        async fn compensate(&self, output: &String) -> Result<(), ItemError> {
            self.log.lock().unwrap().push(format!("undo {output}"));
            Ok(())
        }
    }

    fn serial(policy: ErrorPolicy) -> BatchRunner {
        BatchRunner::new(RunnerConfig { max_parallel: 1, policy, ..RunnerConfig::default() })
    }

    #[tokio::test]
    async fn runs_in_dependency_then_priority_order() {
        let log = Mutex::new(Vec::new());
        let mut low = step("low", &[], &log);
        low.priority = -1;
        let mut high = step("high", &[], &log);
        high.priority = 5;
        let ops = vec![step("c", &["b"], &log), step("b", &["a"], &log), step("a", &[], &log), low, high];
        let report = run_operations(&serial(ErrorPolicy::ContinueOnError), &ops).await.unwrap();
        assert!(report.is_complete_success());
        // "high" first by priority; "a" before "low" (equal priority 0 beats -1), then the chain.
        assert_eq!(*log.lock().unwrap(), vec!["do high", "do a", "do b", "do c", "do low"]);
    }

    #[tokio::test]
    async fn cycle_and_unknown_dependency_fail_before_anything_runs() {
        let log = Mutex::new(Vec::new());
        let cyclic =
            vec![step("a", &["c"], &log), step("b", &["a"], &log), step("c", &["b"], &log), step("free", &[], &log)];
        let error = run_operations(&serial(ErrorPolicy::ContinueOnError), &cyclic).await.unwrap_err();
        assert_eq!(error, PlanError::Cycle(vec!["a".into(), "b".into(), "c".into()]));
        let unknown = vec![step("a", &["ghost"], &log)];
        let error = run_operations(&serial(ErrorPolicy::ContinueOnError), &unknown).await.unwrap_err();
        assert_eq!(error.to_string(), "operation `a` depends on `ghost`, which is not in the plan");
        assert!(log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn atomic_failure_compensates_in_reverse_order() {
        let log = Mutex::new(Vec::new());
        let mut bad = step("c", &["b"], &log);
        bad.fails = true;
        let ops = vec![step("a", &[], &log), step("b", &["a"], &log), bad, step("d", &["c"], &log)];
        let report = run_operations(&serial(ErrorPolicy::Atomic), &ops).await.unwrap();
        assert_eq!(*log.lock().unwrap(), vec!["do a", "do b", "do c", "undo b", "undo a"]);
        assert!(report.succeeded.is_empty());
        assert_eq!(report.rolled_back, vec!["b".to_owned(), "a".to_owned()]);
        assert_eq!(report.failed[0].reason, "c failed");
        assert_eq!(report.skipped[0].key, "d");
        assert!(report.skipped[0].reason.contains("dependency `c`"));
    }

    #[tokio::test]
    async fn failed_dependency_skips_dependents_but_not_others() {
        let log = Mutex::new(Vec::new());
        let mut bad = step("a", &[], &log);
        bad.fails = true;
        let ops = vec![bad, step("b", &["a"], &log), step("c", &["b"], &log), step("x", &[], &log)];
        let report = run_operations(&serial(ErrorPolicy::ContinueOnError), &ops).await.unwrap();
        assert_eq!(report.succeeded.len(), 1);
        let skipped: Vec<_> = report.skipped.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(skipped, vec!["b", "c"]);
    }
}
