//! The web approval page in real headless Chromium (Debian's `chromium`,
//! driven over WebDriver by fantoccini through `chromedriver`): a held `rm`
//! appears on the page, Approve completes it, Deny on another gives EPERM,
//! a wrong token is refused, and the page fits a phone. Screenshots go to
//! target/test-artifacts/. Needs: a delete backend that holds.
use std::time::{Duration, Instant};

use agent_guard_tests::{browser::*, *};
use fantoccini::{Client, Locator};
use serde_json::json;

const TOKEN: &str = "alice-web-token-7f3c9a1e5b2d";

async fn sign_in(c: &Client, token: &str) {
    let input = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("#token"))
        .await
        .expect("token field");
    input.clear().await.expect("clear");
    input.send_keys(token).await.expect("type token");
    c.find(Locator::Css("#login-form button[type=submit]"))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("click sign in");
}

/// Waits until `css` matches an element whose text contains `needle`.
async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            let text = e.text().await.unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {css} containing {needle:?} on the page"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a hold card says its chosen scope grants.
async fn grants_line(card: &fantoccini::elements::Element) -> String {
    card.find(Locator::Css(".grants"))
        .await
        .expect("grants line")
        .text()
        .await
        .expect("grants text")
}

#[test]
fn on_call_decides_from_a_phone_browser() {
    if tier() == "vm" {
        // The page is not kernel-facing; the host tier runs it, and Chromium
        // under TCG emulation would eat the VM tier's time budget.
        skip(
            "on_call_decides_from_a_phone_browser",
            "browser test runs on the host tier only",
        );
        return;
    }
    let tokens = SecretFile::new("web-tokens", &format!("# on-call\nalice:{TOKEN}\n"));
    let port = free_port();
    let cg = TestCgroups::new("web-page");
    let scratch = Scratch::new("web-page");
    let extra = format!(
        "[web]\nlisten = \"127.0.0.1:{port}\"\ntokens_file = \"{}\"\n",
        tokens.s()
    );
    let daemon = Daemon::start(&cleaner_policy(&cg, &scratch.s("prod"), &extra), cg);
    let url = format!("http://127.0.0.1:{port}/");

    // The page is served with a CSP that allows no inline script.
    let (status, headers, html) = http_get(&url, None);
    assert_eq!(status, 200);
    let csp = headers
        .iter()
        .find(|(k, _)| k == "content-security-policy")
        .map(|(_, v)| v.clone())
        .expect("a Content-Security-Policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script src=").count(),
        "inline script in the page"
    );
    for handler in [" onclick=", " onload=", " onsubmit=", " onchange="] {
        assert!(
            !html.contains(handler),
            "inline handler{handler} in the page"
        );
    }
    // The API refuses a wrong token, and says so in the event stream.
    let (status, _, _) = http_get(&format!("{url}api/state"), Some("not-a-real-token-000000"));
    assert_eq!(status, 401);

    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let driver = Driver::start();
    let c = rt.block_on(browser(&driver));
    rt.block_on(c.goto(&url)).expect("open the page");

    // A wrong token is refused.
    rt.block_on(sign_in(&c, "wrong-token-123456789"));
    rt.block_on(wait_text(&c, "#login-error", "Token refused"));
    daemon.wait_event("control.refused", |e| {
        e["control"]["reason"] == "unknown web token" && e["control"]["by"]["via"] == "web"
    });

    // The right one lets alice in.
    rt.block_on(sign_in(&c, TOKEN));
    rt.block_on(wait_text(&c, "#who", "alice"));

    // A held rm appears on the page; Approve completes it.
    let file = scratch.file("prod/approve-me.db");
    let path = file.display().to_string();
    let (child, id) = held_delete(&daemon, &["rm", &path], &path);
    let card = format!("[data-hold=\"{id}\"]");
    let text = rt.block_on(wait_text(&c, &card, &path));
    assert!(
        text.contains("cleaner") && text.contains("ops@example.com"),
        "{text}"
    );
    rt.block_on(async {
        let card = c.find(Locator::Css(&card)).await.expect("card");
        card.find(Locator::Css(".reason"))
            .await
            .expect("reason field")
            .send_keys("checked from my phone")
            .await
            .expect("type reason");
        card.find(Locator::Css("button.approve"))
            .await
            .expect("approve button")
            .click()
            .await
            .expect("click approve");
    });
    let out = child.wait_with_output().expect("rm");
    assert!(
        out.status.success(),
        "approved rm completes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists());
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["decision"], "approved");
    assert_eq!(
        ev["hold"]["by"]["user"], "alice",
        "the approver is the token's user"
    );
    assert_eq!(ev["hold"]["reason"], "checked from my phone");
    rt.block_on(wait_text(
        &c,
        &format!("#decisions li[data-hold=\"{id}\"]"),
        "approved",
    ));

    // Another one: Deny gives the agent EPERM.
    let file = scratch.file("prod/deny-me.db");
    let path = file.display().to_string();
    let (child, id) = held_delete(&daemon, &["rm", &path], &path);
    let card = format!("[data-hold=\"{id}\"]");
    rt.block_on(wait_text(&c, &card, &path));
    // The page fits the phone: nothing wider than the viewport.
    let fits = rt
        .block_on(c.execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        ))
        .expect("measure");
    assert_eq!(fits, json!(true), "the page scrolls sideways on a phone");
    artifact(
        "web-approval-pending.png",
        &rt.block_on(c.screenshot()).expect("screenshot"),
    );
    rt.block_on(async {
        c.find(Locator::Css(&format!("{card} button.deny")))
            .await
            .expect("deny button")
            .click()
            .await
            .expect("click deny");
    });
    let out = child.wait_with_output().expect("rm");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "denied rm fails with EPERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(file.exists());
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["decision"], "denied");
    assert_eq!(ev["hold"]["by"]["user"], "alice");
    rt.block_on(wait_text(
        &c,
        &format!("#decisions li[data-hold=\"{id}\"]"),
        "denied",
    ));
    // A scoped approval made on the page becomes a grant, listed there and
    // revocable there.
    // The card carries what on-call decides on: the command line, what
    // the agent did just before, and exactly what the scope grants, which
    // on-call narrows before approving.
    let file = scratch.file("prod/tree/one.db");
    let path = file.display().to_string();
    let (child, id) = held_delete(&daemon, &["rm", "-f", &path], &path);
    let card = format!("[data-hold=\"{id}\"]");
    rt.block_on(wait_text(
        &c,
        &format!("{card} .cmd"),
        &format!("$ rm -f {path}"),
    ));
    rt.block_on(wait_text(&c, &format!("{card} .recent"), "file.unlink"));
    let narrowed = scratch.s("prod/tree");
    rt.block_on(async {
        let card = c.find(Locator::Css(&card)).await.expect("card");
        card.find(Locator::Css(".scope"))
            .await
            .expect("scope")
            .select_by_value("subtree")
            .await
            .expect("choose subtree");
        card.find(Locator::Css(".duration"))
            .await
            .expect("duration")
            .select_by_value("600")
            .await
            .expect("choose 10 minutes");
        let grants = grants_line(&card).await;
        assert_eq!(
            grants,
            format!("Grants deletes under {} for 10 minutes", scratch.s("prod")),
            "the ask rule's subtree, before any click"
        );
        let field = card
            .find(Locator::Css(".path"))
            .await
            .expect("subtree field");
        field.clear().await.expect("clear the subtree");
        field
            .send_keys(&narrowed)
            .await
            .expect("narrow the subtree");
        let grants = grants_line(&card).await;
        assert_eq!(
            grants,
            format!("Grants deletes under {narrowed} for 10 minutes")
        );
        card.find(Locator::Css("button.approve"))
            .await
            .expect("approve button")
            .click()
            .await
            .expect("click approve");
    });
    assert!(child.wait_with_output().expect("rm").status.success());
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["decision"], "approved");
    assert_ne!(ev["hold"]["scope"], "once", "{ev}");
    let grant = rt.block_on(wait_text(&c, "[data-grant]", "deletes under"));
    assert!(
        grant.contains(&narrowed) && grant.contains("alice"),
        "the narrowed subtree is what was granted: {grant}"
    );
    rt.block_on(async {
        c.find(Locator::Css("[data-grant] button.revoke"))
            .await
            .expect("revoke button")
            .click()
            .await
            .expect("click revoke");
        let deadline = Instant::now() + PATIENCE;
        while c.find(Locator::Css("[data-grant]")).await.is_ok() {
            assert!(Instant::now() < deadline, "the revoked grant stays listed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let out = daemon
        .cli()
        .args(["grants", "--json"])
        .output()
        .expect("grants");
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("subtree"),
        "revoked from the page, gone for the CLI too: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    artifact(
        "web-approval-decided.png",
        &rt.block_on(c.screenshot()).expect("screenshot"),
    );
    rt.block_on(c.close()).expect("close the browser");
}
