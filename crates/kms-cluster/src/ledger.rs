//! [`ClusterLedger`]: decides against the replicated state, records new clients through Raft.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kms_core::{ActivationInput, RecordOutcome, RecordRequest, State, decide};
use kms_host::{Denial, Grant, Ledger, RequestMeta};
use kms_store::StateMachineStore;
use kms_wire::{Epid, Hresult};
use tokio::sync::{mpsc, oneshot};

use crate::batcher::PendingRecord;
use crate::degraded::{DegradedJournal, JournalEntry};
use crate::writer::WriteError;

/// The `Ledger` of a cluster node.
#[derive(Debug, Clone)]
pub struct ClusterLedger {
    sm: StateMachineStore,
    journal: DegradedJournal,
    degraded: Arc<std::sync::atomic::AtomicBool>,
    records: mpsc::Sender<PendingRecord>,
    request_ids: Arc<AtomicU64>,
    epid_texts: Arc<EpidTexts>,
    /// How long a request waits for a host identity the cluster has not applied yet.
    identity_wait: Duration,
}

/// The text of each ePID answered so far, so that a grant shares it instead of formatting it
/// again. A host identity has one ePID per ePID group (a handful); a changed identity brings
/// new ones, and the table starts over past [`EpidTexts::MAX`].
#[derive(Debug, Default)]
struct EpidTexts(std::sync::Mutex<Vec<(Epid, Arc<str>)>>);

impl EpidTexts {
    const MAX: usize = 64;

    fn text(&self, epid: &Epid) -> Arc<str> {
        let mut known = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, t)) = known.iter().find(|(e, _)| e == epid) {
            return t.clone();
        }
        if known.len() >= Self::MAX {
            known.clear();
        }
        let t: Arc<str> = epid.to_string().into();
        known.push((epid.clone(), t.clone()));
        t
    }
}

/// What the state says about a request before anything is written.
enum Plan {
    Refuse(Denial),
    /// The cluster has not applied a host identity (for this product group) yet.
    NoIdentity(&'static str),
    Answer(Grant),
    Record(RecordRequest, Grant),
}

impl ClusterLedger {
    pub(crate) fn new(
        sm: StateMachineStore,
        journal: DegradedJournal,
        degraded: Arc<std::sync::atomic::AtomicBool>,
        records: mpsc::Sender<PendingRecord>,
        request_ids: Arc<AtomicU64>,
        identity_wait: Duration,
    ) -> ClusterLedger {
        ClusterLedger {
            identity_wait,
            sm,
            journal,
            degraded,
            records,
            request_ids,
            epid_texts: Arc::default(),
        }
    }

    fn plan(&self, s: &State, input: &ActivationInput, meta: &RequestMeta) -> Plan {
        let now = meta.received_at;
        let pool = match decide(s.config(), input, now) {
            Ok(pool) => pool,
            Err(refusal) => {
                return Plan::Refuse(Denial {
                    hresult: refusal.hresult,
                    reason: refusal.reason.to_string(),
                    pool: kms_core::Pool::from_application_id(input.application_id)
                        .map(|p| p.name()),
                });
            }
        };
        let (Some(identity), Some(epid)) = (s.identity(), s.identity_for(input.kms_counted_id))
        else {
            return Plan::NoIdentity(pool.name());
        };
        let cfg = s.config();
        let grant = Grant {
            epid: self.epid_texts.text(epid),
            hwid: identity.hwid,
            current_count: 0,
            activation_interval: cfg.activation_interval_minutes,
            renewal_interval: cfg.renewal_interval_minutes,
            pool: pool.name(),
            degraded: false,
        };
        if s.needs_write_for(
            pool,
            &input.client_machine_id,
            &input.workstation,
            &input.kms_counted_id,
            now,
        ) {
            let id = self.request_ids.fetch_add(1, Ordering::Relaxed);
            let record = input.to_record(pool, id, &meta.source.to_string());
            Plan::Record(record, grant)
        } else {
            let mut grant = grant;
            grant.current_count = s.pool_count(pool, now).reported;
            Plan::Answer(grant)
        }
    }
}

impl ClusterLedger {
    /// Answer from the applied state plus the journal, after journaling `record` durably.
    async fn answer_degraded(
        &self,
        record: RecordRequest,
        mut grant: Grant,
        at: kms_wire::FileTime,
    ) -> Result<Grant, Denial> {
        let pool = record.pool;
        self.journal
            .append(JournalEntry { at, record })
            .await
            .map_err(|e| Denial {
                hresult: Hresult::KMS_NOT_ACTIVATED,
                reason: format!("no leader and the local journal failed: {e}"),
                pool: Some(grant.pool),
            })?;
        if !self.degraded.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                event_id = crate::EVENT_DEGRADED_ENTER,
                "entering degraded mode: no leader committed a record in time; answering from \
                 local state and the journal"
            );
        }
        grant.current_count = self
            .sm
            .read(|s| self.journal.count_with_journal(s, pool, at))
            .reported;
        grant.degraded = true;
        Ok(grant)
    }
}

impl Ledger for ClusterLedger {
    async fn activate(&self, input: ActivationInput, meta: RequestMeta) -> Result<Grant, Denial> {
        let mut plan = self.sm.read(|s| self.plan(s, &input, &meta));
        if let Plan::NoIdentity(_) = plan {
            // A cluster formed a moment ago commits its identity right after the election: wait
            // for it (up to the commit timeout) instead of refusing the first clients, which
            // would then wait their whole activation interval before trying again.
            let deadline = tokio::time::Instant::now() + self.identity_wait;
            while matches!(plan, Plan::NoIdentity(_)) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                plan = self.sm.read(|s| self.plan(s, &input, &meta));
            }
        }
        let (record, mut grant) = match plan {
            Plan::Refuse(d) => return Err(d),
            Plan::NoIdentity(pool) => {
                return Err(Denial {
                    hresult: Hresult::KMS_NOT_ACTIVATED,
                    reason: "the cluster has no host identity for this product group yet".into(),
                    pool: Some(pool),
                });
            }
            Plan::Answer(mut g) => {
                if !self.journal.is_empty() {
                    // Journaled clients are not in the state yet: count them too.
                    let pool = kms_core::Pool::from_name(g.pool);
                    if let Some(pool) = pool {
                        g.current_count = self
                            .sm
                            .read(|s| self.journal.count_with_journal(s, pool, meta.received_at))
                            .reported;
                    }
                }
                return Ok(g);
            }
            Plan::Record(r, g) => (r, g),
        };
        // While degraded, answer at once from the journal instead of waiting `commit_timeout`
        // for every client; the replay loop leaves degraded mode once a leader takes writes.
        if self.degraded.load(Ordering::SeqCst) {
            return self.answer_degraded(record, grant, meta.received_at).await;
        }
        let pool = grant.pool;
        let (tx, rx) = oneshot::channel();
        if self
            .records
            .send(PendingRecord {
                record: record.clone(),
                reply: tx,
            })
            .await
            .is_err()
        {
            return Err(Denial {
                hresult: Hresult::KMS_NOT_ACTIVATED,
                reason: "the node is shutting down".into(),
                pool: Some(pool),
            });
        }
        match rx.await {
            Ok(Ok(RecordOutcome::Accepted { count, .. })) => {
                grant.current_count = count.reported;
                if !self.journal.is_empty() {
                    // Journaled clients still waiting for replay count too.
                    let pool = record.pool;
                    grant.current_count = self
                        .sm
                        .read(|s| self.journal.count_with_journal(s, pool, meta.received_at))
                        .reported
                        .max(count.reported);
                }
                Ok(grant)
            }
            Ok(Ok(RecordOutcome::Refused { hresult, reason })) => Err(Denial {
                hresult,
                reason: format!("{reason:?}"),
                pool: Some(pool),
            }),
            Ok(Err(WriteError::NoLeader(_))) | Ok(Err(WriteError::Failed(_))) | Err(_) => {
                self.answer_degraded(record, grant, meta.received_at).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epid_texts_are_formatted_once_and_shared() {
        let texts = EpidTexts::default();
        let epid: Epid = "06401-00206-271-298329-03-1033-9600.0000-0452015"
            .parse()
            .unwrap();
        let a = texts.text(&epid);
        assert_eq!(&*a, epid.to_string());
        assert!(Arc::ptr_eq(&a, &texts.text(&epid)));
        // Many different ePIDs (identity changes): the table stays bounded and stays right.
        for key_id in 0..(3 * EpidTexts::MAX as u64) {
            let other = Epid {
                key_id,
                ..epid.clone()
            };
            assert_eq!(&*texts.text(&other), other.to_string());
        }
        assert!(texts.0.lock().unwrap().len() <= EpidTexts::MAX);
        assert_eq!(&*texts.text(&epid), epid.to_string());
    }
}
