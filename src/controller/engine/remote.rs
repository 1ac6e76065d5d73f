//! Remote work in the engine: tasks sent by skill whose placement lets them leave the host
//! go to a joined peer ([`crate::discovery::remote`]). `lan` tasks are offered to a peer
//! before the local dispatch pass, `any` tasks after it (those no free local agent took).
//! A task whose peer fails returns to the queue; with no peer able to take it, a local agent
//! with the skill does.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::{Engine, Error, State, TaskRef, Work, WorkflowState, lock};
use crate::api::workflow::{Placement, TaskPhase};
use crate::controller::dispatch::Target;
use crate::controller::plan;
use crate::discovery::remote::PeerFailure;

/// How the status names the agent of an attempt that ran on a peer: `peer/NODE`.
pub const PEER_PREFIX: &str = "peer/";
/// The status reason of a task whose peer failed and that waits to run again.
pub const PEER_FAILED: &str = "PeerFailed";
/// The namespace whose tasks may run on peers (their gateways' roots serve it).
pub const REMOTE_NAMESPACE: &str = "default";
/// How soon such a task is dispatched again.
const AGAIN_AFTER: Duration = Duration::from_millis(200);

impl Engine {
    /// Sends the queued tasks of `placement` that a peer can take now to their peers.
    pub(super) fn dispatch_remote(self: &Arc<Self>, placement: Placement) {
        let Some(remote) = self.config.remote.clone() else { return };
        let mut picked = Vec::new();
        {
            let mut st = lock(&self.state);
            let State { queue, workflows, .. } = &mut *st;
            if queue.is_empty() {
                return;
            }
            let taken = queue.take(|q| {
                let (Work::Task(t), Target::Skill(skill)) = (&q.item, &q.target) else { return false };
                // Replies and resumed attempts go back to the agent that holds their A2A task;
                // peers are asked for the skills of their namespace `default` only.
                if t.resume.is_some() || t.reply.is_some() || t.workflow.0 != REMOTE_NAMESPACE {
                    return false;
                }
                let wanted = workflows
                    .get(&t.workflow)
                    .and_then(|w| Some(Placement::of(&w.spec, &w.spec.tasks[w.index.position(&t.task)?])))
                    == Some(placement);
                if !wanted {
                    return false;
                }
                match remote.pick(skill) {
                    Some(node) => {
                        picked.push((node, skill.clone()));
                        true
                    }
                    None => false,
                }
            });
            for (q, (node, skill)) in taken.into_iter().zip(picked) {
                let Work::Task(t) = q.item else { continue };
                tracing::info!(workflow = %t.workflow.1, task = %t.task, peer = %node, %skill, "sending a task to a peer");
                let this = self.clone();
                tokio::spawn(this.execute_remote(remote.clone(), t, node, skill));
            }
        }
    }

    /// Every tick: peers may have appeared or recovered (a dispatch pass), and breaker
    /// transitions become Events.
    pub(super) fn remote_tick(&self) {
        let Some(remote) = &self.config.remote else { return };
        for t in remote.take_transitions() {
            let reason = match t.to {
                crate::discovery::breaker::State::Open => "PeerBreakerOpened",
                crate::discovery::breaker::State::HalfOpen => "PeerBreakerHalfOpen",
                crate::discovery::breaker::State::Closed => "PeerBreakerClosed",
            };
            let warning = t.to == crate::discovery::breaker::State::Open;
            let message = format!("peer {}: breaker {} -> {}: {}", t.peer, t.from, t.to, t.why);
            crate::controller::events::record_about_node(&self.client, &t.peer, warning, reason, message);
        }
        if !lock(&self.state).queue.is_empty() {
            self.wake.notify_one();
        }
    }
}

impl WorkflowState {
    /// Attempt `t` (token `token`) failed on its peer: the task waits again (a short while),
    /// the attempt not counted, unless the attempt is no longer current (then nothing).
    /// Returns the outcome to record instead, when it cannot go back.
    pub(super) fn back_to_queue(
        &mut self,
        t: &TaskRef,
        token: u64,
        f: PeerFailure,
        now: Timestamp,
    ) -> Option<Result<super::Outcome, Error>> {
        let current = *t.uid == *self.uid
            && !self.cancel_requested
            && self.attempts.is_current(&t.task, token)
            && self.index.position(&t.task).is_some_and(|i| self.status.tasks[i].phase == TaskPhase::Running);
        if !current {
            return Some(Err(Error::Peer(f)));
        }
        let i = self.index.position(&t.task)?;
        self.attempts.end(&t.task, token);
        let until = now + AGAIN_AFTER;
        tracing::warn!(task = %t.task, peer = %f.node, error = %f.error, "a peer failed: the task goes back to the queue");
        plan::record_deferred(&mut self.status, i, until, PEER_FAILED, format!("{f}: it runs again elsewhere"));
        self.wake_at = Some(self.wake_at.map_or(until, |x| x.min(until)));
        self.touch(i);
        None
    }
}
