//! Guards for a paged listing read to its end: the server decides how many pages there are,
//! and a broken or hostile one (a continuation token it repeats, "truncated" pages without
//! entries forever, millions of keys) must not make a listing loop forever or hold unbounded
//! memory. [`ListGuard`] is fed each page and says when to stop, with a
//! [`BackendErrorKind::Protocol`] error naming what the server did.

use std::collections::HashSet;

use super::{BackendError, BackendErrorKind, BackendResult, ListPage};

/// Entries one listing may hold: a directory handle keeps every entry it has shown (readdir
/// offsets must stay stable), about 150 bytes each, so this caps one handle near 150 MiB.
pub(crate) const MAX_LISTING_ENTRIES: usize = 1_000_000;

/// Pages without a single entry in a row that still say "truncated". S3 may send a few
/// (delete markers, a scan cut short by time); a hundred in a row is a server looping.
const MAX_EMPTY_PAGES: u32 = 100;

/// Pages one listing may take: [`MAX_LISTING_ENTRIES`] at ten entries a page.
const MAX_PAGES: u32 = 100_000;

/// Checks each page of one listing (see the module doc).
#[derive(Debug)]
pub(crate) struct ListGuard {
    what: String,
    max_entries: usize,
    entries: usize,
    pages: u32,
    empty_in_a_row: u32,
    tokens: HashSet<String>,
}

impl ListGuard {
    /// A guard for the listing `what` (tenant and prefix, for the error message; already
    /// escaped) holding at most `max_entries` entries.
    pub(crate) fn new(what: &str, max_entries: usize) -> Self {
        Self {
            what: what.to_owned(),
            max_entries,
            entries: 0,
            pages: 0,
            empty_in_a_row: 0,
            tokens: HashSet::new(),
        }
    }

    /// Account for `page`: an error if the listing must stop here.
    pub(crate) fn check(&mut self, page: &ListPage) -> BackendResult<()> {
        self.pages += 1;
        let n = page.objects.len() + page.common_prefixes.len();
        self.entries = self.entries.saturating_add(n);
        if self.entries > self.max_entries {
            return Err(self.error(format!("more than {} entries", self.max_entries)));
        }
        let Some(token) = &page.next else {
            return Ok(());
        };
        if n == 0 {
            self.empty_in_a_row += 1;
            if self.empty_in_a_row > MAX_EMPTY_PAGES {
                return Err(self.error(format!("{MAX_EMPTY_PAGES} empty pages in a row, still truncated")));
            }
        } else {
            self.empty_in_a_row = 0;
        }
        if self.pages >= MAX_PAGES {
            return Err(self.error(format!("more than {MAX_PAGES} pages")));
        }
        if !self.tokens.insert(token.clone()) {
            return Err(self.error("a continuation token came back again (the listing loops)".to_owned()));
        }
        Ok(())
    }

    fn error(&self, why: String) -> BackendError {
        BackendError::new(
            BackendErrorKind::Protocol,
            format!("list {}: {why}; stopped after {} pages", self.what, self.pages),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ObjectMeta;

    fn page(n: usize, next: Option<&str>) -> ListPage {
        let objects = (0..n)
            .map(|i| ObjectMeta::new(format!("k{i}"), 1, Some(std::time::SystemTime::UNIX_EPOCH), None))
            .collect();
        ListPage::new(objects, Vec::new(), next.map(str::to_owned))
    }

    #[test]
    fn a_normal_listing_passes() {
        let mut g = ListGuard::new("p/", 10_000);
        for i in 0..5 {
            g.check(&page(1000, Some(&format!("t{i}")))).unwrap();
        }
        g.check(&page(3, None)).unwrap();
    }

    #[test]
    fn a_repeated_token_stops_the_listing() {
        let mut g = ListGuard::new("p/", 10_000);
        g.check(&page(2, Some("a"))).unwrap();
        g.check(&page(2, Some("b"))).unwrap();
        let e = g.check(&page(2, Some("a"))).unwrap_err();
        assert_eq!(e.kind(), BackendErrorKind::Protocol);
        assert!(e.to_string().contains("loops"), "{e}");
    }

    #[test]
    fn endless_empty_truncated_pages_stop_but_a_few_pass() {
        let mut g = ListGuard::new("p/", 10_000);
        for i in 0..MAX_EMPTY_PAGES {
            g.check(&page(0, Some(&format!("e{i}")))).unwrap();
        }
        g.check(&page(1, Some("x"))).unwrap();
        for i in 0..MAX_EMPTY_PAGES {
            g.check(&page(0, Some(&format!("f{i}")))).unwrap();
        }
        let e = g.check(&page(0, Some("last"))).unwrap_err();
        assert!(e.to_string().contains("empty pages"), "{e}");
    }

    #[test]
    fn too_many_entries_stop_the_listing() {
        let mut g = ListGuard::new("p/", 2500);
        g.check(&page(1000, Some("a"))).unwrap();
        g.check(&page(1000, Some("b"))).unwrap();
        let e = g.check(&page(1000, Some("c"))).unwrap_err();
        assert!(e.to_string().contains("more than 2500 entries"), "{e}");
    }
}
