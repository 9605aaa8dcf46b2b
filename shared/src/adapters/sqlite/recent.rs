//! The in-memory index of recent rows: the session order of the events the
//! bulk session index does not hold yet ("recent rows", never "tail", which
//! names the end of a WAL).

use std::collections::HashMap;

/// The session order of the newest events, in memory, until
/// [`super::session_index`] moves them into `session_index`. The store's
/// writer adds each event here right after its commit, before it answers, so
/// an event is found by session as soon as it is stored.
///
/// It knows only this process's events. Rowids are given in order and never
/// freed (events are never deleted), so rows another process wrote show up as
/// a gap in the rowids; from the gap on, readers scan the table instead.
#[derive(Default)]
pub(super) struct RecentRows {
    /// Per session: the rowids, in commit order. Only the rowids, to keep
    /// it small: the rows are read to order them.
    by_session: HashMap<String, Vec<i64>>,
    /// Entries at or below this rowid have been dropped.
    pruned_through: i64,
    /// Every event with a rowid in (watermark, `known_through`] is here.
    known_through: i64,
}

/// Where a session query finds the events above the watermark.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RecentAnswer {
    /// Rowids from the recent rows.
    pub(super) ids: Vec<i64>,
    /// Scan the table above this rowid, for the rows not held here.
    pub(super) scan_after: Option<i64>,
}

impl RecentRows {
    /// Takes in the events of a commit, in rowid order.
    pub(super) fn add(&mut self, rows: impl IntoIterator<Item = (String, i64)>) {
        for (session, id) in rows {
            if id == self.known_through + 1 {
                self.known_through = id;
            }
            self.by_session.entry(session).or_default().push(id);
        }
    }

    /// Session ids that split the sessions it holds into `chunks` ranges of
    /// about as many sessions each.
    pub(super) fn split(&self, chunks: usize) -> Vec<String> {
        let mut sessions: Vec<&String> = self.by_session.keys().collect();
        sessions.sort_unstable();
        let mut bounds: Vec<String> = (1..chunks)
            .filter_map(|i| sessions.get(sessions.len() * i / chunks))
            .map(|s| (*s).clone())
            .collect();
        bounds.dedup();
        bounds
    }

    /// After a bulk index that moved the watermark from `before` to `through`
    /// (the newest rowid then). Drops the entries at or below `before`, one
    /// step behind, so a reader whose snapshot still sees `before` finds its
    /// entries here. If rows of another process made a gap, drops everything
    /// up to `through` instead: readers of older snapshots then scan.
    pub(super) fn indexed(&mut self, before: i64, through: i64) {
        let gap = self.known_through < through;
        let drop_through = if gap { through } else { before };
        if drop_through > self.pruned_through {
            self.by_session.retain(|_, entries| {
                entries.retain(|id| *id > drop_through);
                !entries.is_empty()
            });
            self.pruned_through = drop_through;
        }
        if gap {
            // Whole again from `through` on, as far as this process's rows
            // committed during the run follow on from it.
            self.known_through = through;
            let mut after: Vec<i64> = self.by_session.values().flatten().copied().collect();
            after.sort_unstable();
            for id in after {
                if id != self.known_through + 1 {
                    break;
                }
                self.known_through = id;
            }
        }
    }

    /// For a snapshot whose watermark is `indexed` and newest rowid `newest`:
    /// `session`'s events above the watermark, and from where the table must
    /// be scanned for the rest.
    pub(super) fn lookup(&self, session: &str, indexed: i64, newest: i64) -> RecentAnswer {
        if indexed < self.pruned_through {
            return RecentAnswer {
                ids: Vec::new(),
                scan_after: Some(indexed),
            };
        }
        let upto = self.known_through.min(newest);
        RecentAnswer {
            ids: self
                .by_session
                .get(session)
                .into_iter()
                .flatten()
                .copied()
                .filter(|id| *id > indexed && *id <= upto)
                .collect(),
            scan_after: (upto < newest).then_some(upto.max(indexed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RecentAnswer, RecentRows};

    fn rows(session: &str, ids: std::ops::RangeInclusive<i64>) -> Vec<(String, i64)> {
        ids.map(|id| (session.to_owned(), id)).collect()
    }

    #[test]
    fn recent_rows_answer_alone_while_it_knows_every_row() {
        let mut recent = RecentRows::default();
        recent.add(rows("a", 1..=3));
        recent.add(rows("b", 4..=4));
        recent.add(rows("a", 5..=5));
        let answer = recent.lookup("a", 0, 5);
        assert_eq!(
            answer,
            RecentAnswer {
                ids: vec![1, 2, 3, 5],
                scan_after: None
            }
        );
        // Above the snapshot's watermark, and not past its newest row.
        assert_eq!(recent.lookup("a", 2, 3).ids, [3]);
        // Rows the writer has committed but not yet handed over: scanned.
        assert_eq!(recent.lookup("a", 0, 7).scan_after, Some(5));
    }

    #[test]
    fn a_gap_in_the_rowids_means_another_writer_and_a_scan() {
        let mut recent = RecentRows::default();
        recent.add(rows("a", 1..=2));
        recent.add(rows("a", 6..=7)); // 3..=5 are another process's
        let answer = recent.lookup("a", 0, 7);
        assert_eq!(answer.ids, [1, 2]);
        assert_eq!(answer.scan_after, Some(2));
        // An index run through 7 covers the gap; the rows are whole again.
        recent.indexed(0, 7);
        recent.add(rows("a", 8..=8));
        assert_eq!(
            recent.lookup("a", 7, 8),
            RecentAnswer {
                ids: vec![8],
                scan_after: None
            }
        );
        // A snapshot from before that run cannot be answered from the recent.
        assert_eq!(recent.lookup("a", 0, 7).scan_after, Some(0));
    }

    #[test]
    fn chunks_split_the_sessions_evenly_and_cover_them_all() {
        let mut recent = RecentRows::default();
        assert!(recent.split(8).is_empty(), "nothing to split: one chunk");
        for (i, s) in ["d", "a", "c", "b"].iter().enumerate() {
            recent.add([(s.to_string(), i as i64 + 1)]);
        }
        assert_eq!(recent.split(2), ["c"]);
        assert_eq!(recent.split(4), ["b", "c", "d"]);
        // More chunks than sessions: no empty duplicates.
        assert_eq!(recent.split(8), ["a", "b", "c", "d"]);
    }

    #[test]
    fn after_a_gap_recent_rows_are_whole_again_with_what_came_during_the_run() {
        let mut recent = RecentRows::default();
        recent.add(rows("a", 1..=2));
        recent.add(rows("b", 5..=6)); // 3 and 4 are another process's
        // A run through 6 began; this process committed 7 and 8 meanwhile.
        recent.add(rows("a", 7..=8));
        recent.indexed(0, 6);
        assert_eq!(
            recent.lookup("a", 6, 8),
            RecentAnswer {
                ids: vec![7, 8],
                scan_after: None
            }
        );
        recent.add(rows("b", 9..=9));
        assert_eq!(recent.lookup("b", 6, 9).scan_after, None);
    }

    #[test]
    fn pruning_stays_one_index_run_behind() {
        let mut recent = RecentRows::default();
        recent.add(rows("a", 1..=4));
        recent.indexed(0, 4);
        recent.add(rows("a", 5..=6));
        recent.indexed(4, 6);
        // A reader still on watermark 4 finds 5 and 6 here.
        assert_eq!(
            recent.lookup("a", 4, 6),
            RecentAnswer {
                ids: vec![5, 6],
                scan_after: None
            }
        );
        // One on watermark 0 is told to scan: 1..=4 are gone.
        assert_eq!(recent.lookup("a", 0, 6).scan_after, Some(0));
        recent.indexed(6, 6);
        assert!(recent.by_session.is_empty());
    }
}
