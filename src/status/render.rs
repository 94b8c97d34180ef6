//! The status report as text: one section per concern (budgets, tenants, uploads), each a
//! function, so a new concern adds a section. On a terminal, uploads get a progress bar;
//! otherwise (a pipe, a log) the same figures as plain words.

use std::fmt::Write as _;

use super::{BudgetStatus, StatusReport, TenantStatus, UploadStatus};

fn mib(bytes: u64) -> String {
    // Display only: the precision lost in the conversion does not matter.
    #[allow(clippy::cast_precision_loss)]
    let m = bytes as f64 / (1024.0 * 1024.0);
    format!("{m:.1} MiB")
}

fn rate(bytes_per_s: Option<f64>) -> String {
    bytes_per_s.map_or_else(|| "-".to_owned(), |r| format!("{:.1} MiB/s", r / (1024.0 * 1024.0)))
}

/// `[#######.............]` for `done` of `total` (empty bar for a total of 0).
fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = done
        .min(total)
        .saturating_mul(width as u64)
        .checked_div(total)
        .map_or(0, |f| usize::try_from(f).unwrap_or(width));
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled.min(width)))
}

fn budgets(out: &mut String, b: &BudgetStatus) {
    let _ = writeln!(
        out,
        "cache {} of {} ({} evictions); write buffers {} of {} (writers waited {} ms); staging {} of {}",
        mib(b.cache_used),
        mib(b.cache_budget),
        b.cache_evictions,
        mib(b.write_used),
        mib(b.write_limit),
        b.write_wait_ms,
        mib(b.staging_used),
        mib(b.staging_limit)
    );
}

fn tenants(out: &mut String, r: &StatusReport) {
    let _ = writeln!(out, "{} tenant(s)", r.tenants.len());
    let ago = |ms: u64| format!("{} s ago", r.now_ms.saturating_sub(ms) / 1000);
    for t in &r.tenants {
        tenant(out, t, &ago);
    }
}

fn tenant(out: &mut String, t: &TenantStatus, ago: &dyn Fn(u64) -> String) {
    let ro = if t.read_only { " (read-only)" } else { "" };
    let _ = writeln!(out, "  {:<20} {}{ro}", t.name, t.location);
    let ok = t.last_success_ms.map_or_else(|| "never".to_owned(), ago);
    let failed = t
        .last_failure
        .as_ref()
        .map_or_else(|| "never".to_owned(), |(ms, class)| format!("{class}, {}", ago(*ms)));
    let per_s = t.requests_per_s.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
    let hit = t
        .cache_hit_ratio
        .map_or_else(|| "-".to_owned(), |r| format!("{:.0} %", r * 100.0));
    let _ = writeln!(
        out,
        "    {} requests ({per_s}/s, {} failed), last ok {ok}, last failure {failed}\n    \
         fetched {}, served {}, uploaded {}, cache hits {hit}, read-ahead unused {}",
        t.requests,
        t.failures,
        mib(t.bytes_fetched),
        mib(t.bytes_served),
        mib(t.bytes_uploaded),
        mib(t.readahead_wasted)
    );
}

fn uploads(out: &mut String, list: &[UploadStatus], tty: bool) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "{} upload(s) in flight", list.len());
    for u in list {
        let figures = format!(
            "{} of {} uploaded, parts {}/{}, {}",
            mib(u.bytes_uploaded),
            mib(u.bytes_written),
            u.parts_done,
            u.parts_total,
            rate(u.bytes_per_s)
        );
        if tty {
            let _ = writeln!(
                out,
                "  {}/{}\n    {} {figures}",
                u.tenant,
                u.key,
                bar(u.bytes_uploaded, u.bytes_written, 30)
            );
        } else {
            let _ = writeln!(out, "  {}/{}: {figures}", u.tenant, u.key);
        }
    }
}

/// The report as text; `tty` draws progress bars.
pub fn render(r: &StatusReport, tty: bool) -> String {
    let mut out = format!(
        "config {} (generation {}), up {} s\n",
        r.config, r.generation, r.uptime_s
    );
    budgets(&mut out, &r.budgets);
    tenants(&mut out, r);
    write_back(&mut out, r);
    uploads(&mut out, &r.uploads, tty);
    out
}

fn write_back(out: &mut String, r: &StatusReport) {
    let wb = &r.write_back;
    if wb.files == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "write-back: {} file(s), {} waiting for upload ({} uploading, {} failing)",
        wb.files,
        mib(wb.bytes),
        wb.uploading,
        wb.failing
    );
    for i in &wb.items {
        let state = match (&i.last_error, i.uploading) {
            (_, true) => "uploading".to_owned(),
            (Some(e), false) => format!("failed {} time(s): {e}", i.attempts),
            (None, false) => "queued".to_owned(),
        };
        let _ = writeln!(out, "  {}/{} ({} bytes) {state}", i.tenant, i.key, i.size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_show_a_bar_on_a_terminal_and_words_otherwise() {
        let r = StatusReport {
            tenants: vec![TenantStatus {
                name: "acme".into(),
                cache_hit_ratio: Some(0.75),
                requests_per_s: Some(12.0),
                ..TenantStatus::default()
            }],
            uploads: vec![UploadStatus {
                tenant: "acme".into(),
                key: "v.mp4".into(),
                bytes_written: 100 << 20,
                bytes_uploaded: 50 << 20,
                parts_done: 6,
                parts_total: 13,
                bytes_per_s: Some(8.0 * 1024.0 * 1024.0),
            }],
            ..StatusReport::default()
        };
        let tty = render(&r, true);
        assert!(tty.contains("[###############...............]"), "{tty}");
        assert!(
            tty.contains("50.0 MiB of 100.0 MiB uploaded, parts 6/13, 8.0 MiB/s"),
            "{tty}"
        );
        assert!(tty.contains("cache hits 75 %") && tty.contains("12.0/s"), "{tty}");
        let plain = render(&r, false);
        assert!(!plain.contains('#'), "{plain}");
        assert!(plain.contains("acme/v.mp4: 50.0 MiB of 100.0 MiB uploaded"), "{plain}");
        assert_eq!(bar(5, 0, 4), "[....]");
        assert_eq!(bar(9, 4, 4), "[####]");
    }
}
