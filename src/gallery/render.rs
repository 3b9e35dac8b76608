//! The gallery's HTML: pure functions from rows to page text. Every piece of text from users or
//! the API is escaped here and every link is a percent-encoded relative path, so the pages
//! work from a file share on any system or behind a web server. No page holds a script.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::row::Row;

/// The stylesheet, at `outbox/.remixd-gallery/style.css` (inlined in the quarantine's page).
pub(crate) const CSS: &str = include_str!("style.css");

/// The folder of the stylesheet under the outbox.
pub(crate) const ASSETS_DIR: &str = ".remixd-gallery";

/// Text safe inside HTML elements and quoted attributes.
#[must_use]
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative link from bytes: every byte but unreserved characters and `/` percent-encoded.
#[must_use]
pub(crate) fn pct(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The file of page `page` in a listing's folder.
pub(crate) fn page_name(page: usize) -> String {
    if page <= 1 {
        "index.html".to_owned()
    } else {
        format!("index-{page}.html")
    }
}

/// `HH:MM` of a moment, UTC.
pub(crate) fn hhmm(at: SystemTime) -> String {
    hhmmss(at).get(..5).unwrap_or_default().to_owned()
}

/// `HH:MM:SS` of a moment, UTC.
pub(crate) fn hhmmss(at: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(at).to_string();
    text.get(11..19).unwrap_or_default().to_owned()
}

/// `2024-05-01 10:02 UTC` from an RFC 3339 time.
fn shown_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => rfc3339.to_owned(),
    }
}

/// What a page needs to know about where it stands.
#[allow(clippy::struct_field_names)] // `page.page` is the page's number: clearer than any synonym
pub(crate) struct Page<'a> {
    /// `../` per folder between the page and its root (outbox or quarantine).
    pub up: String,
    pub title: String,
    pub page: usize,
    pub pages: usize,
    /// Jobs in the whole listing.
    pub total: usize,
    /// The "now" box (outbox's first page only).
    pub now: Option<String>,
    /// The subfolders for the filter list, and the one shown (first pages only).
    pub filter: Option<(&'a [String], Option<&'a str>)>,
    /// The stylesheet inline (quarantine) rather than linked.
    pub inline_css: bool,
    /// Text above the rows.
    pub intro: Option<String>,
}

/// A whole page around already-rendered rows.
pub(crate) fn page(p: &Page<'_>, rows: &[String]) -> String {
    let mut out = String::with_capacity(2048 + rows.iter().map(String::len).sum::<usize>());
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str("<meta name=\"color-scheme\" content=\"light dark\">");
    out.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'none'; object-src 'none'\">");
    if p.now.is_some() {
        out.push_str("<meta http-equiv=\"refresh\" content=\"30\">");
    }
    let _ = write!(out, "<title>{}</title>", esc(&p.title));
    if p.inline_css {
        let _ = write!(out, "<style>{CSS}</style>");
    } else {
        let _ = write!(
            out,
            "<link rel=\"stylesheet\" href=\"{}{ASSETS_DIR}/style.css\">",
            p.up
        );
    }
    let _ = write!(out, "</head><body><header><h1>{}</h1>", esc(&p.title));
    if let Some((subdirs, current)) = p.filter {
        filter(&mut out, &p.up, subdirs, current);
    }
    if let Some(now) = &p.now {
        out.push_str(now);
    }
    if let Some(intro) = &p.intro {
        out.push_str(intro);
    }
    out.push_str("</header><main>");
    nav(&mut out, p);
    if rows.is_empty() {
        out.push_str("<p class=\"empty\">No jobs here yet.</p>");
    }
    for row in rows {
        out.push_str(row);
    }
    nav(&mut out, p);
    out.push_str("</main><footer><p>Written by remixd. Each job's folder holds its original, outputs and metadata.json.</p></footer></body></html>\n");
    out
}

fn filter(out: &mut String, up: &str, subdirs: &[String], current: Option<&str>) {
    if subdirs.is_empty() {
        return;
    }
    out.push_str("<nav class=\"filter\" aria-label=\"subfolders\"><span>Folders:</span> ");
    let mark = |on: bool| if on { " aria-current=\"page\"" } else { "" };
    let _ = write!(
        out,
        "<a href=\"{up}index.html\"{}>all</a>",
        mark(current.is_none())
    );
    for dir in subdirs {
        let _ = write!(
            out,
            " <a href=\"{up}{}/index.html\"{}>{}</a>",
            pct(dir.as_bytes()),
            mark(current == Some(dir.as_str())),
            esc(dir)
        );
    }
    out.push_str("</nav>");
}

fn nav(out: &mut String, p: &Page<'_>) {
    if p.pages <= 1 {
        let _ = write!(out, "<p class=\"count\">{} job(s).</p>", p.total);
        return;
    }
    out.push_str("<nav class=\"pages\" aria-label=\"pages\">");
    if p.page > 1 {
        let _ = write!(
            out,
            "<a rel=\"prev\" href=\"{}\">← newer</a> ",
            page_name(p.page - 1)
        );
    }
    let _ = write!(
        out,
        "<span>page {} of {} ({} jobs)</span>",
        p.page, p.pages, p.total
    );
    if p.page < p.pages {
        let _ = write!(
            out,
            " <a rel=\"next\" href=\"{}\">older →</a>",
            page_name(p.page + 1)
        );
    }
    out.push_str("</nav>");
}

/// A picture linking to its file, or a labelled empty slot.
fn figure(
    out: &mut String,
    href: Option<&str>,
    size: Option<(u32, u32)>,
    caption: &str,
    empty: &str,
) {
    match href {
        Some(href) => {
            let dims = size.map_or_else(String::new, |(w, h)| {
                format!(" width=\"{w}\" height=\"{h}\"")
            });
            let _ = write!(
                out,
                "<figure><a href=\"{href}\"><img loading=\"lazy\" src=\"{href}\"{dims} alt=\"{}\"></a><figcaption>{}</figcaption></figure>",
                esc(caption),
                esc(caption)
            );
        }
        None => {
            let _ = write!(
                out,
                "<figure class=\"withheld\"><div class=\"slot\">{}</div><figcaption>{}</figcaption></figure>",
                esc(empty),
                esc(caption)
            );
        }
    }
}

/// One published job. `here` is false when its folder is no longer in the outbox.
/// What was asked and what it cost, below a row's pictures.
fn facts(out: &mut String, row: &Row, operation: &str) {
    fact(out, "Prompt", row.prompt.as_deref().unwrap_or("(none)"));
    fact(out, "Operation", operation);
    if !row.fields.is_empty() {
        let sent: Vec<String> = row
            .fields
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        fact(out, "Sent", &sent.join("; "));
    }
    fact(out, "Finished", &shown_time(&row.at));
    let cost = match (row.cost_usd, row.provider.as_deref()) {
        (Some(usd), _) => format!("${usd:.2}"),
        (None, Some("dry-run")) => "none (dry run)".to_owned(),
        (None, _) => "not recorded".to_owned(),
    };
    fact(out, "Cost", &cost);
}

pub(crate) fn outbox_row(row: &Row, up: &str, here: bool) -> String {
    let mut out = String::with_capacity(1500);
    let _ = write!(
        out,
        "<article class=\"job\" id=\"job-{}\">",
        esc(&row.job_id)
    );
    if !here {
        let _ = write!(
            out,
            "<p class=\"gone\"><span class=\"file\">{}</span>: this job's folder ({}) is no longer in the outbox.</p></article>",
            esc(&row.file),
            esc(&row.dir)
        );
        return out;
    }
    let dir = format!("{up}{}", pct(row.dir.as_bytes()));
    title(&mut out, row);
    let operation = row.operation.as_deref().unwrap_or("remix");
    out.push_str("<div class=\"pics\">");
    let original = format!("{dir}/{}", pct(row.file_bytes()));
    figure(
        &mut out,
        Some(&original),
        row.size,
        &format!("original: {}", row.file),
        "",
    );
    for (n, slot) in row.outputs.iter().enumerate() {
        let href = slot
            .file
            .as_ref()
            .map(|f| format!("{dir}/{}", pct(f.as_bytes())));
        let caption = format!("{operation} {}", n + 1);
        figure(
            &mut out,
            href.as_deref(),
            slot.size,
            &caption,
            "withheld for safety",
        );
    }
    out.push_str("</div><dl>");
    facts(&mut out, row, operation);
    let _ = write!(
        out,
        "</dl><p class=\"links\"><a href=\"{dir}/\">job folder</a> · <a href=\"{dir}/metadata.json\">metadata.json</a></p></article>"
    );
    out
}

/// One quarantined job; `root` is the quarantine's path on the server, for the requeue command.
pub(crate) fn quarantine_row(row: &Row, root: &str) -> String {
    let mut out = String::with_capacity(1500);
    let _ = write!(
        out,
        "<article class=\"job quarantined\" id=\"job-{}\">",
        esc(&row.job_id)
    );
    let dir = pct(row.dir.as_bytes());
    title(&mut out, row);
    out.push_str("<div class=\"pics\">");
    let original = row.size.map(|_| format!("{dir}/{}", pct(row.file_bytes())));
    figure(
        &mut out,
        original.as_deref(),
        row.size,
        &format!("original: {}", row.file),
        "not an image",
    );
    out.push_str("</div><dl>");
    fact(&mut out, "File", &row.file);
    fact(
        &mut out,
        "Reason",
        row.reason.as_deref().unwrap_or("unknown"),
    );
    fact(&mut out, "What to do", row.message.as_deref().unwrap_or(""));
    fact(&mut out, "When", &shown_time(&row.at));
    let command = format!(
        "remixd requeue '{}/{}'",
        root.replace('\'', "'\\''"),
        row.dir.replace('\'', "'\\''")
    );
    let _ = write!(
        out,
        "<dt>Requeue</dt><dd><code>{}</code></dd></dl><p class=\"links\"><a href=\"{dir}/\">job folder</a> · <a href=\"{dir}/error.json\">error.json</a></p></article>",
        esc(&command)
    );
    out
}

/// The input's path in the inbox, as the person who dropped it knows it.
fn title(out: &mut String, row: &Row) {
    let path = if row.subdir.is_empty() {
        row.file.clone()
    } else {
        format!("{}/{}", row.subdir, row.file)
    };
    let _ = write!(out, "<p class=\"title\">{}</p>", esc(&path));
}

fn fact(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(name), esc(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_links_are_percent_encoded() {
        assert_eq!(
            esc("\"><img src=x onerror=alert(1)>&'"),
            "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&amp;&#39;"
        );
        assert_eq!(pct(b"a b/<b>.png"), "a%20b/%3Cb%3E.png");
        assert_eq!(pct(b"caf\xC3\xA9\xFF%.png"), "caf%C3%A9%FF%25.png");
        assert_eq!(page_name(1), "index.html");
        assert_eq!(page_name(3), "index-3.html");
        assert_eq!(
            shown_time("2024-05-01T10:02:03.123Z"),
            "2024-05-01 10:02 UTC"
        );
    }
}
