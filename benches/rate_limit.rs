//! The cost of rate limits in dispatch: one request through an agent's and a budget's limit
//! (check, count, answer), the check of a window filled to the largest `requests` allowed
//! (10,000), and a dispatch pass over 10,000 tasks queued for a held agent while another agent
//! takes one.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use a2a::api::Priority;
use a2a::api::ratelimit::RateLimit;
use a2a::controller::dispatch::{DispatchQueue, Gate, Queued, Target};
use a2a::controller::rate::{RateLimits, Scope};
use criterion::{Criterion, criterion_group, criterion_main};

fn limit(requests: u32, per: &str) -> RateLimit {
    RateLimit { requests, per: per.parse().expect("duration") }
}

/// The engine's gate, reduced to its limits: every task goes to the agent's scope only.
struct Limited<'a>(&'a mut RateLimits, Instant);

impl Gate<u32> for Limited<'_> {
    type Pass = ();
    fn allows(&mut self, ns: &str, name: &str, _: &u32) -> bool {
        self.0.held(&[Scope::Agent(ns.into(), name.into())], self.1).is_none()
    }
    fn pass(&mut self, ns: &str, name: &str, _: &u32) {
        self.0.take(&[Scope::Agent(ns.into(), name.into())], self.1);
    }
}

fn bench(c: &mut Criterion) {
    let scopes = [Scope::Agent("default".into(), "llm".into()), Scope::Budget("team".into())];
    let mut r = RateLimits::default();
    r.configure(scopes[0].clone(), Some(&limit(10_000, "1s")));
    r.configure(scopes[1].clone(), Some(&limit(10_000, "1s")));
    let mut now = Instant::now();
    c.bench_function("rate: one request through an agent's and a budget's limit", |b| {
        b.iter(|| {
            now += Duration::from_millis(1);
            assert!(r.held(&scopes, now).is_none());
            let p = r.take(&scopes, now);
            r.answered(&p, now);
        })
    });

    let mut full = RateLimits::default();
    let t0 = Instant::now();
    full.configure(scopes[0].clone(), Some(&limit(10_000, "1h")));
    for _ in 0..10_000 {
        let p = full.take(&scopes[..1], t0);
        full.answered(&p, t0);
    }
    c.bench_function("rate: check of a full window of 10,000 requests", |b| {
        b.iter(|| full.held(&scopes[..1], t0).expect("held"))
    });

    c.bench_function("dispatch: 10,000 tasks of a held agent, one for a free agent", |b| {
        b.iter_batched(
            || {
                let mut dq = DispatchQueue::new();
                dq.set_agent("default", "llm", true, 100, BTreeSet::new());
                dq.set_agent("default", "free", true, 1, BTreeSet::new());
                for i in 0..10_000 {
                    dq.push(Queued {
                        namespace: "default".into(),
                        target: Target::Agent("llm".into()),
                        priority: Priority::Normal,
                        item: i,
                    });
                }
                dq.push(Queued {
                    namespace: "default".into(),
                    target: Target::Agent("free".into()),
                    priority: Priority::Normal,
                    item: 10_000,
                });
                dq
            },
            |mut dq| {
                let mut gate = Limited(&mut full, t0);
                let sent = dq.dispatch_gated(&mut gate);
                assert_eq!(sent.len(), 1, "llm is held; the task for free goes");
                dq
            },
            criterion::BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
