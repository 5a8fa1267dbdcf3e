//! Racing writers: concurrent `put_meta_if_absent` calls on one key and
//! concurrent saves of one record.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use time::Duration;

use super::expect::{assert_loads, ok};
use super::fixtures::{cleanup, create, due_record};
use super::scope::Scope;
use super::{LATER, RACERS};
use crate::store::{CertRecord, CertStore};
use crate::Error;

/// Polls every future until all have finished, from the calling task.
pub(super) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Racing `put_meta_if_absent` calls on one key all return the same value,
/// one of theirs, and that value is the one stored.
pub async fn meta_concurrent_racers(store: &dyn CertStore) {
    let scope = Scope::new("meta-race");
    let key = scope.key("race");
    let values: Vec<String> = (0..RACERS).map(|i| format!("racer-{i}")).collect();
    let answers = join_all(
        values
            .iter()
            .map(|v| store.put_meta_if_absent(&key, v))
            .collect(),
    )
    .await;
    let answers: Vec<String> = answers
        .into_iter()
        .map(|a| ok("racing put_meta_if_absent", a))
        .collect();
    let winner = &answers[0];
    assert!(
        values.contains(winner),
        "conformance: racing put_meta_if_absent returned {winner:?}, which no racer wrote"
    );
    assert!(
        answers.iter().all(|a| a == winner),
        "conformance: racing put_meta_if_absent calls must all get the same value, got \
         {answers:?}"
    );
    assert_eq!(
        ok("get_meta", store.get_meta(&key).await).as_ref(),
        Some(winner),
        "conformance: get_meta must return the value the racers got"
    );
    ok("delete_meta", store.delete_meta(&key).await);
}

/// Of racing saves of one record at the same version, exactly one succeeds
/// and the others get [`Error::Conflict`]; the same for racing creations.
pub async fn concurrent_saves(store: &dyn CertStore) {
    let scope = Scope::new("race");
    for (case, existing) in [("creations", false), ("updates", true)] {
        let domain = scope.domain(case);
        let base = if existing {
            create(store, &due_record(domain.clone(), LATER, 0)).await
        } else {
            due_record(domain.clone(), LATER, 0)
        };
        let candidates: Vec<CertRecord> = (0..RACERS as u32)
            .map(|i| CertRecord {
                attempts: i + 1,
                renew_date: LATER + Duration::seconds(i64::from(i)),
                ..base.clone()
            })
            .collect();
        let results = join_all(candidates.iter().map(|r| store.save(r)).collect()).await;
        let mut winners = Vec::new();
        for (candidate, result) in candidates.iter().zip(results) {
            match result {
                Ok(version) => winners.push((candidate, version)),
                Err(Error::Conflict { .. }) => {}
                Err(e) => panic!("conformance: racing {case}: a save failed with {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "conformance: of {RACERS} racing {case} at version {}, exactly one must win",
            base.version
        );
        let (winner, version) = winners[0];
        assert_eq!(
            version,
            base.version + 1,
            "conformance: the winning save must return the next version"
        );
        let expected = CertRecord {
            version,
            ..winner.clone()
        };
        let rule = format!("after racing {case}, the store must hold the winner's record");
        assert_loads(store, &domain, Some(&expected), &rule).await;
        cleanup(store, [&domain]).await;
    }
}
