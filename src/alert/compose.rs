//! The words of an alert mail: subject and plain-text body, composed from
//! alerts without any I/O so every line can be unit-tested.
//!
//! One alert makes a mail that says what happened in its subject (severity,
//! what, job, frames) and gives the details below. Several make a digest:
//! its subject counts the alerts by kind under the worst severity, its body
//! lists them in time order. Text from engines and the network is untrusted:
//! control characters are removed from the subject (a newline there would
//! start a new header), and log tails and long digests are cut to a size a
//! mail reader can show, saying so where something was left out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Alert, AlertConfig, AlertKind, Severity};

/// Subjects longer than this are cut (mail clients show ~80 characters).
const SUBJECT_MAX: usize = 150;
/// Log lines shown for one alert; a digest shows fewer per alert.
const LOG_LINES_SINGLE: usize = 30;
const LOG_LINES_DIGEST: usize = 8;
/// Characters of log shown per alert, whatever the line count.
const LOG_CHARS: usize = 4000;
/// Alerts described in full in one digest; the rest are counted.
const DIGEST_DETAILED: usize = 50;
/// Frame ranges listed before the rest are counted.
const FRAME_RANGES_SHOWN: usize = 12;

/// Subject and plain-text body for one mail about `alerts` (one alert, or a
/// digest of several).
pub fn compose(alerts: &[Alert], cfg: &AlertConfig) -> (String, String) {
    let mut sorted: Vec<&Alert> = alerts.iter().collect();
    sorted.sort_by_key(|a| a.time_ms);
    match sorted.as_slice() {
        [] => ("[renderswarm] no alerts".to_owned(), String::new()),
        [one] => (single_subject(one), single_body(one, cfg)),
        many => (digest_subject(many), digest_body(many, cfg)),
    }
}

fn single_subject(a: &Alert) -> String {
    let mut s = format!("[renderswarm {}] {}", upper(a.severity), a.kind.title());
    if let Some(job) = &a.job {
        let _ = write!(s, ": {job}{}", frames_suffix(&a.frames));
    }
    if !a.message.trim().is_empty() {
        let _ = write!(s, " - {}", a.message);
    }
    one_line(&s, SUBJECT_MAX)
}

fn digest_subject(alerts: &[&Alert]) -> String {
    let worst = alerts
        .iter()
        .map(|a| a.severity)
        .max()
        .unwrap_or(Severity::Info);
    let mut s = format!(
        "[renderswarm {}] {} alerts: {}",
        upper(worst),
        alerts.len(),
        counts(alerts)
    );
    let jobs: std::collections::BTreeSet<&str> =
        alerts.iter().filter_map(|a| a.job.as_deref()).collect();
    match jobs.len() {
        0 => {}
        1 => {
            let _ = write!(s, " (job {})", jobs.first().copied().unwrap_or_default());
        }
        n => {
            let _ = write!(s, " ({n} jobs)");
        }
    }
    one_line(&s, SUBJECT_MAX)
}

/// "5 task failed, 1 node lost": worst severity first, then most frequent.
fn counts(alerts: &[&Alert]) -> String {
    let mut by_kind: BTreeMap<AlertKind, (Severity, usize)> = BTreeMap::new();
    for a in alerts {
        let e = by_kind.entry(a.kind).or_insert((a.severity, 0));
        e.0 = e.0.max(a.severity);
        e.1 += 1;
    }
    let mut list: Vec<(AlertKind, Severity, usize)> =
        by_kind.into_iter().map(|(k, (s, n))| (k, s, n)).collect();
    list.sort_by(|x, y| y.1.cmp(&x.1).then(y.2.cmp(&x.2)).then(x.0.cmp(&y.0)));
    let parts: Vec<String> = list
        .iter()
        .map(|(k, _, n)| format!("{n} {}", k.title()))
        .collect();
    parts.join(", ")
}

fn single_body(a: &Alert, cfg: &AlertConfig) -> String {
    let mut out = format!("{}: {}\n\n", upper(a.severity), a.kind.title());
    if !a.message.trim().is_empty() {
        let _ = writeln!(out, "{}\n", a.message.trim());
    }
    write_details(&mut out, a, cfg, "  ", LOG_LINES_SINGLE);
    write_footer(&mut out, cfg);
    out
}

fn digest_body(alerts: &[&Alert], cfg: &AlertConfig) -> String {
    let worst = alerts
        .iter()
        .map(|a| a.severity)
        .max()
        .unwrap_or(Severity::Info);
    let mut out = format!(
        "{} alerts, worst severity {}: {}\n",
        alerts.len(),
        upper(worst),
        counts(alerts)
    );
    for (i, a) in alerts.iter().take(DIGEST_DETAILED).enumerate() {
        let _ = write!(out, "\n{}. {} {}", i + 1, upper(a.severity), a.kind.title());
        if !a.message.trim().is_empty() {
            let _ = write!(out, " - {}", one_line(&a.message, 500));
        }
        out.push('\n');
        write_details(&mut out, a, cfg, "   ", LOG_LINES_DIGEST);
    }
    if alerts.len() > DIGEST_DETAILED {
        let _ = writeln!(
            out,
            "\n... and {} more alerts, counted above but not shown here: see the status page.",
            alerts.len() - DIGEST_DETAILED
        );
    }
    write_footer(&mut out, cfg);
    out
}

/// The labelled lines for one alert, then its log tail.
fn write_details(out: &mut String, a: &Alert, cfg: &AlertConfig, indent: &str, log_lines: usize) {
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{indent}{label:<8} {value}");
    };
    if let Some(job) = &a.job {
        match &a.job_id {
            Some(id) => line("job:", &format!("{job} (id {id})")),
            None => line("job:", job),
        }
    }
    if !a.frames.is_empty() {
        line("frames:", &format_frames(&a.frames));
    }
    line("node:", &a.node);
    line("time:", &format_time(a.time_ms));
    if let Some(reason) = &a.reason {
        line("reason:", &one_line(reason, 1000));
    }
    if let Some(link) = job_link(a, cfg) {
        line("status:", &link);
    }
    line("alert:", &a.id);
    if let Some(tail) = a.log_tail.as_deref().filter(|t| !t.trim().is_empty()) {
        let _ = writeln!(out, "{indent}engine log, last lines:");
        for l in log_tail(tail, log_lines) {
            let _ = writeln!(out, "{indent}  | {l}");
        }
    }
}

fn write_footer(out: &mut String, cfg: &AlertConfig) {
    out.push('\n');
    if let Some(page) = &cfg.page_url {
        let _ = writeln!(out, "Status page: {page}/");
    }
    let _ = writeln!(
        out,
        "--\nSent by renderswarm for alerts of level {} and above.",
        cfg.level
    );
}

/// `{page}/#job={id}`, the status page's own link to a job.
fn job_link(a: &Alert, cfg: &AlertConfig) -> Option<String> {
    let page = cfg.page_url.as_deref()?;
    let id = a
        .job_id
        .as_deref()
        .filter(|id| !id.is_empty() && id.bytes().all(|c| c.is_ascii_hexdigit()))?;
    Some(format!("{page}/#job={id}"))
}

/// The last `max_lines` lines of `tail`, at most `LOG_CHARS` characters,
/// with control characters (terminal colours, carriage returns) removed.
fn log_tail(tail: &str, max_lines: usize) -> Vec<String> {
    let lines: Vec<&str> = tail.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    let mut out = Vec::new();
    let mut budget = LOG_CHARS;
    if start > 0 {
        out.push(format!("({start} earlier lines not shown)"));
    }
    for l in lines.iter().skip(start) {
        let clean = clean_log_line(l);
        let n = clean.chars().count();
        if n > budget {
            out.push("(cut: log too long)".to_owned());
            break;
        }
        budget -= n;
        out.push(clean);
    }
    out
}

/// A log line without terminal escape sequences (`ESC [ ... letter`) or
/// other control characters.
fn clean_log_line(l: &str) -> String {
    let mut out = String::with_capacity(l.len());
    let mut chars = l.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                for e in chars.by_ref() {
                    if e.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

/// Frames as ranges: `1-3, 7, 9-10`; a long list ends with the total.
pub fn format_frames(frames: &[u32]) -> String {
    let mut sorted = frames.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for f in sorted.iter().copied() {
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(f) => *end = f,
            _ => ranges.push((f, f)),
        }
    }
    let mut parts: Vec<String> = ranges
        .iter()
        .take(FRAME_RANGES_SHOWN)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if ranges.len() > FRAME_RANGES_SHOWN {
        parts.push(format!("... ({} frames in all)", sorted.len()));
    }
    parts.join(", ")
}

fn frames_suffix(frames: &[u32]) -> String {
    match frames {
        [] => String::new(),
        [f] => format!(" frame {f}"),
        _ => format!(" frames {}", format_frames(frames)),
    }
}

fn upper(s: Severity) -> String {
    s.as_str().to_ascii_uppercase()
}

/// One line of at most `max` characters: control characters become spaces,
/// runs of spaces collapse, and a cut ends with `...`.
fn one_line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max + 3));
    let mut count = 0;
    for c in s.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if count == max {
            out.truncate(out.trim_end().len());
            out.push_str("...");
            return out;
        }
        out.push(c);
        count += 1;
    }
    out.truncate(out.trim_end().len());
    out
}

/// `2025-03-01 14:05:09 UTC` from Unix milliseconds, without a date crate
/// (days to civil date: Howard Hinnant's algorithm).
fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AlertConfig {
        AlertConfig {
            page_url: Some("http://farm.lan:7878".to_owned()),
            ..AlertConfig::default()
        }
    }

    fn failure(frame: u32, t: u64) -> Alert {
        Alert::new(
            AlertKind::TaskFailed,
            "render-03",
            1_700_000_000_000 + t,
            "Blender exited with code 1",
        )
        .with_job("shot_010", "ab12cd")
        .with_frames(vec![frame])
        .with_reason(&format!("frame {frame}: exit code 1"))
        .with_log_tail("Fra:12 Mem:10M\nError: out of memory")
    }

    #[test]
    fn a_single_alert_says_what_happened_in_the_subject() {
        let a = failure(12, 0).with_frames(vec![12, 13, 14]);
        let (subject, body) = compose(std::slice::from_ref(&a), &cfg());
        assert_eq!(
            subject,
            "[renderswarm WARNING] task failed: shot_010 frames 12-14 - Blender exited with code 1"
        );
        for want in [
            "WARNING: task failed",
            "Blender exited with code 1",
            "job:     shot_010 (id ab12cd)",
            "frames:  12-14",
            "node:    render-03",
            "time:    2023-11-14 22:13:20 UTC",
            "reason:  frame 12: exit code 1",
            "status:  http://farm.lan:7878/#job=ab12cd",
            "  | Error: out of memory",
            "Status page: http://farm.lan:7878/",
            "level warning and above",
            a.id.as_str(),
        ] {
            assert!(body.contains(want), "missing {want:?} in:\n{body}");
        }
    }

    #[test]
    fn a_node_alert_has_no_job_part() {
        let a = Alert::new(
            AlertKind::NodeLost,
            "render-01",
            0,
            "render-07 vanished holding 2 claims",
        );
        let (subject, body) = compose(&[a], &AlertConfig::default());
        assert_eq!(
            subject,
            "[renderswarm WARNING] node lost - render-07 vanished holding 2 claims"
        );
        assert!(
            !body.contains("job:") && !body.contains("status:") && !body.contains("Status page")
        );
        assert!(body.contains("time:    1970-01-01 00:00:00 UTC"), "{body}");
    }

    #[test]
    fn subjects_are_one_short_line() {
        let evil = format!("line one\r\nBcc: victim@x.test\n{}", "x".repeat(400));
        let a = Alert::new(AlertKind::DiskLow, "n", 0, &evil);
        let (subject, _) = compose(&[a], &AlertConfig::default());
        assert!(
            !subject.contains('\n') && !subject.contains('\r'),
            "{subject}"
        );
        assert!(
            subject.contains("line one Bcc: victim@x.test x"),
            "{subject}"
        );
        assert_eq!(subject.chars().count(), SUBJECT_MAX + 3);
        assert!(subject.ends_with("..."));
    }

    #[test]
    fn a_digest_counts_by_kind_under_the_worst_severity() {
        let mut alerts: Vec<Alert> = (0..5)
            .map(|i| failure(20 + i, 100 - u64::from(i)))
            .collect();
        alerts.push(
            Alert::new(
                AlertKind::JobFailed,
                "render-03",
                1_700_000_000_500,
                "frame 21 failed 3 times",
            )
            .with_job("shot_010", "ab12cd"),
        );
        let (subject, body) = compose(&alerts, &cfg());
        assert_eq!(
            subject,
            "[renderswarm ERROR] 6 alerts: 1 job failed, 5 task failed (job shot_010)"
        );
        assert!(body.starts_with("6 alerts, worst severity ERROR: 1 job failed, 5 task failed\n"));
        for f in 20..25 {
            assert!(
                body.contains(&format!("reason:  frame {f}: exit code 1")),
                "frame {f}:\n{body}"
            );
        }
        // Time order: the last-pushed task failure happened first.
        let first = body.find("frame 24: exit").unwrap();
        let last = body.find("frame 20: exit").unwrap();
        assert!(first < last);
        assert!(
            body.contains("\n6. ERROR job failed - frame 21 failed 3 times\n"),
            "{body}"
        );
    }

    #[test]
    fn digests_name_the_job_count_and_cut_long_lists() {
        let mut alerts: Vec<Alert> = (0..60).map(|i| failure(i, u64::from(i))).collect();
        alerts.push(Alert::new(AlertKind::TaskFailed, "n", 0, "x").with_job("shot_020", "ff"));
        let (subject, body) = compose(&alerts, &cfg());
        assert_eq!(
            subject,
            "[renderswarm WARNING] 61 alerts: 61 task failed (2 jobs)"
        );
        assert!(body.contains("\n50. WARNING task failed"));
        assert!(!body.contains("\n51. "));
        assert!(
            body.contains("... and 11 more alerts, counted above"),
            "{body}"
        );
    }

    #[test]
    fn log_tails_are_cut_and_cleaned() {
        let log: String = (1..=100).map(|i| format!("line {i}\x1b[0m\n")).collect();
        let a = failure(1, 0).with_log_tail(&log);
        let (_, body) = compose(&[a], &cfg());
        assert!(body.contains("(70 earlier lines not shown)"), "{body}");
        assert!(body.contains("  | line 100\n") && !body.contains("line 70\n"));
        assert!(!body.contains('\x1b'));
        let huge = "y".repeat(LOG_CHARS + 1);
        let lines = log_tail(&huge, 5);
        assert_eq!(lines, vec!["(cut: log too long)".to_owned()]);
    }

    #[test]
    fn links_need_a_page_and_a_hex_job_id() {
        let a = failure(1, 0).with_job("shot", "../../etc");
        assert_eq!(job_link(&a, &cfg()), None);
        assert_eq!(job_link(&failure(1, 0), &AlertConfig::default()), None);
    }

    #[test]
    fn frames_read_as_ranges() {
        assert_eq!(format_frames(&[]), "");
        assert_eq!(format_frames(&[5]), "5");
        assert_eq!(format_frames(&[10, 9, 3, 1, 2, 2, 7]), "1-3, 7, 9-10");
        assert_eq!(
            format_frames(&[u32::MAX, u32::MAX - 1, 0]),
            "0, 4294967294-4294967295"
        );
        let spread: Vec<u32> = (0..30).map(|i| i * 2).collect();
        let s = format_frames(&spread);
        assert!(
            s.starts_with("0, 2, 4") && s.ends_with("22, ... (30 frames in all)"),
            "{s}"
        );
    }

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_700_000_000_999), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_time(4_102_444_799_000), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn nothing_to_say_is_said_briefly() {
        let (subject, body) = compose(&[], &cfg());
        assert_eq!(subject, "[renderswarm] no alerts");
        assert!(body.is_empty());
    }
}
