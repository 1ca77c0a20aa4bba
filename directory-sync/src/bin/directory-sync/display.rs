//! What a command prints: progress lines and bars, notices, summaries,
//! one-line job descriptions, and reads that wait out a database outage.

use anyhow::{Result, bail};
use directory_sync::{Database, SyncSummary};
use job_queue::JobState;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
    pub(crate) quiet: bool,
}

/// How long the CLI waits for an unreachable database before it gives up.
pub(crate) const DATABASE_PATIENCE: Duration = Duration::from_secs(120);

/// A database read that waits out an outage (a restart, a network blip),
/// saying so on stderr when a read fails or hangs, and gives up after
/// [`DATABASE_PATIENCE`].
pub(crate) async fn through_outages<T, F, Fut>(display: &Display, mut read: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = job_queue::Result<T>>,
{
    let started = Instant::now();
    let patience = DATABASE_PATIENCE.as_secs();
    let mut outage = OutageNotices::default();
    loop {
        let attempt = read();
        tokio::pin!(attempt);
        let outcome = loop {
            tokio::select! {
                outcome = &mut attempt => break outcome,
                () = tokio::time::sleep(Duration::from_secs(3)) => {
                    if started.elapsed() >= DATABASE_PATIENCE {
                        bail!("the database has not answered for {patience}s; giving up");
                    }
                    let silent = started.elapsed().as_secs();
                    let waiting = if display.local_database { "a read has waited" } else { "not answering for" };
                    outage.notice(display, &format!("{waiting} {silent}s; waiting up to {patience}s"));
                }
            }
        };
        match outcome {
            Ok(value) => {
                if outage.reported {
                    display.notice(&format!("database reachable again after {}s", started.elapsed().as_secs()));
                }
                return Ok(value);
            }
            Err(err) if err.is_unreachable() && started.elapsed() < DATABASE_PATIENCE => {
                outage.notice(display, &format!("{err}; waiting up to {patience}s"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) if err.is_unreachable() => bail!("the database has been unreachable for {patience}s: {err}"),
            Err(err) => return Err(err.into()),
        }
    }
}

/// Outage lines at most every ten seconds.
#[derive(Default)]
pub(crate) struct OutageNotices {
    pub(crate) reported: bool,
    pub(crate) last: Option<Instant>,
}

impl OutageNotices {
    pub(crate) fn notice(&mut self, display: &Display, detail: &str) {
        if self.last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            // A local file that answers slowly is busy (another process writes), not unreachable.
            let what = if display.local_database { "database busy" } else { "database unreachable" };
            display.notice(&format!("{what}: {detail}"));
            self.last = Some(Instant::now());
            self.reported = true;
        }
    }
}

/// A progress bar on a terminal, plain lines (about one a second) otherwise.
pub(crate) struct Display {
    pub(crate) bar: Option<indicatif::ProgressBar>,
    pub(crate) quiet: bool,
    /// Notices (outages) go to stderr even with `--json`; only `--quiet` drops them.
    pub(crate) notices: bool,
    pub(crate) last_line: std::sync::Mutex<Option<Instant>>,
    /// The latest progress line not printed (lines are rate-limited), so the
    /// last one is printed at the end of a long run.
    pub(crate) unprinted: std::sync::Mutex<Option<String>>,
    /// Plain progress lines start after a second: a quick run prints its
    /// summary alone, not a first line such as "Importing: 0/31 files"
    /// that reads as "nothing imported".
    pub(crate) started: Instant,
    /// The database is a local SQLite file (slow means busy, not unreachable).
    pub(crate) local_database: bool,
}

impl Display {
    pub(crate) fn new(output: Output) -> Self {
        let quiet = output.quiet || output.json;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| indicatif::ProgressBar::new(0));
        Self {
            bar,
            quiet,
            notices: !output.quiet,
            last_line: std::sync::Mutex::new(None),
            unprinted: std::sync::Mutex::new(None),
            started: Instant::now(),
            local_database: false,
        }
    }

    /// For commands on `db`: its outage notices name what is likely.
    pub(crate) fn for_database(output: Output, db: &Database) -> Self {
        Self { local_database: db.backend == "sqlite", ..Self::new(output) }
    }

    pub(crate) fn progress(&self, progress: &batch_core::Progress) {
        if let Some(bar) = &self.bar {
            // One count per line: the bar shows it, so the message keeps its
            // label ("Importing: 15/47 files" → "Importing"). A spinner while
            // the total is unknown. At most ~70 columns.
            let template = if progress.total > 0 {
                "{bar:30} {pos}/{len} {msg} (eta {eta})"
            } else {
                "{spinner} {pos} {msg} ({elapsed})"
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_length(progress.total);
            bar.set_position(progress.current);
            let label = progress.message.split(':').next().unwrap_or_default();
            bar.set_message(label.to_owned());
            bar.tick();
        } else if !progress.message.is_empty() {
            self.message(&progress.message);
        }
    }

    pub(crate) fn message(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_owned());
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut unprinted = self.unprinted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.quiet {
            return;
        }
        let due = self.started.elapsed() >= Duration::from_secs(1);
        if due && last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            errln!("{message}");
            *last = Some(Instant::now());
            *unprinted = None;
        } else {
            *unprinted = Some(message.to_owned());
        }
    }

    /// A line that must be seen (not rate-limited), above the bar if there is one.
    pub(crate) fn notice(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.notices => errln!("{line}"),
            None => {}
        }
    }

    /// Ends the display: the bar goes; without one, a run that printed
    /// progress prints its last line too.
    pub(crate) fn clear(&self) {
        let unprinted = self.unprinted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        } else if let Some(line) = unprinted.filter(|_| self.started.elapsed() >= Duration::from_secs(1)) {
            errln!("{line}");
        }
    }
}

/// The summary on stdout; `--quiet` keeps the headline, conflicts and failures only.
pub(crate) fn print_summary(summary: &SyncSummary, output: Output) {
    if output.json {
        outln!("{}", serde_json::to_string(summary).unwrap_or_default());
        return;
    }
    outln!("{}", summary.headline());
    if !summary.skipped.is_empty() {
        let shown: Vec<&str> = summary.skipped.iter().take(5).map(|p| p.path.as_str()).collect();
        let more = summary.skipped.len().saturating_sub(shown.len());
        let more = if more > 0 { format!(" and {more} more (--json lists them)") } else { String::new() };
        outln!("  skipped {} hidden: {}{more}", summary.skipped.len(), shown.join(", "));
    }
    for conflict in &summary.conflicts {
        outln!("  conflict {}: your file's version is kept as {}", conflict.path, conflict.conflict_path);
    }
    for problem in &summary.failed {
        outln!("  failed {}: {}", problem.path, problem.error);
    }
    if output.quiet {
        return;
    }
    for problem in &summary.warnings {
        outln!("  warning {}: {}", problem.path, problem.error);
    }
}

/// The worker's line for a job that ended (or will be retried).
pub(crate) fn finished_line(job: &job_queue::Job) -> String {
    let folder =
        job.input.get("folder").and_then(serde_json::Value::as_str).map(|f| format!(" {f}:")).unwrap_or_default();
    format!("{} {} {}{folder} {}", job.id, job.job_type, job.state.as_str(), job_line(job))
}

/// What a job's status line says: a finished sync's summary, a failed
/// job's error, else where its progress stands.
pub(crate) fn job_line(job: &job_queue::Job) -> String {
    let summary = (job.state == JobState::Completed)
        .then(|| job.output.clone().and_then(|out| serde_json::from_value::<SyncSummary>(out).ok()))
        .flatten();
    match (summary, &job.last_error) {
        (Some(summary), _) => summary.headline(),
        (None, Some(error)) if job.state != JobState::Completed => error.clone(),
        _ if job.progress.total > 0 => {
            format!("{} ({}/{})", job.progress.message, job.progress.current, job.progress.total)
        }
        _ => job.progress.message.clone(),
    }
}

/// Where a stopped job had got to: "after 120/500 (Importing)", or
/// "before it reported any progress".
pub(crate) fn reached(progress: &batch_core::Progress) -> String {
    match (progress.total, progress.message.is_empty()) {
        (0, true) => "before it reported any progress".to_owned(),
        (0, false) => format!("at \"{}\"", progress.message),
        (total, _) => format!("after {}/{total} ({})", progress.current, progress.message),
    }
}

/// The further of a job's stored progress and the last one this command
/// saw as an event. A cancel's write ends the job before its worker saves
/// how far it got, and stored progress is written at most once a second, so
/// a command that read the job at once said "after 0/3000" of an import
/// that had written 2,500.
pub(crate) fn furthest<'a>(
    seen: &'a batch_core::Progress,
    stored: &'a batch_core::Progress,
) -> &'a batch_core::Progress {
    if (seen.current, seen.total) > (stored.current, stored.total) { seen } else { stored }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_further_of_seen_and_stored_progress_is_told() {
        let at = |current, total| batch_core::Progress {
            current,
            total,
            message: format!("{current}/{total}"),
            ..batch_core::Progress::default()
        };
        // (seen as an event, stored, told)
        let cases = [
            (at(2500, 3000), at(0, 3000), at(2500, 3000)), // the store lags the events
            (at(0, 0), at(1000, 3000), at(1000, 3000)),    // run elsewhere: no events seen
            (at(500, 3000), at(500, 3000), at(500, 3000)), // equal: the stored one
            (at(0, 0), at(0, 0), at(0, 0)),
        ];
        for (seen, stored, told) in cases {
            assert_eq!(furthest(&seen, &stored), &told, "seen {seen:?}, stored {stored:?}");
        }
    }

    #[test]
    fn a_stopped_job_says_where_it_got_to() {
        let progress = |current, total, message: &str| batch_core::Progress {
            current,
            total,
            message: message.to_owned(),
            ..batch_core::Progress::default()
        };
        let cases = [
            (progress(0, 0, ""), "before it reported any progress"),
            (progress(0, 0, "Exporting"), "at \"Exporting\""),
            (progress(120, 500, "Importing: 120/500 files"), "after 120/500 (Importing: 120/500 files)"),
        ];
        for (given, expected) in cases {
            assert_eq!(reached(&given), expected);
        }
    }
}
