//! The actix shells around the engines. Each actor owns its engine, handles a typed
//! message per request and replies with the result; nothing here decides anything.
//!
//! Backpressure: callers use `send` and await the reply, so a slow stage slows the
//! stage before it instead of growing a queue (actix's `do_send` ignores mailbox bounds
//! and is not used on these paths).

use actix::prelude::*;
use palisade_proto::{Decision, SignedSignal, Timestamp};
use std::sync::Arc;
use std::time::Duration;

use crate::decision::{DecisionEngine, DecisionError, DecisionFilter, NewDecision, TickReport, Verdict};
use crate::event::{Checkpoint, LineBatch, Overflow};
use crate::pipeline::Pipeline;
use crate::reputation::Reputation;
use crate::store::{Commit, Store, StoreError};

/// Parses and pours lines.
pub struct ScenarioActor {
    pipeline: Pipeline,
}

impl ScenarioActor {
    /// Wraps a pipeline.
    pub fn new(pipeline: Pipeline) -> Self {
        ScenarioActor { pipeline }
    }
}

impl Actor for ScenarioActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16);
    }
}

/// What one batch of lines produced.
#[derive(Debug, Default)]
pub struct Processed {
    /// Overflows, in order.
    pub overflows: Vec<Overflow>,
    /// The batch's checkpoint, to persist with the results.
    pub checkpoint: Option<Checkpoint>,
}

/// Process a batch of lines.
#[derive(Debug, Message)]
#[rtype(result = "Processed")]
pub struct ProcessBatch(pub LineBatch);

impl Handler<ProcessBatch> for ScenarioActor {
    type Result = MessageResult<ProcessBatch>;

    fn handle(&mut self, msg: ProcessBatch, _: &mut Self::Context) -> Self::Result {
        let mut overflows = Vec::new();
        for line in msg.0.lines {
            self.pipeline.process(line, &mut overflows);
        }
        MessageResult(Processed { overflows, checkpoint: msg.0.checkpoint })
    }
}

/// Let time pass in live mode (the wall clock; see [`Pipeline::advance_wall`]): frees idle
/// buckets and fires counters.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Overflow>")]
pub struct Advance(pub Timestamp);

impl Handler<Advance> for ScenarioActor {
    type Result = MessageResult<Advance>;

    fn handle(&mut self, msg: Advance, _: &mut Self::Context) -> Self::Result {
        let mut out = Vec::new();
        self.pipeline.advance_wall(msg.0, &mut out);
        MessageResult(out)
    }
}

/// The pipeline's counters, for metrics.
#[derive(Debug, Clone, Default)]
pub struct PipelineSnapshot {
    /// Lines, parser hits and misses, overflows.
    pub pipeline: crate::pipeline::PipelineStats,
    /// Per-scenario bucket counters.
    pub scenarios: Vec<crate::scenario::ScenarioStats>,
    /// Buckets alive.
    pub live_buckets: usize,
    /// The on-sight check.
    pub watch: crate::watchlist::WatchStats,
}

/// Ask for the counters.
#[derive(Debug, Message)]
#[rtype(result = "PipelineSnapshot")]
pub struct GetStats;

impl Handler<GetStats> for ScenarioActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(PipelineSnapshot {
            pipeline: self.pipeline.stats().clone(),
            scenarios: self.pipeline.bucket_stats().to_vec(),
            live_buckets: self.pipeline.live_buckets(),
            watch: self.pipeline.watch_stats(),
        })
    }
}

/// Flag addresses by hash for the on-sight check.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Watch(pub Vec<crate::watchlist::Flag>);

impl Handler<Watch> for ScenarioActor {
    type Result = ();

    fn handle(&mut self, msg: Watch, _: &mut Self::Context) {
        self.pipeline.watch(msg.0);
    }
}

/// Signs overflows into signals.
pub struct ReputationActor {
    reputation: Reputation,
}

impl ReputationActor {
    /// Wraps a signer.
    pub fn new(reputation: Reputation) -> Self {
        ReputationActor { reputation }
    }
}

impl Actor for ReputationActor {
    type Context = Context<Self>;
}

/// Sign these overflows.
#[derive(Debug, Message)]
#[rtype(result = "Vec<SignedSignal>")]
pub struct SignOverflows(pub Arc<Vec<Overflow>>);

impl Handler<SignOverflows> for ReputationActor {
    type Result = MessageResult<SignOverflows>;

    fn handle(&mut self, msg: SignOverflows, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.reputation.on_overflows(msg.0.iter()))
    }
}

/// Drop flags from the on-sight check: these hashes, and every flag of `all_of`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unwatch {
    /// Hashes no longer flagged.
    pub hashes: Vec<palisade_proto::HashedIp>,
    /// An origin whose flags all go (a new community snapshot).
    pub all_of: Option<palisade_proto::Origin>,
}

impl Handler<Unwatch> for ScenarioActor {
    type Result = ();

    fn handle(&mut self, msg: Unwatch, _: &mut Self::Context) {
        self.pipeline.unwatch(&msg.hashes, msg.all_of.as_ref());
    }
}

/// Verified signals of other fleet members, received at the given time.
#[derive(Debug, Message)]
#[rtype(result = "crate::reputation::FleetOutcome")]
pub struct FleetSignals(pub Vec<SignedSignal>, pub Timestamp);

impl Handler<FleetSignals> for ReputationActor {
    type Result = MessageResult<FleetSignals>;

    fn handle(&mut self, msg: FleetSignals, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.reputation.on_fleet_signals(&msg.0, msg.1))
    }
}

/// Hash and seal with this secret from now on (the fleet's after joining, the node's
/// own after leaving). Answers the last sequence number signed with the previous one.
#[derive(Debug, Message)]
#[rtype(result = "u64")]
pub struct SetSecret(pub [u8; 32]);

impl Handler<SetSecret> for ReputationActor {
    type Result = u64;

    fn handle(&mut self, msg: SetSecret, _: &mut Self::Context) -> u64 {
        self.reputation.set_secret(msg.0);
        self.reputation.last_seq()
    }
}

/// The fleet counters.
#[derive(Debug, Message)]
#[rtype(result = "crate::reputation::FleetStats")]
pub struct GetFleetStats;

impl Handler<GetFleetStats> for ReputationActor {
    type Result = MessageResult<GetFleetStats>;

    fn handle(&mut self, _: GetFleetStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.reputation.fleet_stats())
    }
}

/// Applies profiles and persists decisions, signals and checkpoints atomically.
pub struct DecisionActor {
    engine: DecisionEngine,
    store: Arc<dyn Store>,
    outbox_keep: u64,
    clock: fn() -> Timestamp,
    /// Bumped after every commit that changed decisions, so bouncers wake at once.
    changed: tokio::sync::watch::Sender<u64>,
}

impl DecisionActor {
    /// Wraps an engine and its store. `clock` gives the wall-clock time.
    pub fn new(
        engine: DecisionEngine,
        store: Arc<dyn Store>,
        outbox_keep: u64,
        clock: fn() -> Timestamp,
    ) -> Self {
        DecisionActor { engine, store, outbox_keep, clock, changed: tokio::sync::watch::Sender::new(0) }
    }

    /// Bumps `changed` after every commit that changed decisions (bouncers listen).
    pub fn notifying(mut self, changed: tokio::sync::watch::Sender<u64>) -> Self {
        self.changed = changed;
        self
    }

    /// Persists the engine's changes plus `extra`, retrying a few times with backoff.
    /// When the store keeps failing, the decision changes go back to the engine so the
    /// next commit carries them, and the error is returned: the bridge then stops the
    /// node rather than read on with lines whose results cannot be kept.
    fn persist(&mut self, mut extra: Commit) -> Result<(), StoreError> {
        extra.decisions = self.engine.take_changes();
        extra.last_decision_id = (!extra.decisions.upserts.is_empty()).then(|| self.engine.last_id());
        if let Some(max_seq) = extra.signals.iter().map(|s| s.signal.seq).max() {
            if max_seq > self.outbox_keep {
                extra.prune_outbox_below = Some(max_seq - self.outbox_keep + 1);
            }
        }
        let changed = !extra.decisions.upserts.is_empty();
        let mut delay = Duration::from_millis(50);
        let mut attempts = 0;
        loop {
            match self.store.commit(&extra) {
                Ok(()) => {
                    if changed {
                        self.changed.send_modify(|n| *n += 1);
                    }
                    return Ok(());
                }
                Err(e) if attempts < 5 => {
                    tracing::error!(error = %e, attempt = attempts + 1, "store commit failed, retrying");
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempts += 1;
                }
                Err(e) => {
                    self.engine.requeue(extra.decisions);
                    return Err(e);
                }
            }
        }
    }
}

impl Actor for DecisionActor {
    type Context = Context<Self>;
}

/// Apply a batch's overflows and persist them with its signals and checkpoint.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Verdict>, StoreError>")]
pub struct ApplyOverflows {
    /// The overflows.
    pub overflows: Arc<Vec<Overflow>>,
    /// Their signals.
    pub signals: Vec<SignedSignal>,
    /// The source position after the batch.
    pub checkpoint: Option<Checkpoint>,
}

impl Handler<ApplyOverflows> for DecisionActor {
    type Result = Result<Vec<Verdict>, StoreError>;

    fn handle(&mut self, msg: ApplyOverflows, _: &mut Self::Context) -> Self::Result {
        let now = (self.clock)();
        let verdicts: Vec<Verdict> = msg.overflows.iter().map(|o| self.engine.on_overflow(o, now)).collect();
        for (o, v) in msg.overflows.iter().zip(&verdicts) {
            log_verdict(o, v);
        }
        self.persist(Commit {
            checkpoints: msg.checkpoint.into_iter().collect(),
            signals: msg.signals,
            ..Commit::default()
        })?;
        Ok(verdicts)
    }
}

fn log_verdict(o: &Overflow, v: &Verdict) {
    match v {
        Verdict::Created(d) | Verdict::Extended { decision: d, .. } => tracing::info!(
            scenario = %o.scenario, value = %d.value, events = o.events_count, origin = %d.origin.as_str(),
            until = d.until.as_secs(), kind = %d.kind, "decision"
        ),
        Verdict::Allowlisted(net) => {
            tracing::info!(scenario = %o.scenario, value = %o.value, allowlist = %net, "overflow on an allowlisted address: no decision")
        }
        _ => tracing::debug!(scenario = %o.scenario, value = %o.value, verdict = ?v, "overflow"),
    }
}

/// An overflow detected elsewhere (an alert pushed by a CrowdSec log processor): the
/// profiles apply as to the node's own, with the overflow's origin on the decision.
#[derive(Debug, Message)]
#[rtype(result = "Result<Verdict, StoreError>")]
pub struct ApplyForeignOverflow(pub Overflow);

impl Handler<ApplyForeignOverflow> for DecisionActor {
    type Result = Result<Verdict, StoreError>;

    fn handle(&mut self, msg: ApplyForeignOverflow, _: &mut Self::Context) -> Self::Result {
        let verdict = self.engine.on_overflow(&msg.0, (self.clock)());
        log_verdict(&msg.0, &verdict);
        self.persist(Commit::default())?;
        Ok(verdict)
    }
}

/// An operator's or peer's decision request.
#[derive(Debug, Message)]
#[rtype(result = "Result<Result<Verdict, DecisionError>, StoreError>")]
pub struct AddDecision(pub NewDecision);

impl Handler<AddDecision> for DecisionActor {
    type Result = Result<Result<Verdict, DecisionError>, StoreError>;

    fn handle(&mut self, msg: AddDecision, _: &mut Self::Context) -> Self::Result {
        let verdict = self.engine.add(msg.0, (self.clock)());
        self.persist(Commit::default())?;
        Ok(verdict)
    }
}

/// Many decision requests (an import), persisted in one commit.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Result<Verdict, DecisionError>>, StoreError>")]
pub struct AddDecisions(pub Vec<NewDecision>);

impl Handler<AddDecisions> for DecisionActor {
    type Result = Result<Vec<Result<Verdict, DecisionError>>, StoreError>;

    fn handle(&mut self, msg: AddDecisions, _: &mut Self::Context) -> Self::Result {
        let now = (self.clock)();
        let verdicts = msg.0.into_iter().map(|n| self.engine.add(n, now)).collect();
        self.persist(Commit::default())?;
        Ok(verdicts)
    }
}

/// End the decisions a filter selects.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Decision>, StoreError>")]
pub struct DeleteDecisions(pub DecisionFilter);

impl Handler<DeleteDecisions> for DecisionActor {
    type Result = Result<Vec<Decision>, StoreError>;

    fn handle(&mut self, msg: DeleteDecisions, _: &mut Self::Context) -> Self::Result {
        let ended = self.engine.delete(&msg.0, (self.clock)());
        self.persist(Commit::default())?;
        Ok(ended)
    }
}

/// Active decisions a filter selects.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Decision>")]
pub struct ListDecisions(pub DecisionFilter);

impl Handler<ListDecisions> for DecisionActor {
    type Result = MessageResult<ListDecisions>;

    fn handle(&mut self, msg: ListDecisions, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.engine.select(&msg.0))
    }
}

/// Expire and purge (sent every second by the node).
#[derive(Debug, Message)]
#[rtype(result = "Result<TickReport, StoreError>")]
pub struct Tick;

impl Handler<Tick> for DecisionActor {
    type Result = Result<TickReport, StoreError>;

    fn handle(&mut self, _: Tick, _: &mut Self::Context) -> Self::Result {
        let report = self.engine.tick((self.clock)());
        self.persist(Commit::default())?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Allowlist, DecisionConfig, StoredDecisions};
    use crate::store::MemStore;
    use palisade_proto::Scope;

    fn overflow(value: &str) -> Overflow {
        Overflow::for_test("palisade/ssh-bf", Scope::Ip, value)
    }

    fn clock() -> Timestamp {
        Timestamp(1_000)
    }

    #[actix_rt::test]
    async fn a_failing_store_loses_no_decision() {
        let store = Arc::new(MemStore::new());
        let policy = DecisionConfig::default().compile().unwrap();
        let engine =
            DecisionEngine::new(policy, Allowlist::default(), StoredDecisions::default(), clock(), 1);
        let actor = DecisionActor::new(engine, store.clone(), 10, clock).start();
        store.fail_commits(true);
        let apply = ApplyOverflows {
            overflows: Arc::new(vec![overflow("198.51.100.7")]),
            signals: vec![],
            checkpoint: None,
        };
        assert!(actor.send(apply).await.unwrap().is_err(), "the failure is reported");
        assert!(store.load_decisions().unwrap().decisions.is_empty());
        store.fail_commits(false);
        actor.send(Tick).await.unwrap().unwrap();
        let stored = store.load_decisions().unwrap();
        assert_eq!(stored.decisions.len(), 1, "the next commit carried the requeued decision");
        assert_eq!(stored.decisions[0].value, "198.51.100.7");
        assert_eq!(stored.last_id, 1);
    }
}
