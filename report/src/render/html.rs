//! The report as one self-contained HTML page, in the look of an operations
//! console: inline CSS and JavaScript, no request to anywhere (its Content
//! Security Policy forbids them), so the file can be mailed, archived or
//! opened from a CI artefact.
//!
//! The page has a section per kind of category (see [`section`]): cluster
//! resources, cluster components, and a workflow's phases; per category the
//! counts normal / warning / abnormal; the filters "all" and "needs
//! attention"; abnormal first; each check that did not pass expandable with
//! its message, what to do and its items' objects. Every text is escaped.

use std::fmt::Write as _;

use crate::findings::{Comparison, Finding};
use crate::model::{Category, CheckResult, Counts, Item, ObjectRef, Outcome, Report};

/// `text` escaped for HTML text and attribute values.
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

/// The sections of the page, in order, and which categories go in each: a
/// category id's first segment.
const SECTIONS: &[(&str, &str, &[&str])] = &[
    // Workloads are resources of the cluster (Deployments, Pods), as
    // the API calls them.
    (
        "resources",
        "Cluster resources",
        &["cluster-resources", "workloads"],
    ),
    ("components", "Cluster components", &["components"]),
    ("phases", "Workflow phases", &[crate::model::PHASES]),
];

/// The section a category is shown in: its id's first segment decides;
/// one the page does not know goes to "Other".
pub fn section(category: &str) -> (&'static str, &'static str) {
    let head = category.split('/').next().unwrap_or_default();
    SECTIONS
        .iter()
        .find(|(_, _, heads)| heads.contains(&head))
        .map_or(("other", "Other"), |(id, title, _)| (id, title))
}

const STYLE: &str = r#"
:root{--bg:#f0f2f5;--card:#fff;--ink:#1f2329;--mute:#646a73;--line:#dee0e3;--ok:#2e9e5b;--warn:#d48806;--bad:#d9363e;--err:#8a2be2;--head:#1d2b3a}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{background:var(--head);color:#fff;padding:16px 28px}
header h1{margin:0;font-size:18px;font-weight:600}
header .meta{color:#b7c0cc;font-size:13px;margin-top:4px}
main{padding:20px 28px;max-width:1280px;margin:0 auto}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
.card{background:var(--card);border-radius:6px;padding:12px 18px;min-width:140px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.card .n{font-size:26px;font-weight:600}
.card .l{color:var(--mute);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.normal .n{color:var(--ok)}.warning .n{color:var(--warn)}.abnormal .n{color:var(--bad)}
.toolbar{display:flex;gap:8px;margin:8px 0 16px}
.toolbar button{border:1px solid var(--line);background:var(--card);padding:6px 14px;border-radius:4px;cursor:pointer;font:inherit}
.toolbar button[aria-pressed=true]{background:var(--head);color:#fff;border-color:var(--head)}
section.kind{margin-bottom:24px}
section.kind>h2{font-size:16px;margin:0 0 10px;padding-left:8px;border-left:4px solid var(--head)}
.category{background:var(--card);border-radius:6px;margin-bottom:12px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.category>h3{display:flex;align-items:center;gap:12px;margin:0;padding:10px 16px;font-size:14px;border-bottom:1px solid var(--line)}
.category>h3 .id{color:var(--mute);font-weight:400;font-family:ui-monospace,monospace;font-size:12px}
.counts{margin-left:auto;display:flex;gap:6px}
.pill{border-radius:10px;padding:0 8px;font-size:12px;font-weight:400;color:#fff}
.counts .pill .n{font-weight:700;color:#fff}
.pill.normal{background:var(--ok)}.pill.warning{background:var(--warn)}.pill.abnormal{background:var(--bad)}
.check{border-bottom:1px solid var(--line);padding:8px 16px}
.check:last-child{border-bottom:0}
.check .row{display:flex;gap:10px;align-items:baseline}
.badge{display:inline-block;min-width:62px;text-align:center;border-radius:3px;font-size:12px;padding:0 6px;color:#fff}
.badge.passed{background:var(--ok)}.badge.warning{background:var(--warn)}.badge.failed{background:var(--bad)}.badge.error{background:var(--err)}
.check .title{font-weight:500}
.check .cid{color:var(--mute);font-family:ui-monospace,monospace;font-size:12px}
.check .msg{display:block;color:var(--mute);margin-left:72px;overflow-wrap:anywhere}
details summary{cursor:pointer;list-style:none}
details summary::-webkit-details-marker{display:none}
details summary .row::before{content:"\25B8";color:var(--mute);width:10px}
details[open] summary .row::before{content:"\25BE"}
.detail{margin:8px 0 4px 72px;padding:10px 12px;background:#f7f8fa;border-radius:4px}
.detail h4{margin:0 0 4px;font-size:12px;color:var(--mute);text-transform:uppercase}
.detail p{margin:0 0 8px;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
th{color:var(--mute);font-weight:500;white-space:nowrap}
td.obj{font-family:ui-monospace,monospace;font-size:12px}
.empty{color:var(--mute);padding:16px}
body.attention .check.passed,body.attention .category.fine,body.attention section.kind.fine{display:none}
"#;

const SCRIPT: &str = r#"
(function () {
  var buttons = document.querySelectorAll('.toolbar button');
  function show(filter) {
    document.body.classList.toggle('attention', filter === 'attention');
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].setAttribute('aria-pressed', String(buttons[i].dataset.filter === filter));
    }
  }
  for (var i = 0; i < buttons.length; i++) {
    buttons[i].addEventListener('click', function (e) { show(e.currentTarget.dataset.filter); });
  }
  show(location.hash === '#attention' ? 'attention' : 'all');
})();
"#;

/// A page: the head with its policy, style and the title.
fn page(title: &str, header: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<link rel=\"icon\" href=\"data:,\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{header}<main>\n{body}</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n",
        esc(title)
    )
}

/// A link when `url` is http(s) (never `javascript:`), else the text.
fn link(url: &str) -> String {
    if url.starts_with("https://") || url.starts_with("http://") {
        format!(
            "<a href=\"{}\" rel=\"noreferrer\">{}</a>",
            esc(url),
            esc(url)
        )
    } else {
        esc(url)
    }
}

fn object(o: &ObjectRef) -> String {
    let name = match &o.namespace {
        Some(ns) => format!("{ns}/{}", o.name),
        None => o.name.clone(),
    };
    if o.api_version.is_empty() {
        format!("{} {name}", o.kind)
    } else {
        format!("{} {} {name}", o.api_version, o.kind)
    }
}

fn items_table(out: &mut String, items: &[Item]) {
    out.push_str("<table class=\"items\"><thead><tr><th>outcome</th><th>object</th><th>node</th><th>message</th><th>source</th></tr></thead><tbody>\n");
    for i in items {
        let mut source = i.source.clone().unwrap_or_default();
        if let Some(r) = &i.replacement {
            let _ = write!(
                source,
                "{}use {r}",
                if source.is_empty() { "" } else { "; " }
            );
        }
        if let Some(r) = &i.removed_in {
            let _ = write!(
                source,
                "{}removed in {r}",
                if source.is_empty() { "" } else { "; " }
            );
        }
        let _ = writeln!(
            out,
            "<tr class=\"item {o}\"><td><span class=\"badge {o}\">{o}</span></td><td class=\"obj\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&i.object.as_ref().map(object).unwrap_or_default()),
            esc(i.node.as_deref().unwrap_or_default()),
            esc(&i.message),
            esc(&source),
            o = i.outcome.as_str(),
        );
    }
    out.push_str("</tbody></table>\n");
}

fn check(out: &mut String, c: &CheckResult) {
    let o = c.outcome.as_str();
    let row = format!(
        "<span class=\"row\"><span class=\"badge {o}\">{o}</span><span class=\"title\">{}</span><span class=\"cid\">{} · severity {}</span></span>\n<span class=\"msg\">{}</span>\n",
        esc(&c.title),
        esc(&c.id),
        esc(&c.severity),
        esc(&c.message)
    );
    let _ = writeln!(
        out,
        "<div class=\"check {o}\" data-check=\"{}\" data-outcome=\"{o}\">",
        esc(&c.id)
    );
    if c.outcome == Outcome::Passed {
        out.push_str(&row);
    } else {
        let _ = write!(
            out,
            "<details><summary>{row}</summary>\n<div class=\"detail\">\n<h4>message</h4><p class=\"message\">{}</p>\n",
            esc(&c.message)
        );
        if !c.remediation.text.is_empty() || c.remediation.url.is_some() {
            let _ = write!(
                out,
                "<h4>what to do</h4><p class=\"remediation\">{}",
                esc(&c.remediation.text)
            );
            if let Some(url) = &c.remediation.url {
                let _ = write!(out, "<br>see {}", link(url));
            }
            out.push_str("</p>\n");
        }
        if !c.items.is_empty() {
            let _ = writeln!(out, "<h4>items ({})</h4>", c.items.len());
            items_table(out, &c.items);
        }
        out.push_str("</div>\n</details>\n");
    }
    out.push_str("</div>\n");
}

fn pills(counts: &Counts) -> String {
    format!(
        "<span class=\"counts\"><span class=\"pill normal\"><span class=\"n\">{}</span> normal</span><span class=\"pill warning\"><span class=\"n\">{}</span> warning</span><span class=\"pill abnormal\"><span class=\"n\">{}</span> abnormal</span></span>",
        counts.passed,
        counts.warning,
        counts.abnormal()
    )
}

fn category(out: &mut String, k: &Category, report: &Report) {
    let fine = k.counts.abnormal() == 0 && k.counts.warning == 0;
    let _ = writeln!(
        out,
        "<div class=\"category{}\" data-category=\"{}\" data-normal=\"{}\" data-warning=\"{}\" data-abnormal=\"{}\">\n<h3>{}<span class=\"id\">{}</span>{}</h3>",
        if fine { " fine" } else { "" },
        esc(&k.id),
        k.counts.passed,
        k.counts.warning,
        k.counts.abnormal(),
        esc(if k.title.is_empty() { &k.id } else { &k.title }),
        esc(&k.id),
        pills(&k.counts)
    );
    // The category's checks, worst first, as the model orders them.
    for id in &k.checks {
        if let Some(c) = report.checks.iter().find(|c| c.id == *id) {
            check(out, c);
        }
    }
    out.push_str("</div>\n");
}

fn cards(out: &mut String, s: &Counts) {
    let _ = writeln!(
        out,
        "<div class=\"cards\"><div class=\"card total\"><div class=\"n\">{}</div><div class=\"l\">checks</div></div><div class=\"card normal\"><div class=\"n\">{}</div><div class=\"l\">normal</div></div><div class=\"card warning\"><div class=\"n\">{}</div><div class=\"l\">warning</div></div><div class=\"card abnormal\"><div class=\"n\">{}</div><div class=\"l\">abnormal</div></div></div>",
        s.passed + s.warning + s.failed + s.error,
        s.passed,
        s.warning,
        s.abnormal()
    );
}

/// What a report is of: its scenario and target, or its workflow.
fn what(report: &Report) -> String {
    if report.scenario.is_empty() {
        format!("workflow {}", report.workflow)
    } else {
        match &report.target {
            Some(t) => format!("{} to {t}", report.scenario),
            None => report.scenario.clone(),
        }
    }
}

/// The report as one HTML page.
pub fn render(report: &Report) -> String {
    let cluster = if report.cluster.server.is_empty() {
        String::from("no cluster read")
    } else {
        format!(
            "cluster {} · {}",
            report.cluster.server, report.cluster.version
        )
    };
    let mut meta = vec![cluster];
    if !report.cluster.cluster_type.is_empty() {
        meta.push(report.cluster.cluster_type.clone());
    }
    meta.push(report.time.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    meta.push(format!("run {}", report.run_state));
    let header = format!(
        "<header><h1>kpilot report <span class=\"run\">{}</span> · {}</h1><div class=\"meta\">{}</div></header>\n",
        esc(&report.run_id),
        esc(&what(report)),
        esc(&meta.join(" · "))
    );
    let mut body = String::new();
    cards(&mut body, &report.summary);
    let attention = report.summary.warning + report.summary.abnormal();
    let _ = writeln!(
        body,
        "<div class=\"toolbar\" role=\"group\" aria-label=\"filter\"><button type=\"button\" data-filter=\"all\" aria-pressed=\"true\">All ({})</button><button type=\"button\" data-filter=\"attention\" aria-pressed=\"false\">Needs attention ({attention})</button></div>",
        report.checks.len()
    );
    if report.categories.is_empty() {
        body.push_str("<p class=\"empty\">No check applied.</p>\n");
    }
    let mut kinds: Vec<(&str, &str)> = SECTIONS.iter().map(|(id, t, _)| (*id, *t)).collect();
    kinds.push(("other", "Other"));
    for (id, title) in kinds {
        let these: Vec<&Category> = report
            .categories
            .iter()
            .filter(|k| section(&k.id).0 == id)
            .collect();
        if these.is_empty() {
            continue;
        }
        let fine = these
            .iter()
            .all(|k| k.counts.abnormal() == 0 && k.counts.warning == 0);
        let _ = writeln!(
            body,
            "<section class=\"kind{}\" data-section=\"{id}\"><h2>{}</h2>",
            if fine { " fine" } else { "" },
            esc(title)
        );
        for k in these {
            category(&mut body, k, report);
        }
        body.push_str("</section>\n");
    }
    page(
        &format!("kpilot report {} · {}", report.run_id, what(report)),
        &header,
        &body,
    )
}

fn finding_rows(out: &mut String, findings: &[Finding]) {
    if findings.is_empty() {
        out.push_str("<p class=\"empty\">none</p>\n");
        return;
    }
    out.push_str("<table><thead><tr><th>outcome</th><th>check</th><th>category</th><th>object</th><th>message</th><th>what to do</th></tr></thead><tbody>\n");
    for f in findings {
        let mut about = f.object.as_ref().map(object).unwrap_or_default();
        if let Some(node) = &f.node {
            if about.is_empty() {
                about = format!("node {node}");
            }
        }
        let _ = writeln!(
            out,
            "<tr class=\"finding\" data-key=\"{}\"><td><span class=\"badge {o}\">{o}</span></td><td>{}<br><span class=\"cid\">{}</span></td><td class=\"obj\">{}</td><td class=\"obj\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.key),
            esc(&f.title),
            esc(&f.check),
            esc(&f.category),
            esc(&about),
            esc(&f.message),
            esc(&f.remediation),
            o = f.outcome.as_str(),
        );
    }
    out.push_str("</tbody></table>\n");
}

/// How two reports' findings compare, as one HTML page: new, resolved,
/// persisting.
pub fn comparison(before: &Report, after: &Report, c: &Comparison) -> String {
    let header = format!(
        "<header><h1>kpilot report diff</h1><div class=\"meta\">{} → {}</div></header>\n",
        esc(&format!("{} ({})", before.run_id, what(before))),
        esc(&format!("{} ({})", after.run_id, what(after)))
    );
    let mut body = format!(
        "<div class=\"cards\"><div class=\"card abnormal\"><div class=\"n\">{}</div><div class=\"l\">new</div></div><div class=\"card normal\"><div class=\"n\">{}</div><div class=\"l\">resolved</div></div><div class=\"card warning\"><div class=\"n\">{}</div><div class=\"l\">persisting</div></div></div>\n",
        c.new.len(),
        c.resolved.len(),
        c.persisting.len()
    );
    for (id, title, findings) in [
        ("new", "New", &c.new),
        ("resolved", "Resolved", &c.resolved),
        ("persisting", "Persisting", &c.persisting),
    ] {
        let _ = writeln!(
            body,
            "<section class=\"kind\" data-section=\"{id}\"><h2>{title} ({})</h2><div class=\"category\">",
            findings.len()
        );
        finding_rows(&mut body, findings);
        body.push_str("</div></section>\n");
    }
    page(
        &format!("kpilot report diff {} {}", before.run_id, after.run_id),
        &header,
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_escaped_and_only_web_links_are_links() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(link("javascript:alert(1)"), "javascript:alert(1)");
        assert!(
            link("https://k8s.io/?a=1&b=\"").contains("href=\"https://k8s.io/?a=1&amp;b=&quot;\"")
        );
        assert_eq!(section("workloads/apis").1, "Cluster resources");
        assert_eq!(section("components/etcd").1, "Cluster components");
        assert_eq!(section("phases/upgrade").1, "Workflow phases");
        assert_eq!(section("mine").1, "Other");
    }
}
