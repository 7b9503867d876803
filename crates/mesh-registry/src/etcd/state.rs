//! What the registry holds between etcd events: the stored values, the
//! objects the live snapshot was built from, and the keys it refused.
//!
//! Applying a batch of changes keeps the last good value of every key: a
//! change that makes the config invalid is refused for its key alone (the
//! key keeps its previous value, or stays absent), and every other change
//! applies. Refused keys are tried again with each later batch, so a route
//! that named a service which arrives later is picked up then.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_core::{Config, Snapshot};

use super::layout::{self, Object, ObjectKind, Objects};

/// A change to one key (relative to the prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Put(String, Vec<u8>),
    Delete(String),
}

/// What a batch did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The new snapshot, built at the revision asked for, when the applied
    /// objects changed.
    pub(crate) snapshot: Option<Snapshot>,
    /// Keys refused by this batch, with their errors.
    pub(crate) refused: Vec<(String, String)>,
}

/// Bound on one-at-a-time trials when blame cannot name the culprit.
const MAX_SINGLE_TRIALS: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The latest value of every key under the prefix.
    stored: BTreeMap<String, Vec<u8>>,
    /// The objects the live config is made of.
    accepted: Objects,
    /// Keys whose stored value is not applied, and why.
    rejected: BTreeMap<String, String>,
}

impl State {
    /// A state whose accepted objects are `objects` (from the disk cache).
    pub(crate) fn from_accepted(objects: Objects) -> State {
        State {
            stored: BTreeMap::new(),
            accepted: objects,
            rejected: BTreeMap::new(),
        }
    }

    pub(crate) fn accepted(&self) -> &Objects {
        &self.accepted
    }

    pub(crate) fn rejected(&self) -> &BTreeMap<String, String> {
        &self.rejected
    }

    pub(crate) fn config(&self) -> Config {
        layout::assemble(&self.accepted).config
    }

    /// Replaces everything with a fresh listing: the difference from what
    /// is held is applied as one batch.
    pub(crate) fn replace_all(
        &mut self,
        listing: BTreeMap<String, Vec<u8>>,
        revision: u64,
    ) -> Outcome {
        let mut changes = Vec::new();
        let held: BTreeSet<String> = self
            .stored
            .keys()
            .chain(self.accepted.keys())
            .cloned()
            .collect();
        for key in held {
            if !listing.contains_key(&key) {
                changes.push(Change::Delete(key));
            }
        }
        for (key, value) in listing {
            if self.stored.get(&key) != Some(&value) || !self.accepted.contains_key(&key) {
                changes.push(Change::Put(key, value));
            }
        }
        self.apply(changes, revision)
    }

    /// Applies a batch of changes (later changes to a key win); a new
    /// snapshot is built at `revision`.
    pub(crate) fn apply(&mut self, changes: Vec<Change>, revision: u64) -> Outcome {
        let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for change in changes {
            match change {
                Change::Put(k, v) => latest.insert(k, Some(v)),
                Change::Delete(k) => latest.insert(k, None),
            };
        }
        let in_batch: BTreeSet<String> = latest.keys().cloned().collect();
        let mut refused = Vec::new();
        let mut candidate = self.accepted.clone();
        // Keys whose new value (or absence) is on trial.
        let mut trial: BTreeMap<String, Option<Arc<Object>>> = BTreeMap::new();
        for (key, value) in latest {
            match value {
                None => {
                    self.stored.remove(&key);
                    self.rejected.remove(&key);
                    if candidate.contains_key(&key) {
                        trial.insert(key, None);
                    }
                }
                Some(bytes) => {
                    let parsed = layout::parse_object(&key, &bytes);
                    self.stored.insert(key.clone(), bytes);
                    match parsed {
                        Ok(object) => {
                            trial.insert(key, Some(Arc::new(object)));
                        }
                        Err(e) => {
                            refused.push((key.clone(), e.clone()));
                            self.rejected.insert(key, e);
                        }
                    }
                }
            }
        }
        // Keys refused earlier get another chance: what they named may exist
        // now. Refused again for the same reason, they are not news.
        let mut retried = BTreeMap::new();
        for (key, error) in &self.rejected {
            if in_batch.contains(key) {
                continue;
            }
            retried.insert(key.clone(), error.clone());
            match self.stored.get(key) {
                Some(bytes) => {
                    if let Ok(object) = layout::parse_object(key, bytes) {
                        trial.insert(key.clone(), Some(Arc::new(object)));
                    }
                }
                // A refused deletion.
                None if candidate.contains_key(key) => {
                    trial.insert(key.clone(), None);
                }
                None => {}
            }
        }
        for (key, object) in &trial {
            match object {
                Some(o) => candidate.insert(key.clone(), o.clone()),
                None => candidate.remove(key),
            };
        }

        let mut blamed_rounds = 0;
        let mut built = None;
        loop {
            let errors = match Snapshot::build(layout::assemble(&candidate).config, revision) {
                Ok(s) => {
                    built = Some(s);
                    break;
                }
                Err(e) => e.errors(),
            };
            // Rare: assemble again to map the errors back to keys.
            let assembled = layout::assemble(&candidate);
            let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for e in &errors {
                if let Some((key, rest)) = assembled.blame(&e.path)
                    && trial.contains_key(key)
                {
                    let msg = if rest.is_empty() {
                        e.message.clone()
                    } else {
                        format!("{rest}: {}", e.message)
                    };
                    per_key.entry(key.to_owned()).or_default().push(msg);
                }
            }
            blamed_rounds += 1;
            if per_key.is_empty() || blamed_rounds > 4 {
                // Blame names no change (e.g. a deleted service a route still
                // uses): try the changes one at a time instead.
                let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                self.one_at_a_time(&mut candidate, &mut trial, &mut refused, &all.join("; "));
                break;
            }
            for (key, msgs) in per_key {
                revert(&mut candidate, &self.accepted, &key);
                trial.remove(&key);
                let msg = msgs.join("; ");
                refused.push((key.clone(), msg.clone()));
                self.rejected.insert(key, msg);
            }
        }
        for key in trial.keys() {
            self.rejected.remove(key);
        }
        // Changed if a surviving trial differs from what was accepted.
        let changed = trial
            .iter()
            .any(|(k, o)| self.accepted.get(k).map(|a| a.as_ref()) != o.as_deref());
        let snapshot = if changed {
            self.accepted = candidate;
            // `built` is the final set unless the one-at-a-time path ran.
            built
                .or_else(|| Snapshot::build(layout::assemble(&self.accepted).config, revision).ok())
        } else {
            None
        };
        refused.retain(|(k, e)| retried.get(k) != Some(e));
        Outcome { snapshot, refused }
    }

    fn one_at_a_time(
        &mut self,
        candidate: &mut Objects,
        trial: &mut BTreeMap<String, Option<Arc<Object>>>,
        refused: &mut Vec<(String, String)>,
        batch_error: &str,
    ) {
        for key in trial.keys() {
            revert(candidate, &self.accepted, key);
        }
        let mut order: Vec<(String, Option<Arc<Object>>)> =
            std::mem::take(trial).into_iter().collect();
        // Deletions last among their kind, dependencies (services, plans) first.
        order.sort_by_key(|(k, o)| {
            let kind = layout::parse_key(k)
                .map(|(kind, _)| kind)
                .unwrap_or(ObjectKind::Gateway);
            let rank = ObjectKind::ALL.iter().position(|x| *x == kind).unwrap_or(0);
            (o.is_none(), rank)
        });
        for (n, (key, object)) in order.into_iter().enumerate() {
            let error = if n >= MAX_SINGLE_TRIALS {
                Some(format!("not applied with an invalid batch: {batch_error}"))
            } else {
                let before = candidate.clone();
                match &object {
                    Some(o) => candidate.insert(key.clone(), o.clone()),
                    None => candidate.remove(&key),
                };
                match Snapshot::build(layout::assemble(candidate).config, 1) {
                    Ok(_) => None,
                    Err(e) => {
                        *candidate = before;
                        Some(
                            e.errors()
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join("; "),
                        )
                    }
                }
            };
            match error {
                None => {
                    trial.insert(key, object);
                }
                Some(e) => {
                    let e = if object.is_none() {
                        format!("cannot delete: {e}")
                    } else {
                        e
                    };
                    refused.push((key.clone(), e.clone()));
                    self.rejected.insert(key, e);
                }
            }
        }
    }
}

fn revert(candidate: &mut Objects, accepted: &Objects, key: &str) {
    match accepted.get(key) {
        Some(o) => candidate.insert(key.to_owned(), o.clone()),
        None => candidate.remove(key),
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn put(k: &str, v: &str) -> Change {
        Change::Put(k.to_owned(), v.as_bytes().to_vec())
    }

    #[test]
    fn bad_values_keep_their_last_good_value_and_others_apply() {
        let mut s = State::default();
        let o = s.apply(
            vec![
                put("services/inv", r#"{"name":"inv"}"#),
                put(
                    "routes/a",
                    r#"{"id":"a","match":{"path":"/a"},"destinations":[{"service":"inv"}]}"#,
                ),
            ],
            1,
        );
        assert_eq!(o.snapshot.unwrap().config().routes.len(), 1);
        let o = s.apply(
            vec![
                put("routes/a", r#"{"id":"a","match":{"path":"no-slash"}}"#),
                put("routes/b", r#"{"id":"b","match":{"path":"/b"}}"#),
                put("routes/c", "{not json"),
            ],
            1,
        );
        let snap = o.snapshot.unwrap();
        let c = snap.config();
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].matches.path.as_deref(), Some("/a"));
        assert_eq!(o.refused.len(), 2);
        assert!(
            s.rejected()["routes/a"].contains("match.path"),
            "{:?}",
            s.rejected()
        );
        assert!(s.rejected()["routes/c"].contains("invalid JSON"));
        // Fixing the value clears the rejection.
        let o = s.apply(
            vec![put("routes/a", r#"{"id":"a","match":{"path":"/a2"}}"#)],
            1,
        );
        assert_eq!(
            o.snapshot.unwrap().config().routes[0]
                .matches
                .path
                .as_deref(),
            Some("/a2")
        );
        assert!(!s.rejected().contains_key("routes/a"));
        // Deleting the bad key clears it too.
        s.apply(vec![Change::Delete("routes/c".into())], 1);
        assert!(s.rejected().is_empty());
    }

    #[test]
    fn a_reference_to_a_later_object_applies_when_it_arrives() {
        let mut s = State::default();
        let o = s.apply(
            vec![put(
                "routes/a",
                r#"{"id":"a","match":{"path":"/a"},"destinations":[{"service":"inv"}]}"#,
            )],
            1,
        );
        assert!(o.snapshot.is_none());
        assert!(s.rejected().contains_key("routes/a"));
        let o = s.apply(vec![put("services/inv", r#"{"name":"inv"}"#)], 1);
        assert_eq!(o.snapshot.unwrap().config().routes.len(), 1);
        assert!(s.rejected().is_empty());
        // Deleting the service a route uses is refused; the service stays.
        let o = s.apply(vec![Change::Delete("services/inv".into())], 1);
        assert!(o.snapshot.is_none());
        assert!(
            s.rejected()["services/inv"].starts_with("cannot delete"),
            "{:?}",
            s.rejected()
        );
        // Refused again for the same reason with a later batch: not news.
        let o = s.apply(
            vec![put("routes/x", r#"{"id":"x","match":{"path":"/x"}}"#)],
            1,
        );
        assert!(o.refused.is_empty(), "{:?}", o.refused);
        assert!(s.rejected().contains_key("services/inv"));
        // Deleting both applies.
        let o = s.apply(
            vec![
                Change::Delete("services/inv".into()),
                Change::Delete("routes/a".into()),
            ],
            1,
        );
        assert_eq!(o.snapshot.unwrap().config().routes.len(), 1);
        assert!(s.rejected().is_empty());
    }

    #[test]
    fn replace_all_diffs() {
        let mut s = State::default();
        let mut listing = BTreeMap::new();
        listing.insert(
            "routes/a".to_owned(),
            br#"{"id":"a","match":{"path":"/a"}}"#.to_vec(),
        );
        listing.insert(
            "routes/b".to_owned(),
            br#"{"id":"b","match":{"path":"/b"}}"#.to_vec(),
        );
        assert!(s.replace_all(listing.clone(), 1).snapshot.is_some());
        assert!(s.replace_all(listing.clone(), 1).snapshot.is_none());
        listing.remove("routes/a");
        assert_eq!(
            s.replace_all(listing, 1)
                .snapshot
                .unwrap()
                .config()
                .routes
                .len(),
            1
        );
    }
}
