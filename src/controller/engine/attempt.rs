//! One attempt of a task: the start recorded, the message rendered, the A2A exchange (or the
//! stdio run) within the task's deadline, the outcome (a long output kept in ConfigMaps
//! beside the workflow) recorded under the task's name.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::{Begun, Engine, Error, MAX_OUTPUT_IN_STATUS, Outcome, Output, State, TaskRef, Waiting, lock};
use crate::a2a;
use crate::a2a::transport::Addressing;
use crate::api::Agent;
use crate::api::agent::Protocol;
use crate::api::workflow::{TaskPhase, WorkflowStatus};
use crate::controller::outputs::{self, Owner};
use crate::controller::plan;
use crate::controller::rate::Permit;

impl Engine {
    /// Runs one attempt on `agent_name` and records the outcome (following the A2A task of an
    /// attempt started before a restart, when `t.resume` names one).
    pub(super) async fn execute(self: Arc<Self>, t: TaskRef, agent_name: String, permit: Option<Permit>) {
        let resume_id = t.resume.clone();
        let token = self.next_token.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = permit {
            lock(&self.state).permits.insert(token, p);
        }
        // Record the start, and note the upstream outputs the message needs in whole.
        let started = {
            let now = Timestamp::now();
            let mut st = lock(&self.state);
            let State { workflows, agents, .. } = &mut *st;
            let known = agents.contains_key(&(t.workflow.0.clone(), agent_name.clone()));
            match workflows.get_mut(&t.workflow) {
                Some(w) if known => w.begin(&t, token, &agent_name, now).map(|begun| {
                    let i = w.index.position(&t.task).unwrap_or_default();
                    let needed: Vec<(String, u32)> = plan::long_outputs_used(&w.spec, &w.status, i)
                        .into_iter()
                        .filter(|(_, key)| !w.full_outputs.contains_key(key))
                        .map(|(j, key)| (key, w.status.tasks[j].attempts))
                        .collect();
                    (begun, needed)
                }),
                _ => None,
            }
        };
        self.flush.notify_one();
        let outcome = match started {
            None => Err(Error::Gone),
            Some((begun, needed)) => match self.load_outputs(&t, needed).await {
                Err(e) => Err(e),
                Ok(()) => self.attempt(&t, token, &agent_name, resume_id, begun).await,
            },
        };
        let outcome = self.outcome(&t, outcome).await;
        self.finish(&t, token, &agent_name, outcome);
    }

    /// What an answer becomes in the status (a long output kept beside the workflow).
    async fn outcome(&self, t: &TaskRef, answer: Result<Answer, Error>) -> Result<Outcome, Error> {
        match answer {
            Ok(Answer::Text(text)) if text.len() > MAX_OUTPUT_IN_STATUS => {
                self.store_output(t, text).await.map(Outcome::Done)
            }
            Ok(Answer::Text(text)) => Ok(Outcome::Done(Output { text, reference: None, whole: None, parts: None })),
            Ok(Answer::Parts(parts)) => self.keep_parts(t, parts).await.map(Outcome::Done),
            Ok(Answer::Waiting(w)) => Ok(Outcome::Waiting(w)),
            Err(e) => Err(e),
        }
    }

    /// Runs one attempt of `t` on peer `node` (whose breaker let it through), sent to its
    /// gateway by `skill`, and records the outcome. The status names the agent `peer/NODE`.
    /// When the peer fails (not the task: the peer), the attempt goes back to the queue, to
    /// run on another peer or on this host: a task may then run twice, its result is
    /// recorded once.
    pub(super) async fn execute_remote(
        self: Arc<Self>,
        remote: Arc<crate::discovery::remote::RemoteWork>,
        t: TaskRef,
        node: String,
        skill: String,
    ) {
        let token = self.next_token.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let label = format!("{}{node}", super::remote::PEER_PREFIX);
        let started = {
            let now = Timestamp::now();
            let mut st = lock(&self.state);
            st.workflows.get_mut(&t.workflow).and_then(|w| {
                let begun = w.begin(&t, token, &label, now)?;
                let i = w.index.position(&t.task)?;
                let needed: Vec<(String, u32)> = plan::long_outputs_used(&w.spec, &w.status, i)
                    .into_iter()
                    .filter(|(_, key)| !w.full_outputs.contains_key(key))
                    .map(|(j, key)| (key, w.status.tasks[j].attempts))
                    .collect();
                Some((begun, needed))
            })
        };
        self.flush.notify_one();
        let answer = match started {
            None => {
                remote.abandon(&node);
                Err(Error::Gone)
            }
            Some((begun, needed)) => match self.load_outputs(&t, needed).await {
                Err(e) => {
                    remote.abandon(&node);
                    Err(e)
                }
                Ok(()) => self.attempt_remote(&remote, &t, token, &node, &skill, begun).await,
            },
        };
        let outcome = self.outcome(&t, answer).await;
        self.finish(&t, token, &label, outcome);
    }

    async fn attempt_remote(
        &self,
        remote: &crate::discovery::remote::RemoteWork,
        t: &TaskRef,
        token: u64,
        node: &str,
        skill: &str,
        begun: Begun,
    ) -> Result<Answer, Error> {
        let Begun { cancelled: mut rx, .. } = begun;
        let prepared = {
            let st = lock(&self.state);
            st.workflows
                .get(&t.workflow)
                .filter(|w| w.attempts.is_current(&t.task, token))
                .and_then(|w| Some((w, w.index.position(&t.task)?)))
                .map(|(w, i)| {
                    let full = &w.full_outputs;
                    let message = plan::render_message_with(&w.spec, &w.status, i, |key| full.get(key).map(|s| &**s));
                    let task = &w.spec.tasks[i];
                    let timeout = task.timeout.as_ref().or(w.spec.timeout.as_ref()).map(|d| d.value());
                    (message, timeout, task.data.clone(), plan::message_id(&w.uid, &task.name, t.attempt))
                })
        };
        let Some((message, timeout, data, message_id)) = prepared else {
            remote.abandon(node);
            return Err(Error::Gone);
        };
        let text = match message {
            Ok(m) => m,
            Err(e) => {
                remote.abandon(node);
                return Err(e.into());
            }
        };
        let cancelled = async move {
            let _ = rx.wait_for(|c| *c).await;
        };
        let mut parts = vec![a2a::types::Part::text(text)];
        if let Some(d) = data {
            parts.push(a2a::types::Part::data(d));
        }
        let mut message = a2a::types::Message::new(a2a::types::Role::User, message_id, parts);
        crate::traces::annotate(&mut message.metadata);
        message.context_id = Some(plan::context_id(&t.uid, &t.task, t.attempt));
        let opts = a2a::client::FollowOptions { timeout, ..Default::default() };
        // The request is answered (for the rate limits) when the exchange ends.
        let r = remote.send(node, skill, message, &opts, cancelled).await;
        self.rate_answered(token);
        match r {
            Ok(Ok(resp)) => response_result(resp),
            Ok(Err(e)) => Err(Error::A2a(e)),
            Err(f) => Err(Error::Peer(f)),
        }
    }

    /// Reads the whole outputs of upstream tasks `needed` from beside the workflow, into the
    /// workflow's cache.
    async fn load_outputs(&self, t: &TaskRef, needed: Vec<(String, u32)>) -> Result<(), Error> {
        let k = &t.workflow;
        for (name, attempt) in needed {
            let owner = Owner { namespace: &k.0, name: &k.1, uid: &t.uid };
            let (text, _) = match outputs::load(&self.client, &owner, &name, attempt).await {
                Ok(loaded) => loaded,
                Err(source) => return Err(Error::LoadOutput { task: name, source }),
            };
            if let Some(w) = lock(&self.state).workflows.get_mut(k).filter(|w| *w.uid == *t.uid) {
                w.full_outputs.insert(name, Arc::from(text));
            }
        }
        Ok(())
    }

    /// Keeps an output longer than status holds in ConfigMaps beside the workflow; the status
    /// then gets its first 64 KiB and a reference. A write that keeps failing fails the attempt
    /// (its output would be lost otherwise).
    pub(super) async fn store_output(&self, t: &TaskRef, text: String) -> Result<Output, Error> {
        let (uid, task) = (t.uid.to_string(), t.task.to_string());
        let owner = Owner { namespace: &t.workflow.0, name: &t.workflow.1, uid: &uid };
        let mut wait = Duration::from_millis(100);
        let mut tries = 0;
        let stored = loop {
            match outputs::store(&self.client, &owner, &task, t.attempt, &text).await {
                Ok(s) => break s,
                Err(e) if tries < 4 => {
                    tracing::warn!(workflow = %t.workflow.1, task = %task, error = %e, "storing a long output failed; retrying");
                    tries += 1;
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(source) => return Err(Error::StoreOutput { bytes: text.len(), source }),
            }
        };
        // The workflow may have gone meanwhile (its deletion cascaded before these existed).
        let gone = lock(&self.state)
            .workflows
            .get(&t.workflow)
            .is_none_or(|w| w.uid != uid || w.index.position(&task).is_none());
        if gone {
            outputs::remove(&self.client, &owner, &task).await;
            return Err(Error::WorkflowGone);
        }
        if let Some(n) = stored.original_bytes {
            tracing::warn!(workflow = %t.workflow.1, task = %task, bytes = n, kept = stored.bytes, "output over the cap was cut");
        }
        let reference = stored.describe(&t.workflow.1, &task);
        let head = outputs::prefix(&text, MAX_OUTPUT_IN_STATUS).to_owned();
        let mut whole = text;
        whole.truncate(stored.bytes);
        Ok(Output { text: head, reference: Some(reference), whole: Some(Arc::from(whole)), parts: None })
    }

    /// Sends (or follows) one attempt and waits for its result.
    async fn attempt(
        &self,
        t: &TaskRef,
        token: u64,
        agent_name: &str,
        resume_id: Option<String>,
        begun: Begun,
    ) -> Result<Answer, Error> {
        let Begun { cancelled: mut rx, sent_before, reserved } = begun;
        let prepared = {
            let mut st = lock(&self.state);
            let State { workflows, agents, .. } = &mut *st;
            let view = agents.get_mut(&(t.workflow.0.clone(), agent_name.to_owned()));
            let current = workflows.get(&t.workflow).filter(|w| w.attempts.is_current(&t.task, token));
            match (current.and_then(|w| Some((w, w.index.position(&t.task)?))), view) {
                (Some((w, i)), Some(view)) => {
                    let full = &w.full_outputs;
                    let message = plan::render_message_with(&w.spec, &w.status, i, |key| full.get(key).map(|s| &**s));
                    let task = &w.spec.tasks[i];
                    let timeout = task.timeout.as_ref().or(w.spec.timeout.as_ref()).map(|d| d.value());
                    let data = task.data.clone();
                    let mut endpoints = view.agent.status.as_ref().map(|s| s.endpoints.clone()).unwrap_or_default();
                    let endpoint = (!endpoints.is_empty()).then(|| {
                        view.next_endpoint = view.next_endpoint.wrapping_add(1);
                        let at = view.next_endpoint % endpoints.len();
                        // The chosen one first, then the others (where a resumed task may live).
                        endpoints.rotate_left(at);
                        endpoints
                    });
                    let stdio = view.agent.spec.protocol() == Protocol::Stdio;
                    let agent = stdio.then(|| view.agent.clone());
                    let target = view.agent.clone();
                    Some((
                        message,
                        timeout,
                        data,
                        endpoint,
                        agent,
                        target,
                        plan::message_id(&w.uid, &task.name, t.attempt),
                    ))
                }
                _ => None,
            }
        };
        let Some((message, timeout, data, endpoint, stdio_agent, target, message_id)) = prepared else {
            return Err(Error::Gone);
        };
        // A message too large to send (or a reference gone) fails the attempt with the reason.
        let message = message?;
        let cancelled = async move {
            let _ = rx.wait_for(|c| *c).await;
        };
        if let Some(agent) = stdio_agent {
            let Some(runner) = &self.config.stdio else {
                return Err(Error::StdioLocalOnly);
            };
            // The run is the request: it counts against the rate limits from its start.
            self.rate_answered(token);
            let run = async { runner.run(&agent, message).await.map(Answer::Text).map_err(Error::Stdio) };
            return match timeout {
                Some(d) => tokio::select! {
                    r = tokio::time::timeout(d, run) => r.unwrap_or(Err(Error::TimedOut(d))),
                    () = cancelled => Err(Error::Cancelled),
                },
                None => tokio::select! {
                    r = run => r,
                    () = cancelled => Err(Error::Cancelled),
                },
            };
        }
        match endpoint {
            None => Err(Error::NoEndpoint(agent_name.to_owned())),
            Some(urls) => {
                let a = (t, token, &*target);
                let resume = match resume_id {
                    Some(id) => Resume::Task(id),
                    None if sent_before => Resume::Lookup,
                    None => Resume::Send { reserved },
                };
                let trace =
                    crate::traces::attempt_context(&t.uid, &t.task, t.attempt, t.reply.as_ref().map(|r| &*r.id));
                let exchange = self.a2a_attempt(a, &urls, message_id, message, data, timeout, resume, cancelled);
                crate::traces::within(trace, exchange).await
            }
        }
    }
    #[allow(clippy::too_many_arguments)]
    async fn a2a_attempt(
        &self,
        (t, token, target): (&TaskRef, u64, &crate::api::Agent),
        urls: &[String],
        message_id: String,
        text: String,
        data: Option<serde_json::Value>,
        timeout: Option<Duration>,
        resume: Resume,
        cancelled: impl Future<Output = ()>,
    ) -> Result<Answer, Error> {
        let url = urls.first().map(String::as_str).unwrap_or_default();
        let mut client = self.client_for(target, url).await?;
        let opts = a2a::client::FollowOptions { timeout, ..Default::default() };
        let mut cancelled = std::pin::pin!(cancelled);
        let context_id = plan::context_id(&t.uid, &t.task, t.attempt);
        let reserved = match resume {
            Resume::Send { reserved } => reserved,
            _ => None,
        };
        let resume_id = match resume {
            Resume::Task(id) => Some(id),
            Resume::Send { .. } => None,
            // This attempt may have reached the agent before a restart: its task, if the agent
            // has one of the attempt's context, is followed instead of sending again.
            Resume::Lookup => match self.find_sent(target, urls, &context_id).await? {
                Some((replica, task)) => {
                    tracing::info!(workflow = %t.workflow.1, task = %t.task, a2a_task = %task.id, "found the attempt's A2A task by its context; following it");
                    self.record_task_id(t, token, &task.id);
                    if task.status.state.is_terminal() || task.status.state.is_interrupted() {
                        return task_result(&task);
                    }
                    client = replica;
                    Some(task.id)
                }
                None => None,
            },
        };
        let task_id = match resume_id {
            Some(id) if t.reply.is_some() => {
                let reply = t.reply.as_deref().cloned().unwrap_or_default();
                let (replica, answer) =
                    self.deliver_reply(t, (target, urls), &id, &reply, timeout, cancelled.as_mut()).await?;
                if let Some(answer) = answer {
                    return answer;
                }
                client = replica;
                id
            }
            Some(id) => {
                // A resumed attempt lives on one replica of the agent: find the one that knows it.
                for other in urls.iter().skip(1) {
                    match client.get_task(&id).await {
                        Err(e) if e.rpc_code() == Some(a2a::types::ErrorCode::TaskNotFound) => {
                            client = self.client_for(target, other).await?;
                        }
                        _ => break,
                    }
                }
                id
            }
            None => {
                let mut parts = vec![a2a::types::Part::text(text)];
                if let Some(d) = data {
                    parts.push(a2a::types::Part::data(d));
                }
                let mut message = a2a::types::Message::new(a2a::types::Role::User, message_id, parts);
                crate::traces::annotate(&mut message.metadata);
                message.context_id = Some(context_id.clone());
                // One request for the whole exchange when the agent allows it: a stream (the task
                // id comes first and is kept, as below), or a blocking SendMessage whose context,
                // in the store before it is sent, finds the task after a restart.
                if client.agent_card().await?.capabilities.streaming {
                    self.record_context(t, token, &context_id);
                    let answered = || self.rate_answered(token);
                    let named = |id: &str| self.record_task_id(t, token, id);
                    let r = client.stream_and_follow(message, &opts, cancelled, answered, named).await?;
                    return response_result(r);
                }
                if client.offers_list_tasks().await {
                    let Some(round) = self.reserve_contexts(t, token, &target_name(target), &context_id, reserved)
                    else {
                        return Err(Error::Gone);
                    };
                    tokio::select! {
                        written = self.written_by(&t.workflow, &t.uid, round) => if !written {
                            return Err(Error::Gone);
                        },
                        () = &mut cancelled => return Err(Error::CancelledBeforeAnswer),
                    }
                    let answered = || self.rate_answered(token);
                    let r = client.send_and_wait(message, &opts, cancelled, answered).await?;
                    if let a2a::types::SendMessageResponse::Task(task) = &r {
                        self.record_task_id(t, token, &task.id);
                    }
                    return response_result(r);
                }
                let config = a2a::types::SendMessageConfiguration { return_immediately: true, ..Default::default() };
                let sent = tokio::select! {
                    r = client.send_message(message, Some(config)) => {
                        self.rate_answered(token);
                        r?
                    }
                    () = &mut cancelled => return Err(Error::CancelledBeforeAnswer),
                };
                match sent {
                    a2a::types::SendMessageResponse::Message(m) => {
                        return Ok(Answer::Parts(m.parts));
                    }
                    a2a::types::SendMessageResponse::Task(task) => {
                        if task.status.state.is_terminal() || task.status.state.is_interrupted() {
                            return task_result(&task);
                        }
                        self.record_task_id(t, token, &task.id);
                        task.id
                    }
                }
            }
        };
        let task = client.follow_task(&task_id, &opts, cancelled).await?;
        task_result(&task)
    }

    /// Keeps the A2A task id of attempt `t` in its status as soon as the agent names it, so a
    /// restart follows the task instead of sending again.
    fn record_task_id(&self, t: &TaskRef, token: u64, id: &str) {
        if let Some(w) = lock(&self.state).workflows.get_mut(&t.workflow)
            && w.attempts.is_current(&t.task, token)
            && let Some(i) = w.index.position(&t.task)
        {
            w.status.tasks[i].a2a_task_id = Some(id.to_owned());
            w.touch(i);
        }
        self.flush.notify_one();
    }

    /// Notes in the status of attempt `t` the context its message is sent in.
    fn record_context(&self, t: &TaskRef, token: u64, context_id: &str) {
        if let Some(w) = lock(&self.state).workflows.get_mut(&t.workflow)
            && w.attempts.is_current(&t.task, token)
            && let Some(i) = w.index.position(&t.task)
            && w.status.tasks[i].a2a_context_id.as_deref() != Some(context_id)
        {
            w.status.tasks[i].a2a_context_id = Some(context_id.to_owned());
            w.touch(i);
        }
    }

    /// Records the context of attempt `t` in its status before a blocking send (a restarted
    /// engine finds the task by it), and, ahead of their start, the contexts of the attempts
    /// of the same workflow queued next for agent `agent`: up to twice its capacity (at most
    /// [`MAX_RESERVED`]) recorded ahead and not started yet. One durable status write then serves the sends of a whole
    /// generation of slots instead of one each. Returns the status write round after which
    /// this attempt's context is in the store (`reserved`, when it was recorded ahead); `None`
    /// when the attempt is no longer current.
    ///
    /// A context recorded ahead is this attempt's own (the attempt number is in it), so a
    /// restarted engine treats it as any context: the task may have been sent, and is looked
    /// for with `ListTasks` before it is sent. That costs at most one `ListTasks` per reserved
    /// attempt, once, after a crash.
    fn reserve_contexts(
        &self,
        t: &TaskRef,
        token: u64,
        agent: &str,
        context_id: &str,
        reserved: Option<u64>,
    ) -> Option<u64> {
        let mut st = lock(&self.state);
        let State { workflows, queue, .. } = &mut *st;
        let w = workflows.get_mut(&t.workflow).filter(|w| w.attempts.is_current(&t.task, token))?;
        let i = w.index.position(&t.task)?;
        if let Some(round) = reserved
            && w.status.tasks[i].a2a_context_id.as_deref() == Some(context_id)
        {
            return Some(round);
        }
        // Under the state lock: rounds that begin after this include every change made now.
        let round = self.durable.round_after_now();
        if w.status.tasks[i].a2a_context_id.as_deref() != Some(context_id) {
            w.status.tasks[i].a2a_context_id = Some(context_id.to_owned());
            w.touch(i);
        }
        // Attempts starting together do not each reserve a round of their own.
        let ahead = queue.agent(&t.workflow.0, agent).map_or(0, |s| 2 * s.capacity as usize).min(MAX_RESERVED);
        let ahead = ahead.saturating_sub(w.reserved.len());
        let mut taken = 0;
        // Entries of other workflows may come first: the scan is bounded all the same.
        for q in queue.iter().take(ahead.saturating_mul(4)) {
            if taken >= ahead {
                break;
            }
            let Some(next) = q.item.task() else { continue };
            let ours = match &q.target {
                crate::controller::dispatch::Target::Agent(a) => a == agent,
                crate::controller::dispatch::Target::Skill(_) => true,
            };
            if !ours
                || next.workflow != t.workflow
                || *next.uid != *w.uid
                || next.resume.is_some()
                || next.reply.is_some()
                || w.reserved.contains_key(&next.task)
            {
                continue;
            }
            let Some(j) = w.index.position(&next.task) else { continue };
            if w.status.tasks[j].phase != TaskPhase::Pending || w.status.tasks[j].a2a_context_id.is_some() {
                continue;
            }
            w.status.tasks[j].a2a_context_id = Some(plan::context_id(&w.uid, &next.task, next.attempt));
            w.touch(j);
            w.reserved.insert(next.task.clone(), (next.attempt, round));
            taken += 1;
        }
        Some(round)
    }

    /// The task of context `context_id` on one of the agent's `urls` (those that answer
    /// `ListTasks`), with the client of the replica that has it.
    async fn find_sent(
        &self,
        target: &Agent,
        urls: &[String],
        context_id: &str,
    ) -> Result<Option<(a2a::Client, a2a::types::Task)>, Error> {
        for url in urls {
            let client = self.client_for(target, url).await?;
            if !client.offers_list_tasks().await {
                continue;
            }
            if let Some(task) = client.find_task_by_context(context_id).await? {
                return Ok(Some((client, task)));
            }
        }
        Ok(None)
    }

    /// Sends `CancelTask` for A2A tasks that waited for input when their workflow task was
    /// cancelled (the workflow was cancelled or its deadline passed), so they do not stay open
    /// on their agents. Best effort, in the background: the workflow's status does not wait
    /// for the agent, and a failure is logged.
    pub(super) fn cancel_abandoned(self: &Arc<Self>, open: Vec<OpenTask>) {
        if open.is_empty() {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            for t in open {
                let mut last = None;
                for url in &t.urls {
                    let client = match this.client_for(&t.target, url).await {
                        Ok(c) => c,
                        Err(e) => {
                            last = Some(e.to_string());
                            continue;
                        }
                    };
                    match tokio::time::timeout(CANCEL_TIMEOUT, client.cancel_task(&t.a2a_task_id)).await {
                        Ok(Ok(_)) => {
                            last = None;
                            break;
                        }
                        // Another replica may hold it.
                        Ok(Err(e)) if e.rpc_code() == Some(a2a::types::ErrorCode::TaskNotFound) => {
                            last = Some(e.to_string());
                        }
                        Ok(Err(e)) if e.rpc_code() == Some(a2a::types::ErrorCode::TaskNotCancelable) => {
                            last = None;
                            break;
                        }
                        Ok(Err(e)) => last = Some(e.to_string()),
                        Err(_) => last = Some(format!("{url}: no answer within {CANCEL_TIMEOUT:?}")),
                    }
                }
                if let Some(error) = last {
                    tracing::warn!(agent = %t.agent, a2a_task = %t.a2a_task_id, %error, "cancelling a task that waited for input failed");
                }
            }
        });
    }

    fn finish(self: &Arc<Self>, t: &TaskRef, token: u64, agent: &str, outcome: Result<Outcome, Error>) {
        // A permit still held here was never used for a request.
        self.rate_forget(token);
        let now = Timestamp::now();
        let retry_after = match &outcome {
            Err(Error::A2a(e)) => e.retry_after(),
            _ => None,
        };
        if let Some(after) = retry_after {
            // No request goes to the agent before then, from any task.
            self.hold_agent(&t.workflow.0, agent, after);
        }
        let mut event = None;
        {
            let mut st = lock(&self.state);
            st.queue.release(&t.workflow.0, agent);
            if let Some(w) = st.workflows.get_mut(&t.workflow) {
                // A peer that failed (not the task) sends the attempt back to the queue.
                let outcome = match outcome {
                    Err(Error::Peer(f)) => w.back_to_queue(t, token, f, now),
                    other => Some(other),
                };
                let Some(outcome) = outcome else {
                    drop(st);
                    self.schedule(&t.workflow);
                    return;
                };
                let outcome = match (outcome, retry_after) {
                    (Err(e), Some(after)) => match w.defer_attempt(t, token, agent, after, e, now) {
                        Ok((warning, note)) => {
                            event = Some((w.uid.clone(), warning, note));
                            None
                        }
                        Err(e) => Some(Err(e)),
                    },
                    (outcome, _) => Some(outcome),
                };
                if let Some(outcome) = outcome {
                    w.deferrals.remove(&*t.task);
                    if !w.record(t, token, outcome, now) {
                        tracing::debug!(workflow = %t.workflow.1, task = %t.task, attempt = t.attempt, "outcome of a superseded attempt dropped");
                    }
                }
            }
        }
        // The freed slot goes to a task already queued at once, not after the workflow's next
        // step (which a large workflow may put off for a few milliseconds).
        self.wake.notify_one();
        if let Some((uid, warning, note)) = event {
            let note = format!("{}: {note}", crate::controller::events::tasks_phrase(&[&*t.task]));
            let (ns, name) = &t.workflow;
            crate::controller::events::record(
                &self.client,
                ns,
                name,
                &uid,
                warning,
                crate::controller::rate::RATE_LIMITED,
                note,
            );
        }
        self.schedule(&t.workflow);
    }
}

/// The most attempts whose context one blocking send records ahead (see
/// `Engine::reserve_contexts`).
const MAX_RESERVED: usize = 128;

/// The Agent's name.
fn target_name(agent: &Agent) -> String {
    agent.metadata.name.clone().unwrap_or_default()
}

/// How long cancelling an abandoned A2A task may take on one replica.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// How a2a reaches an agent at its endpoints: an agent a2a runs (a local process, a
/// Deployment behind its Service) at the address a2a chose, whatever host its card
/// advertises; a `url` agent where its card says (see [`Addressing`]).
pub(crate) fn addressing(agent: &Agent) -> Addressing {
    if agent.spec.url.is_some() { Addressing::Card } else { Addressing::Base }
}

/// An A2A task still open on an agent, with the agent's endpoints (where it may live).
pub(super) struct OpenTask {
    agent: String,
    /// The agent as last seen, for its credentials.
    target: Arc<crate::api::Agent>,
    a2a_task_id: String,
    urls: Vec<String>,
}

/// The open A2A tasks of the workflow tasks `indices` (those that have an agent and an id).
pub(super) fn open_tasks(
    namespace: &str,
    status: &WorkflowStatus,
    indices: &[usize],
    agents: &std::collections::HashMap<super::Key, super::AgentView>,
) -> Vec<OpenTask> {
    indices
        .iter()
        .filter_map(|&i| {
            let t = status.tasks.get(i)?;
            let (agent, a2a_task_id) = (t.agent.clone()?, t.a2a_task_id.clone()?);
            let view = agents.get(&(namespace.to_owned(), agent.clone()))?;
            let urls = view.agent.status.as_ref().map(|s| s.endpoints.clone()).unwrap_or_default();
            Some(OpenTask { agent, target: view.agent.clone(), a2a_task_id, urls })
        })
        .collect()
}

/// How an attempt reaches its A2A task.
enum Resume {
    /// A new message; its context was recorded ahead, durable with status write round `.0`.
    Send { reserved: Option<u64> },
    /// The task the status names (after a restart, or to deliver a reply).
    Task(String),
    /// The attempt may have been sent before a restart: its task is looked for by context,
    /// and a new message sent only if the agent has none.
    Lookup,
}

/// The outcome of a request answered at the end of the exchange.
fn response_result(r: a2a::types::SendMessageResponse) -> Result<Answer, Error> {
    match r {
        a2a::types::SendMessageResponse::Message(m) => Ok(Answer::Parts(m.parts)),
        // The parts are moved out of the finished task, not copied.
        a2a::types::SendMessageResponse::Task(task) if task.status.state == a2a::types::TaskState::Completed => {
            Ok(Answer::Parts(into_result_parts(task)))
        }
        a2a::types::SendMessageResponse::Task(task) => task_result(&task),
    }
}

/// [`result_parts`] of a task no longer needed.
fn into_result_parts(task: a2a::types::Task) -> Vec<a2a::types::Part> {
    let artifacts: Vec<a2a::types::Part> = task.artifacts.into_iter().flat_map(|a| a.parts).collect();
    if artifacts.is_empty() { task.status.message.map(|m| m.parts).unwrap_or_default() } else { artifacts }
}

/// What one attempt came to, before a long output is stored.
#[derive(Debug)]
pub(super) enum Answer {
    /// A stdio run's stdout.
    Text(String),
    /// The parts of an agent's result: its artifacts' (in order), else its status message's.
    Parts(Vec<a2a::types::Part>),
    Waiting(Waiting),
}

/// The outcome of an A2A task that is finished or waits for the user.
pub(super) fn task_result(task: &a2a::types::Task) -> Result<Answer, Error> {
    use a2a::types::TaskState;
    let waiting = |phase| {
        let question = task.status.message.as_ref().map(a2a::types::Message::text).unwrap_or_default();
        let question = if question.is_empty() { task.output().text } else { question };
        let question = if question.is_empty() { "(the agent did not say what it needs)".to_owned() } else { question };
        Ok(Answer::Waiting(Waiting { phase, a2a_task_id: task.id.clone(), question }))
    };
    match task.status.state {
        TaskState::Completed => Ok(Answer::Parts(result_parts(task))),
        TaskState::InputRequired => waiting(TaskPhase::InputRequired),
        TaskState::AuthRequired => waiting(TaskPhase::AuthRequired),
        state => {
            let text = task.output().text;
            if text.is_empty() {
                Err(Error::EndedSilently { state: state.as_str() })
            } else {
                Err(Error::Ended { state: state.as_str(), text })
            }
        }
    }
}

/// The parts of a task's result: its artifacts' in order, else its status message's (as
/// [`a2a::types::Task::output`] reads the text).
fn result_parts(task: &a2a::types::Task) -> Vec<a2a::types::Part> {
    let artifacts: Vec<a2a::types::Part> = task.artifacts.iter().flat_map(|a| a.parts.iter().cloned()).collect();
    if artifacts.is_empty() {
        task.status.message.iter().flat_map(|m| m.parts.iter().cloned()).collect()
    } else {
        artifacts
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn task(state: &str, status_message: Option<&str>, artifact: Option<&str>) -> a2a::types::Task {
        let message = status_message.map(|t| json!({"role": "ROLE_AGENT", "messageId": "q", "parts": [{"text": t}]}));
        let artifacts: Vec<_> = artifact.iter().map(|t| json!({"artifactId": "a", "parts": [{"text": t}]})).collect();
        serde_json::from_value(json!({"id": "t-1", "contextId": "c",
            "status": {"state": state, "message": message}, "artifacts": artifacts}))
        .expect("task")
    }

    fn waiting(r: Result<Answer, Error>) -> Waiting {
        match r {
            Ok(Answer::Waiting(w)) => w,
            Ok(Answer::Text(t)) => panic!("expected waiting, got the output {t:?}"),
            Ok(Answer::Parts(p)) => panic!("expected waiting, got the output {p:?}"),
            Err(e) => panic!("expected waiting, got the error {e}"),
        }
    }

    #[test]
    fn an_agent_waiting_for_the_user_is_a_waiting_answer_with_its_question() {
        let w = waiting(task_result(&task("TASK_STATE_INPUT_REQUIRED", Some("which city?"), Some("draft"))));
        assert_eq!(
            w,
            Waiting { phase: TaskPhase::InputRequired, a2a_task_id: "t-1".into(), question: "which city?".into() },
            "the status message is the question, not the artifacts"
        );
        let w = waiting(task_result(&task("TASK_STATE_AUTH_REQUIRED", None, Some("need a token"))));
        assert_eq!((w.phase, w.question.as_str()), (TaskPhase::AuthRequired, "need a token"));
        let w = waiting(task_result(&task("TASK_STATE_INPUT_REQUIRED", None, None)));
        assert_eq!(w.question, "(the agent did not say what it needs)");
    }

    #[test]
    fn a_finished_tasks_parts_are_the_same_moved_or_copied() {
        for t in [
            task("TASK_STATE_COMPLETED", Some("a note"), Some("done")),
            task("TASK_STATE_COMPLETED", Some("only the message"), None),
            task("TASK_STATE_COMPLETED", None, None),
        ] {
            assert_eq!(into_result_parts(t.clone()), result_parts(&t));
            let r = response_result(a2a::types::SendMessageResponse::Task(t.clone()));
            assert!(matches!(r, Ok(Answer::Parts(p)) if p == result_parts(&t)));
        }
    }

    #[test]
    fn completed_is_the_output_and_other_ends_fail_the_attempt() {
        assert!(
            matches!(task_result(&task("TASK_STATE_COMPLETED", None, Some("done"))), Ok(Answer::Parts(p)) if p == [a2a::types::Part::text("done")])
        );
        let e = task_result(&task("TASK_STATE_FAILED", Some("boom"), None)).expect_err("a failure");
        assert_eq!(e.to_string(), "TASK_STATE_FAILED: boom");
        let e = task_result(&task("TASK_STATE_REJECTED", None, None)).expect_err("a failure");
        assert_eq!(e.to_string(), "the agent ended the task as TASK_STATE_REJECTED");
    }
}
