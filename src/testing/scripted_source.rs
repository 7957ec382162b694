//! [`ScriptedSource`]: a [`Source`] that hands out a scripted list of steps, then
//! [`Step::Finished`] for ever.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;

use crate::error::Result;
use crate::model::ChangeSet;
use crate::source::{After, Read, Source, Step, Txn};

/// What was asked of a [`ScriptedSource`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceLog {
    /// Calls to `next`.
    pub nexts: usize,
    /// For each call to `reset`, the calls to `next` made before it.
    pub resets: Vec<usize>,
    /// Calls to `next` right after a retryable error, without the `reset` the contract asks
    /// for in between.
    pub next_without_reset: usize,
    /// Steps of the script not handed out yet.
    pub left: usize,
}

/// A shared view of a [`ScriptedSource`]'s log.
#[derive(Debug, Clone, Default)]
pub struct SourceHandle(Arc<Mutex<SourceLog>>);

impl SourceHandle {
    pub fn log(&self) -> MutexGuard<'_, SourceLog> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// See the module doc.
pub struct ScriptedSource {
    script: VecDeque<Result<Step>>,
    log: SourceHandle,
    /// The last result was a retryable error, and no reset came since.
    owes_reset: bool,
}

impl ScriptedSource {
    pub fn new(script: impl IntoIterator<Item = Result<Step>>) -> Self {
        let script: VecDeque<_> = script.into_iter().collect();
        let log = SourceHandle::default();
        log.log().left = script.len();
        ScriptedSource {
            script,
            log,
            owes_reset: false,
        }
    }

    pub fn handle(&self) -> SourceHandle {
        self.log.clone()
    }

    /// A read of `set`'s table.
    pub fn read(set: ChangeSet, after: After) -> Result<Step> {
        Ok(Step::Read(Read {
            table: set.table,
            changes: Some(set),
            after,
        }))
    }

    /// A source transaction (`complete`), or a chunk of one.
    pub fn txn(parts: Vec<ChangeSet>, complete: bool) -> Result<Step> {
        Ok(Step::Txn(Txn {
            parts,
            complete,
            flush: false,
        }))
    }
}

impl Source for ScriptedSource {
    fn next(&mut self) -> BoxFuture<'_, Result<Step>> {
        let step = self.script.pop_front().unwrap_or(Ok(Step::Finished));
        let mut log = self.log.log();
        log.nexts += 1;
        log.left = self.script.len();
        if self.owes_reset {
            log.next_without_reset += 1;
        }
        self.owes_reset = matches!(&step, Err(e) if e.is_retryable());
        Box::pin(std::future::ready(step))
    }

    fn reset(&mut self) {
        self.owes_reset = false;
        let mut log = self.log.log();
        let nexts = log.nexts;
        log.resets.push(nexts);
    }
}
