//! `a2a run` on a terminal: when an agent asks a question, the run asks the user inline and
//! sends the answer as `a2a reply` would (appended to `spec.replies`), then follows on. Only
//! when stdin and stderr are both terminals; otherwise (and after Ctrl-D) the run ends as a
//! workflow that waits for input, naming the task and its question.

use std::io::BufRead;

use kube::api::Api;
use tokio::sync::mpsc;

use super::client::{Error, Result};
use crate::api::Workflow;
use crate::controller::replies::{self, ReplyRefused};

/// The user's answers, line by line, from a thread that reads stdin (a blocked read must not
/// hold the runtime, nor keep the process alive after a signal ends the run).
pub struct Answers {
    enabled: bool,
    lines: Option<mpsc::UnboundedReceiver<String>>,
}

impl Answers {
    /// Asking is on when stdin and stderr are terminals.
    pub fn new(enabled: bool) -> Self {
        Answers { enabled, lines: None }
    }

    /// Whether questions are asked here (a terminal, and the user has not pressed Ctrl-D).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The next line the user types, trimmed of its line end; `None` at end of input.
    async fn line(&mut self) -> Option<String> {
        let lines = self.lines.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            std::thread::spawn(move || {
                let stdin = std::io::stdin();
                for line in stdin.lock().lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        lines.recv().await
    }

    /// Asks for the answer to every question of workflow `wf` that has none on its way, and
    /// sends each. End of input turns asking off.
    pub async fn ask(
        &mut self,
        bars: &indicatif::MultiProgress,
        api: &Api<Workflow>,
        ns: &str,
        wf: &Workflow,
    ) -> Result<()> {
        let name = wf.metadata.name.clone().unwrap_or_default();
        let status = wf.status.clone().unwrap_or_default();
        // The spec as the engine runs it: `forEach` tasks expanded.
        let spec =
            crate::controller::expand::expand(&wf.spec, &status.tasks).map_or_else(|| wf.spec.clone(), |e| e.spec);
        for t in status.tasks.iter().filter(|t| t.phase.is_waiting()) {
            // Answered already (the engine has not taken it yet), or no longer waiting.
            if let Err(ReplyRefused::AlreadyReplied { .. } | ReplyRefused::NotWaiting { .. }) =
                replies::check(&name, &spec, &status, &t.name, Some("?"), None)
            {
                continue;
            }
            let question = t.message.clone().unwrap_or_default();
            let answer = loop {
                bars.suspend(|| {
                    eprintln!("{name}/{} asks: {question}", t.name);
                    eprint!("answer (Ctrl-D to stop answering)> ");
                });
                match self.line().await {
                    None => {
                        self.enabled = false;
                        eprintln!();
                        return Ok(());
                    }
                    Some(line) if line.trim().is_empty() => {
                        bars.suspend(|| eprintln!("an empty answer is not sent; type the answer, or Ctrl-D to stop"));
                    }
                    Some(line) => break line,
                }
            };
            match super::reply::post(api, &name, ns, "the control plane", &t.name, Some(answer), None).await {
                Ok(reply) => {
                    let _ = bars.println(format!("{name}/{}: reply {} sent", t.name, reply.id));
                }
                // Refused (the task stopped waiting meanwhile): said, and the run goes on.
                Err(Error::Usage(why)) => {
                    let _ = bars.println(format!("{name}/{}: the answer was not sent: {why}", t.name));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
