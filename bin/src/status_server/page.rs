//! `GET /`: the status page, one server-rendered HTML document with no external assets
//! (an edge box is often offline) and no script: health with its reasons, the queue, a
//! chart of the last hour of delivery (inline SVG, from [`History`]), the breaker and
//! auth pause with the next attempt, the latest dead letters (paged with `?page=N`) and
//! the latest incidents. It reloads itself with `<meta http-equiv="refresh">`. Read-only
//! unless `status.actions_enabled`: then each dead letter has a replay/purge form (see
//! `actions`).
//!
//! Everything that comes from outside (detector ids, error messages, response bodies,
//! incident titles, the queue path) goes through [`escape`]; the response also carries a
//! `Content-Security-Policy` that forbids scripts, as a second wall.
//!
//! The dead letters are the one thing read from disk (`DeadLetterQueue::list`, read-only
//! and safe beside the worker); the list is cached and read again only when the
//! dead-letter count changed or the cache is [`DEAD_LETTERS_TTL_MS`] old, and only the
//! newest [`DEAD_LETTERS_KEPT`] are kept.

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use escalation_queue::worker::DeadLetterInfo;
use escalation_queue::DeadLetterQueue;

use super::health::{evaluate, Status};
use super::history::{History, MinuteCounts, Totals};
use super::state::ReaderState;
use crate::render::{bytes, count, duration_ms};
use escalation_queue::wal::clock::now_unix_ms;

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";
/// The page reloads itself this often (seconds).
pub const REFRESH_SECONDS: u32 = 10;
/// Dead letters per page.
pub const DEAD_LETTERS_PER_PAGE: usize = 20;
/// Dead letters kept in memory (the newest); older ones are for `dlq list`.
pub const DEAD_LETTERS_KEPT: usize = 500;
/// Incidents shown (the newest).
pub const INCIDENTS_SHOWN: usize = 20;
/// Characters of an error or response excerpt shown.
const EXCERPT_CHARS: usize = 300;
/// The dead-letter cache is read again after this long even if the count is unchanged.
pub const DEAD_LETTERS_TTL_MS: u64 = 5_000;

/// What the page keeps between requests.
#[derive(Debug, Default)]
pub struct PageState {
    /// Per-minute delivery counts.
    pub history: History,
    dead_letters: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    read_at_ms: u64,
    dead_lettered_total: u64,
    /// Newest first, at most [`DEAD_LETTERS_KEPT`].
    entries: Result<Vec<DeadLetterInfo>, String>,
    /// How many the queue held.
    total: usize,
}

impl PageState {
    /// Drops the dead-letter cache (after a replay or purge).
    pub fn forget_dead_letters(&self) {
        *self
            .dead_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The newest dead letters (newest first), how many there are in all, or why they
    /// could not be read.
    fn dead_letters(
        &self,
        queue: Option<&DeadLetterQueue>,
        dead_lettered_total: u64,
        now_ms: u64,
    ) -> (Result<Vec<DeadLetterInfo>, String>, usize) {
        let Some(queue) = queue else {
            return (Ok(Vec::new()), 0);
        };
        let mut cache = self
            .dead_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let fresh = cache.as_ref().is_some_and(|c| {
            c.dead_lettered_total == dead_lettered_total
                && now_ms.saturating_sub(c.read_at_ms) < DEAD_LETTERS_TTL_MS
        });
        if !fresh {
            let (entries, total) = match queue.list() {
                Ok(list) => {
                    let total = list.len();
                    let newest: Vec<DeadLetterInfo> = list
                        .into_iter()
                        .rev()
                        .take(DEAD_LETTERS_KEPT)
                        .map(|e| e.info)
                        .collect();
                    (Ok(newest), total)
                }
                Err(e) => (Err(e.to_string()), 0),
            };
            *cache = Some(Cached {
                read_at_ms: now_ms,
                dead_lettered_total,
                entries,
                total,
            });
        }
        let cached = cache.as_ref().expect("filled above");
        (cached.entries.clone(), cached.total)
    }
}

/// `s` safe inside HTML text and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(EXCERPT_CHARS).collect();
    if s.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    escape(&out)
}

/// The `page` query parameter (1-based), 1 when absent or unreadable.
pub fn requested_page(query: &str) -> usize {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("page="))
        .find_map(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// The page for `query` (the part after `?`).
pub fn render(state: &ReaderState, page: &PageState, query: &str, token: Option<&str>) -> String {
    let now_ms = now_unix_ms();
    let snap = state.snapshot();
    page.history.record(now_ms, Totals::of(&snap.stats));
    let stats = snap.stats.snapshot();
    let health = evaluate(state);
    let mut html = String::with_capacity(16 * 1024);
    let status = match health.status {
        Status::Healthy => "healthy",
        Status::Degraded => "degraded",
        Status::Unhealthy => "unhealthy",
    };
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>escalation-queue: {status}</title>
<style>{STYLE}</style></head>
<body>
<header><h1>escalation-queue</h1>
<p class="where">{dir} · up {uptime} · refreshes every {REFRESH_SECONDS} s</p></header>
<section id="health" class="card {status}"><h2>Health: <span id="health-status">{status}</span></h2>
"#,
        dir = escape(&state.queue_dir().display().to_string()),
        uptime = duration_ms(state.uptime_ms()),
    );
    if health.reasons.is_empty() {
        html.push_str("<p>All checks pass.</p>\n");
    } else {
        html.push_str("<ul id=\"health-reasons\">\n");
        for reason in &health.reasons {
            let _ = writeln!(html, "<li>{}</li>", escape(reason));
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</section>\n");

    // The queue.
    let disk = health.checks.disk.map_or_else(
        || "unknown".to_owned(),
        |d| format!("{} free of {}", bytes(d.free_bytes), bytes(d.total_bytes)),
    );
    let _ = write!(
        html,
        r#"<section id="queue" class="card"><h2>Queue</h2><dl>
<dt>Pending</dt><dd id="pending">{pending}</dd>
<dt>Oldest pending</dt><dd id="oldest-pending">{oldest}</dd>
<dt>Delivered</dt><dd id="delivered">{delivered}</dd>
<dt>Retried</dt><dd id="retried">{retried}</dd>
<dt>Dead-lettered</dt><dd id="dead-lettered">{dead}</dd>
<dt>Expired</dt><dd id="expired">{expired}</dd>
<dt>Disk</dt><dd id="disk">{disk}</dd>
</dl>
<p class="note">Pending counts every lane together; the oldest is the head of the queue.</p></section>
"#,
        pending = stats.queue_depth,
        oldest = match stats.queue_depth {
            0 => "none pending".to_owned(),
            _ => duration_ms(stats.oldest_pending_age_ms),
        },
        delivered = stats.delivered,
        retried = stats.retried,
        dead = stats.dead_lettered_total,
        expired = stats.expired,
        disk = escape(&disk),
    );

    // The last hour.
    chart(&mut html, &page.history.last_hour(now_ms));

    // The breaker and the auth pause.
    let circuit = health.checks.circuit;
    let next = match (stats.wait_cause, stats.wait_until_unix_ms) {
        (Some(cause), Some(until)) => format!(
            "waiting ({}); next attempt in {}",
            cause.replace('_', " "),
            duration_ms(until.saturating_sub(now_ms))
        ),
        _ => "not waiting".to_owned(),
    };
    let _ = write!(
        html,
        r#"<section id="delivery" class="card"><h2>Delivery</h2><dl>
<dt>Circuit breaker</dt><dd id="circuit" class="{circuit}">{circuit_text}</dd>
<dt>Auth</dt><dd id="auth">{auth}</dd>
<dt>Next attempt</dt><dd id="next-attempt">{next}</dd>
{systemic}</dl></section>
"#,
        circuit_text = circuit.replace('_', " "),
        auth = match stats.paused_for_auth {
            true => "paused: the cloud rejects the API token",
            false => "ok",
        },
        next = escape(&next),
        systemic = stats.systemic_fault_status.map_or_else(String::new, |s| format!(
            "<dt>Systemic fault</dt><dd id=\"systemic-fault\">the cloud answers HTTP {s} to every escalation; delivery paused</dd>\n"
        )),
    );

    // Dead letters.
    let (entries, total) =
        page.dead_letters(state.dead_letters(), stats.dead_lettered_total, now_ms);
    dead_letters(
        &mut html,
        entries,
        total,
        requested_page(query),
        now_ms,
        token,
    );

    // Incidents.
    html.push_str("<section id=\"incidents\" class=\"card\"><h2>Latest incidents</h2>\n");
    let incidents = snap.incidents.map(|i| i.recent()).unwrap_or_default();
    if incidents.is_empty() {
        html.push_str("<p>None since the reader started.</p>\n");
    } else {
        html.push_str("<ul class=\"incidents\">\n");
        for incident in incidents.iter().rev().take(INCIDENTS_SHOWN) {
            let severity = format!("{:?}", incident.severity).to_lowercase();
            let _ = write!(
                html,
                "<li class=\"{severity}\"><b>{severity}</b> {title} <span class=\"when\">{ago} ago</span>",
                title = escape(&incident.title),
                ago = duration_ms(now_ms.saturating_sub(incident.at_unix_ms)),
            );
            if let Some(error) = &incident.error {
                let _ = write!(html, "<br><code>{}</code>", excerpt(error));
            }
            html.push_str("</li>\n");
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</section>\n<footer>JSON: <a href=\"/stats\">/stats</a> · <a href=\"/health\">/health</a> · Prometheus: <a href=\"/metrics\">/metrics</a></footer>\n</body></html>\n");
    html
}

fn chart(html: &mut String, minutes: &[MinuteCounts]) {
    const W: usize = 600;
    const H: usize = 120;
    let bar = W / minutes.len().max(1);
    let max = minutes
        .iter()
        .map(|m| m.delivered.saturating_add(m.failed))
        .max()
        .unwrap_or(0)
        .max(1);
    let delivered: u64 = minutes.iter().map(|m| m.delivered).sum();
    let failed: u64 = minutes.iter().map(|m| m.failed).sum();
    let _ = write!(
        html,
        r##"<section id="history" class="card"><h2>Last hour</h2>
<p><span id="hour-delivered">{delivered}</span> delivered, <span id="hour-failed">{failed}</span> failed attempts (retries and dead letters); tallest bar {max} per minute.</p>
<svg viewBox="0 0 {W} {h}" width="100%" role="img" aria-label="deliveries (green) and failures (red) per minute over the last hour">
<line x1="0" y1="{H}" x2="{W}" y2="{H}" stroke="#999"/>
"##,
        h = H + 14,
    );
    for (i, m) in minutes.iter().enumerate() {
        let x = i * bar;
        let dh = (m.delivered as f64 / max as f64 * H as f64).round() as u64;
        let fh = (m.failed as f64 / max as f64 * H as f64).round() as u64;
        let ago = minutes.len() - 1 - i;
        let _ = write!(
            html,
            "<g><title>{ago} min ago: {} delivered, {} failed</title>",
            m.delivered, m.failed
        );
        if dh > 0 {
            let _ = write!(
                html,
                r##"<rect x="{x}" y="{y}" width="{w}" height="{dh}" fill="#2e7d32"/>"##,
                y = H as u64 - dh,
                w = bar.saturating_sub(1),
            );
        }
        if fh > 0 {
            let _ = write!(
                html,
                r##"<rect x="{x}" y="{y}" width="{w}" height="{fh}" fill="#c62828"/>"##,
                y = (H as u64).saturating_sub(dh + fh),
                w = bar.saturating_sub(1),
            );
        }
        html.push_str("</g>\n");
    }
    let _ = write!(
        html,
        r#"<text x="0" y="{y}" font-size="11">−60 min</text><text x="{W}" y="{y}" font-size="11" text-anchor="end">now</text>
</svg></section>
"#,
        y = H + 13,
    );
}

fn dead_letters(
    html: &mut String,
    entries: Result<Vec<DeadLetterInfo>, String>,
    total: usize,
    page: usize,
    now_ms: u64,
    token: Option<&str>,
) {
    let _ = writeln!(
        html,
        "<section id=\"dead-letters\" class=\"card\"><h2>Dead letters (<span id=\"dead-letter-count\">{total}</span>)</h2>"
    );
    let entries = match entries {
        Ok(entries) => entries,
        Err(e) => {
            let _ = writeln!(
                html,
                "<p class=\"error\">cannot read the dead letters: {}</p></section>",
                escape(&e)
            );
            return;
        }
    };
    if entries.is_empty() {
        html.push_str("<p>None.</p></section>\n");
        return;
    }
    let pages = entries.len().div_ceil(DEAD_LETTERS_PER_PAGE);
    let page = page.min(pages);
    html.push_str(match token {
        Some(_) => "<p class=\"note\">Newest first. Replay or purge one below (tick the box first), or all with <code>escalation-queue dlq replay</code> / <code>dlq purge</code>.</p>\n<ul class=\"dead-letters\">\n",
        None => "<p class=\"note\">Newest first. Replay or purge with <code>escalation-queue dlq replay</code> / <code>dlq purge</code>.</p>\n<ul class=\"dead-letters\">\n",
    });
    for info in entries
        .iter()
        .skip((page - 1) * DEAD_LETTERS_PER_PAGE)
        .take(DEAD_LETTERS_PER_PAGE)
    {
        let _ = write!(
            html,
            "<li class=\"dead-letter\"><b>{id}</b> · detector <code class=\"detector\">{detector}</code> · image query <code>{iq}</code><br>\
             cause <b class=\"cause\">{cause}</b> · {attempts} · {ago} ago<br>\
             last error: <code class=\"last-error\">{error}</code>",
            id = escape(info.id.as_str()),
            detector = escape(info.detector_id.as_deref().unwrap_or("?")),
            iq = escape(info.image_query_id.as_deref().unwrap_or("?")),
            cause = escape(&info.cause.to_string()),
            attempts = count(u64::from(info.attempts_total), "attempt"),
            ago = duration_ms(now_ms.saturating_sub(info.dead_lettered_at_unix_ms)),
            error = excerpt(&info.error),
        );
        if !info.response_excerpt.is_empty() {
            let _ = write!(
                html,
                "<br>response: <code class=\"response\">{}</code>",
                excerpt(&info.response_excerpt)
            );
        }
        if let Some(token) = token {
            let _ = write!(
                html,
                "<form method=\"post\" action=\"/actions\" class=\"action\">\
                 <input type=\"hidden\" name=\"token\" value=\"{token}\">\
                 <input type=\"hidden\" name=\"id\" value=\"{id}\">\
                 <label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> I mean it</label> \
                 <button name=\"action\" value=\"replay\">Replay</button> \
                 <button name=\"action\" value=\"purge\">Purge</button></form>",
                token = escape(token),
                id = escape(info.id.as_str()),
            );
        }
        html.push_str("</li>\n");
    }
    html.push_str("</ul>\n");
    if pages > 1 {
        let _ = write!(html, "<nav class=\"pages\">page {page} of {pages}");
        if page > 1 {
            let _ = write!(html, " · <a href=\"/?page={}\">newer</a>", page - 1);
        }
        if page < pages {
            let _ = write!(html, " · <a href=\"/?page={}\">older</a>", page + 1);
        }
        html.push_str("</nav>\n");
    }
    if total > entries.len() {
        let _ = writeln!(
            html,
            "<p class=\"note\">The {} oldest are not shown here; see <code>escalation-queue dlq list</code>.</p>",
            total - entries.len()
        );
    }
    html.push_str("</section>\n");
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:960px;padding:8px;background:#f5f5f5;color:#222}\
h1{font-size:1.4em;margin:4px 0}h2{font-size:1.1em;margin:0 0 6px}\
.where{color:#555;font-size:.9em;margin:0 0 8px;word-break:break-all}\
.card{background:#fff;border-radius:6px;padding:10px 12px;margin:0 0 10px;box-shadow:0 1px 2px #0002}\
.card.healthy{border-left:6px solid #2e7d32}.card.degraded{border-left:6px solid #f9a825}.card.unhealthy{border-left:6px solid #c62828}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}dt{color:#555}dd{margin:0;font-weight:600}\
dd.open,dd.half_open{color:#c62828}\
ul{padding-left:18px;margin:4px 0}li{margin:0 0 6px;word-break:break-word}\
code{font-size:.9em;background:#eee;padding:0 3px;border-radius:3px;white-space:pre-wrap;word-break:break-all}\
.note{color:#555;font-size:.85em}.when{color:#777;font-size:.85em}\
li.critical b,li.high b{color:#c62828}footer{color:#555;font-size:.85em;margin:8px 0}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("a\u{0}b\u{1b}c"), "a\u{fffd}b\u{fffd}c");
    }

    #[test]
    fn the_page_parameter_is_one_based_and_forgiving() {
        assert_eq!(requested_page(""), 1);
        assert_eq!(requested_page("page=3"), 3);
        assert_eq!(requested_page("x=1&page=2"), 2);
        assert_eq!(requested_page("page=0"), 1);
        assert_eq!(requested_page("page=-1"), 1);
        assert_eq!(requested_page("page=99999999999999999999999"), 1);
    }
}
