//! The registry of running jobs: at most one per credential per instance, joined by
//! every request that needs its result.
//!
//! A job is detached from the requests that wait for it (a client that disconnects
//! cannot abandon a renewal halfway). It leaves the registry *before* it publishes its
//! result, so that a request arriving after the result was decided starts a job of its
//! own rather than joining a finished one and getting a result that may be stale (a
//! value refused in the meantime, say).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::record::Record;
use super::CacheError;

pub(crate) type Outcome = Result<Arc<Record>, CacheError>;

/// Where a job's result appears (`None` until it is decided).
pub(crate) type Receiver = watch::Receiver<Option<Outcome>>;

#[derive(Default)]
pub(crate) struct Jobs {
    running: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    by_key: HashMap<String, (u64, Receiver)>,
    next_id: u64,
}

/// The answer of [`Jobs::join_or_register`].
pub(crate) enum Registration {
    /// A job is running: its result will appear here.
    Running(Receiver),
    /// No job was running: the caller runs one, publishing through `publisher`.
    New {
        publisher: Publisher,
        result: Receiver,
    },
}

/// The running job's handle on its registry entry.
pub(crate) struct Publisher {
    jobs: Arc<Jobs>,
    key: String,
    id: u64,
    sender: watch::Sender<Option<Outcome>>,
}

impl Jobs {
    /// Every operation leaves the map consistent, so a poisoned lock is safe to reuse.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running job of `key`, or a new registration for the caller to run.
    pub(crate) fn join_or_register(self: &Arc<Self>, key: &str) -> Registration {
        let mut registry = self.registry();
        if let Some((_, running)) = registry.by_key.get(key) {
            return Registration::Running(running.clone());
        }
        registry.next_id += 1;
        let id = registry.next_id;
        let (sender, result) = watch::channel(None);
        registry
            .by_key
            .insert(key.to_string(), (id, result.clone()));
        Registration::New {
            publisher: Publisher {
                jobs: self.clone(),
                key: key.to_string(),
                id,
                sender,
            },
            result,
        }
    }

    fn unregister(&self, key: &str, id: u64) {
        let mut registry = self.registry();
        if registry
            .by_key
            .get(key)
            .is_some_and(|(running, _)| *running == id)
        {
            registry.by_key.remove(key);
        }
    }

    /// How many jobs are registered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.registry().by_key.len()
    }
}

impl Publisher {
    /// Leaves the registry, then publishes `outcome` to the waiting requests.
    pub(crate) fn publish(self, outcome: Outcome) {
        self.jobs.unregister(&self.key, self.id);
        let _ = self.sender.send(Some(outcome));
    }
}

/// However the job ends (a panic, or its worker dropping it at shutdown), its entry
/// goes, so that no later request joins a job that is gone. Only its own entry: a
/// newer job of the same key may be registered by then.
impl Drop for Publisher {
    fn drop(&mut self) {
        self.jobs.unregister(&self.key, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_job(jobs: &Arc<Jobs>, key: &str) -> (Publisher, Receiver) {
        match jobs.join_or_register(key) {
            Registration::New { publisher, result } => (publisher, result),
            Registration::Running(_) => panic!("a job of {key} is already running"),
        }
    }

    #[test]
    fn requests_join_the_running_job() {
        let jobs = Arc::new(Jobs::default());
        let (_publisher, _) = new_job(&jobs, "k");
        assert!(matches!(
            jobs.join_or_register("k"),
            Registration::Running(_)
        ));
        assert!(matches!(
            jobs.join_or_register("other"),
            Registration::New { .. }
        ));
    }

    /// A request that sees the result published never finds the job still registered:
    /// it would join it and get that result again, however stale.
    #[test]
    fn a_job_leaves_the_registry_before_its_result_appears() {
        let jobs = Arc::new(Jobs::default());
        let (publisher, mut result) = new_job(&jobs, "k");
        publisher.publish(Err(CacheError::LockWaitTimeout("t")));
        assert!(result.borrow_and_update().is_some());
        assert_eq!(jobs.len(), 0);
        let (_next, next_result) = new_job(&jobs, "k");
        assert!(
            next_result.borrow().is_none(),
            "a new job, not the finished one"
        );
    }

    #[test]
    fn a_job_dropped_unfinished_leaves_and_does_not_remove_its_successor() {
        let jobs = Arc::new(Jobs::default());
        let (first, _) = new_job(&jobs, "k");
        jobs.unregister("k", 1);
        let (_second, _) = new_job(&jobs, "k");
        drop(first);
        assert!(matches!(
            jobs.join_or_register("k"),
            Registration::Running(_)
        ));
        let (third, _) = new_job(&jobs, "x");
        drop(third);
        assert!(matches!(
            jobs.join_or_register("x"),
            Registration::New { .. }
        ));
    }
}
