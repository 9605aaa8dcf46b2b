//! An in-memory backend: every port over plain collections. For in-process
//! tests of the handler and the processor, like PostHog capture's in-memory sink.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::range::KeyRange;
use crate::domain::{EncodedMessage, ErrorRecord, QueuedBatch, StoredEvent};
use crate::ports::{
    BackendError, ErrorFilter, ErrorQuery, ErrorStore, EventFilter, EventQuery, EventQueue,
    EventStore, KeyStore, Page, PageRequest, Principal, PutOutcome,
};

/// Every port in memory.
#[derive(Default)]
pub struct Memory {
    queued: Mutex<Vec<EncodedMessage>>,
    /// (session_id, session_key) → event
    events: Mutex<BTreeMap<(String, String), StoredEvent>>,
    errors: Mutex<BTreeMap<String, ErrorRecord>>,
    keys: Mutex<HashMap<String, Principal>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Memory {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an API key.
    pub fn add_key(&self, key: &str, principal: Principal) {
        lock(&self.keys).insert(key.to_owned(), principal);
    }

    /// Takes every queued message body, oldest first.
    pub fn drain_queue(&self) -> Vec<EncodedMessage> {
        std::mem::take(&mut *lock(&self.queued))
    }

    /// How many events are stored.
    pub fn event_count(&self) -> usize {
        lock(&self.events).len()
    }

    /// How many error records are stored.
    pub fn error_count(&self) -> usize {
        lock(&self.errors).len()
    }
}

#[async_trait]
impl EventQueue for Memory {
    async fn enqueue(&self, batch: &QueuedBatch<'_>) -> Result<(), BackendError> {
        lock(&self.queued).extend(batch.encode(usize::MAX));
        Ok(())
    }
}

#[async_trait]
impl EventStore for Memory {
    async fn put_events(&self, events: Vec<StoredEvent>) -> Vec<Result<PutOutcome, BackendError>> {
        let mut map = lock(&self.events);
        events
            .into_iter()
            .map(|e| {
                let key = (e.session_id.clone(), e.session_key());
                Ok(match map.entry(key) {
                    std::collections::btree_map::Entry::Occupied(_) => PutOutcome::Duplicate,
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(e);
                        PutOutcome::Stored
                    }
                })
            })
            .collect()
    }
}

#[async_trait]
impl ErrorStore for Memory {
    async fn put_errors(&self, errors: Vec<ErrorRecord>) -> Vec<Result<PutOutcome, BackendError>> {
        let mut map = lock(&self.errors);
        errors
            .into_iter()
            .map(|r| {
                Ok(if map.contains_key(&r.error_id) {
                    PutOutcome::Duplicate
                } else {
                    map.insert(r.error_id.clone(), r);
                    PutOutcome::Stored
                })
            })
            .collect()
    }
}

/// The page of `items` (key, item) in `range`, in key order.
fn page_of<T: Clone>(mut items: Vec<(String, T)>, range: &KeyRange, limit: usize) -> Page<T> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let fetched: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| range.contains(k))
        .take(limit + 1)
        .collect();
    Page::from_fetched(fetched, limit, |(k, _)| k.clone()).map(|(_, v)| v)
}

#[async_trait]
impl EventQuery for Memory {
    async fn session_events(
        &self,
        session_id: &str,
        app: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<StoredEvent>, BackendError> {
        let items = lock(&self.events)
            .iter()
            .filter(|((s, _), e)| s == session_id && app.is_none_or(|a| e.app == a))
            .map(|((_, k), e)| (k.clone(), e.clone()))
            .collect();
        let range = KeyRange::new(page.after.as_deref(), None, None);
        Ok(page_of(items, &range, page.limit))
    }

    async fn find_events(
        &self,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Page<StoredEvent>, BackendError> {
        let items = lock(&self.events)
            .values()
            .filter(|e| filter.category.as_ref().is_none_or(|c| &e.category == c))
            .filter(|e| filter.app.as_ref().is_none_or(|a| &e.app == a))
            .map(|e| (e.time_key(), e.clone()))
            .collect();
        let range = KeyRange::new(page.after.as_deref(), filter.from, filter.to);
        Ok(page_of(items, &range, page.limit))
    }
}

#[async_trait]
impl ErrorQuery for Memory {
    async fn find_errors(
        &self,
        filter: &ErrorFilter,
        page: PageRequest,
    ) -> Result<Page<ErrorRecord>, BackendError> {
        let items = lock(&self.errors)
            .values()
            .filter(|r| filter.code.is_none_or(|c| r.code == c))
            .filter(|r| filter.app.as_ref().is_none_or(|a| &r.app == a))
            .map(|r| (r.time_key(), r.clone()))
            .collect();
        let range = KeyRange::new(page.after.as_deref(), filter.from, filter.to);
        Ok(page_of(items, &range, page.limit))
    }
}

#[async_trait]
impl KeyStore for Memory {
    async fn verify(&self, presented: &str) -> Result<Option<Principal>, BackendError> {
        Ok(lock(&self.keys).get(presented).cloned())
    }
}
