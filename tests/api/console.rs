//! The web console (`GET /console`) in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (chromedriver) against the local stack. Each step leaves a screenshot under
//! `target/console-screenshots/<test>/` for a person to look at.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use lambent_local::repo_root;
use serde_json::{Value, json};

use crate::app::{PASSWORD, TestApp};

/// One browser: chromedriver in its own process group (Chromium joins it), killed with it.
struct Browser {
    client: Client,
    driver: std::process::Child,
    profile: PathBuf,
    shots: PathBuf,
    step: u32,
    /// The origins the page may call: the API's and the media bucket's (presigned URLs).
    allowed: Vec<String>,
}

impl Browser {
    /// A browser with a desktop window of `width` × `height`, or with `phone`, a phone's screen of
    /// that size (Chromium's mobile emulation: headless windows are 500 px wide at least).
    async fn open(app: &TestApp, test: &str, (width, height): (u32, u32), phone: bool) -> Self {
        use std::os::unix::process::CommandExt as _;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver_path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let driver = std::process::Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{driver_path}: {e} (make system-libs installs chromium-driver)")
            });
        let profile =
            std::env::temp_dir().join(format!("lambent-chromium-{}", uuid::Uuid::new_v4()));
        let shots = repo_root().join("target/console-screenshots").join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("the screenshot folder");
        let webdriver = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        crate::app::wait_until("chromedriver answers", || async {
            http.get(format!("{webdriver}/status")).send().await.is_ok()
        })
        .await;
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"), "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.display()), "--lang=en-US",
                    "--no-first-run", "--disable-extensions", "--disable-sync",
                    "--disable-background-networking", "--disable-component-update",
                ],
            },
        });
        let mut capabilities = capabilities;
        if phone {
            capabilities["goog:chromeOptions"]["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 1, "touch": true},
            });
        }
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .expect("a Chromium session");
        let media = url::Url::parse(&app.endpoint).expect("the emulator's URL");
        let api = url::Url::parse(&app.base).expect("the API's URL");
        Self {
            client,
            driver,
            profile,
            shots,
            step: 0,
            allowed: vec![
                api.origin().ascii_serialization(),
                media.origin().ascii_serialization(),
            ],
        }
    }

    async fn console(&self, app: &TestApp) {
        self.client
            .goto(&app.url("/console"))
            .await
            .expect("the console loads");
        self.until(
            "the console is ready",
            "return document.body.dataset.ready === 'true'",
        )
        .await;
    }

    /// Runs `script` (a function body) and returns what it returns.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Waits until `script` returns true (60 s at most), then checks the page made no error.
    async fn until(&self, what: &str, script: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            // An error the page shows ends the wait at once.
            let alert = self
                .js("const a = document.querySelector('#alert'); return a.hidden ? null : a.textContent")
                .await;
            if let Value::String(alert) = alert {
                // The alert may have come between the two reads, and be what is awaited.
                if self.js(script).await == Value::Bool(true) {
                    return;
                }
                panic!("waiting until {what}, the page showed an error: {alert}");
            }
            if std::time::Instant::now() > deadline {
                let alert = self
                    .js("return document.querySelector('#alert').textContent")
                    .await;
                panic!("timed out waiting until {what} (the page says: {alert})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn fill(&self, selector: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(selector))
            .await
            .expect(selector);
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    async fn click(&self, selector: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .expect(selector)
            .click()
            .await
            .expect("click");
    }

    /// Types `keys` at whatever has the focus, as a keyboard would (WebDriver key actions).
    async fn press(&self, keys: &str) {
        use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
        let mut actions = KeyActions::new("keyboard".into());
        for value in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value })
                .then(KeyAction::Up { value });
        }
        self.client.perform_actions(actions).await.expect("keys");
    }

    async fn focused(&self) -> Value {
        self.js("return document.activeElement.id || document.activeElement.className || document.activeElement.outerHTML.slice(0, 80)")
            .await
    }

    async fn text(&self, selector: &str) -> String {
        self.client
            .find(Locator::Css(selector))
            .await
            .expect(selector)
            .text()
            .await
            .expect("text")
    }

    /// Saves a screenshot of this step.
    async fn shot(&mut self, name: &str) -> PathBuf {
        self.step += 1;
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = self.shots.join(format!("{:02}-{name}.png", self.step));
        std::fs::write(&path, png).expect("the screenshot is saved");
        path
    }

    /// Every URL the page has fetched or loaded that is on neither the API nor the media bucket,
    /// and every request its policy blocked.
    async fn foreign_requests(&self) -> Vec<String> {
        let seen = self
            .js(
                "return performance.getEntriesByType('resource').map(e => e.name)
                .concat([location.href])",
            )
            .await;
        let blocked = self
            .js("return JSON.parse(document.body.dataset.blocked || '[]')")
            .await;
        let mut foreign: Vec<String> = blocked
            .as_array()
            .expect("a list")
            .iter()
            .map(|u| format!("blocked: {u}"))
            .collect();
        for url in seen.as_array().expect("a list") {
            let url = url.as_str().expect("a URL");
            let origin = url::Url::parse(url)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default();
            if !self.allowed.contains(&origin)
                && !url.starts_with("blob:")
                && !url.starts_with("data:")
            {
                foreign.push(url.to_owned());
            }
        }
        foreign
    }

    async fn assert_only_the_api(&self) {
        let foreign = self.foreign_requests().await;
        assert!(
            foreign.is_empty(),
            "the page called other hosts: {foreign:?}"
        );
    }

    async fn sign_up(&self, email: &str, username: &str) {
        self.fill("#register-email", email).await;
        self.fill("#register-username", username).await;
        self.fill("#register-password", PASSWORD).await;
        self.click("#register-form button[type=submit]").await;
        self.until(
            "the account shows",
            "return !document.querySelector('#view-account').hidden
                && document.querySelector('#balance').textContent !== '–'",
        )
        .await;
    }

    async fn sign_in(&self, login: &str) {
        self.fill("#signin-email", login).await;
        self.fill("#signin-password", PASSWORD).await;
        self.click("#signin-form button[type=submit]").await;
        self.signed_in().await;
    }

    /// Waits until a sign-in has brought up the account view.
    async fn signed_in(&self) {
        self.until(
            "the account shows",
            "return !document.querySelector('#view-account').hidden",
        )
        .await;
    }

    async fn view(&self, name: &str) {
        self.js(&format!("location.hash = '#{name}'")).await;
        self.until(
            &format!("the {name} view shows"),
            &format!("return !document.querySelector('#view-{name}').hidden"),
        )
        .await;
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
        // Drop ends chromedriver and Chromium and removes the profile.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test still ends its browser (a panicking test never reaches `close`).
        kill_group(&mut self.driver);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn kill_group(driver: &mut std::process::Child) {
    if driver.try_wait().ok().flatten().is_none() {
        let _ = std::process::Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", driver.id())])
            .status();
        let _ = driver.wait();
    }
}

fn fixture(name: &str) -> String {
    // chromedriver takes canonical paths only.
    repo_root()
        .join("tests/fixtures/images")
        .join(name)
        .canonicalize()
        .expect("the fixture")
        .display()
        .to_string()
}

#[tokio::test]
async fn sign_up_upload_upscale_and_compare_in_a_browser() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::open(&app, "upscale", (1000, 1400), false).await;
    browser.console(&app).await;
    browser.shot("sign-in").await;
    browser.sign_up("cora@example.com", "cora").await;
    // The ledger the page shows sums to the balance it shows.
    let balance = browser.text("#balance").await;
    let sum = browser
        .js("return document.querySelector('#ledger').dataset.sum")
        .await;
    assert_eq!(sum.as_str(), Some(balance.as_str()));
    browser.shot("account").await;

    browser.view("upscale").await;
    browser
        .client
        .find(Locator::Css("#upscale-model"))
        .await
        .expect("the model list")
        .select_by_value("realesr-animevideov3-x2")
        .await
        .expect("a model");
    browser
        .client
        .find(Locator::Css("#upscale-file"))
        .await
        .expect("the file field")
        .send_keys(&fixture("scene.png"))
        .await
        .expect("a file");
    browser.click("#upscale-form button[type=submit]").await;
    browser
        .until(
            "both photos are loaded",
            "return document.querySelector('#compare').dataset.ready === 'true'",
        )
        .await;
    // Both images came from storage, the upscaled one twice the original's size, and both are
    // drawn in one box: the same scale.
    let sizes = browser
        .js("const a = document.querySelector('#compare-after'), b = document.querySelector('#compare-before');
             const ra = a.getBoundingClientRect(), rb = b.getBoundingClientRect();
             return [a.naturalWidth, a.naturalHeight, b.naturalWidth, b.naturalHeight,
                     ra.width === rb.width && ra.height === rb.height && ra.width > 300]")
        .await;
    assert_eq!(sizes, json!([128, 96, 64, 48, true]));
    let facts = browser.text("#upscale-facts").await;
    for fact in [
        "realesr-animevideov3-x2",
        "64 × 48",
        "128 × 96",
        "Time taken",
    ] {
        assert!(facts.contains(fact), "{fact} in {facts}");
    }
    // The slider moves with the keyboard, and the original's share follows it.
    let slider = browser
        .client
        .find(Locator::Css("#compare-position"))
        .await
        .expect("the slider");
    slider
        .send_keys("\u{E012}\u{E012}\u{E012}")
        .await
        .expect("left arrows");
    let clip = browser
        .js("return [document.querySelector('#compare-position').value,
                     document.querySelector('#compare-before').style.clipPath]")
        .await;
    assert_eq!(clip, json!(["47", "inset(0px 53% 0px 0px)"]));
    browser
        .js(
            "const s = document.querySelector('#compare-position'); s.value = 60;
             s.dispatchEvent(new Event('input')); s.blur(); window.scrollTo(0, 0)",
        )
        .await;
    browser.shot("upscale").await;

    // The photo's job is in the jobs view, completed, and the credits it cost are in the ledger.
    browser.view("jobs").await;
    browser
        .until(
            "the upscale job is listed",
            "return [...document.querySelectorAll('#jobs tbody tr')].some(r => r.dataset.status === 'COMPLETED')",
        )
        .await;
    browser.shot("jobs").await;
    browser.assert_only_the_api().await;
    browser.close().await;
}

#[tokio::test]
async fn a_running_job_moves_live_and_is_canceled_from_the_jobs_view() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("dana").await;
    let mut browser = Browser::open(&app, "cancel", (1100, 800), false).await;
    browser.console(&app).await;
    // Signed in with the keyboard alone: the skip link first, then the form, Enter to send.
    const TAB: &str = "\u{E004}";
    const ENTER: &str = "\u{E007}";
    browser.press(TAB).await;
    assert_eq!(browser.focused().await, "skip");
    browser.press(TAB).await;
    assert_eq!(browser.focused().await, "signin-email");
    browser.press(&format!("dana{TAB}{PASSWORD}{ENTER}")).await;
    browser.signed_in().await;
    browser.view("jobs").await;
    let job = app
        .submit_id(&token, &json!({"kind": "sleep", "input": {"ms": 60000}}))
        .await;
    // Submitted elsewhere (another client): the view picks it up and follows it live.
    browser
        .until(
            "the job shows as running",
            &format!("return document.querySelector('#jobs tr[data-id=\"{job}\"]')?.dataset.status === 'IN_PROGRESS'"),
        )
        .await;
    browser.shot("running").await;
    browser
        .click(&format!("#jobs tr[data-id=\"{job}\"] button"))
        .await;
    browser
        .until(
            "the job shows as canceled",
            &format!("return document.querySelector('#jobs tr[data-id=\"{job}\"]')?.dataset.status === 'CANCELED'"),
        )
        .await;
    browser.shot("canceled").await;
    let status = app.get_json(&format!("/v1/jobs/{job}"), &token).await;
    assert_eq!(status["status"], "CANCELED");
    // Its credit came back: the account view's ledger shows the refund and still sums up.
    browser.view("account").await;
    browser
        .until(
            "the ledger shows the refund",
            "return document.querySelector('#ledger').dataset.sum === document.querySelector('#balance').textContent
                && document.querySelector('#ledger tbody').textContent.includes('refund')",
        )
        .await;
    browser.assert_only_the_api().await;
    browser.close().await;
}

#[tokio::test]
async fn a_402_is_explained_with_the_apis_own_words() {
    let app = TestApp::spawn_with(&[("STARTING_CREDITS", "0")]).await;
    let mut browser = Browser::open(&app, "payment-required", (1100, 800), false).await;
    browser.console(&app).await;
    browser.sign_up("erin@example.com", "erin").await;
    browser.view("generate").await;
    browser
        .fill("#generate-prompt", "a lighthouse at dusk")
        .await;
    browser.click("#generate-form button[type=submit]").await;
    browser
        .until(
            "the error shows",
            "return !document.querySelector('#alert').hidden",
        )
        .await;
    browser.shot("402").await;
    let shown = browser.text("#alert").await;
    let status = browser
        .js("return document.querySelector('#alert').dataset.status")
        .await;
    assert_eq!(status, "402");
    // The same request from outside gets the same problem: the page shows its detail.
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": "erin", "password": PASSWORD}),
        )
        .await;
    let token = login.json::<Value>().await.expect("tokens")["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .bearer_auth(&token)
        .json(
            &json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev",
            "task": "text_to_image", "prompt": "a lighthouse at dusk"}}),
        )
        .send()
        .await
        .expect("a job");
    let problem = crate::app::problem(response, 402, "insufficient_credits").await;
    let detail = problem["detail"].as_str().expect("a detail");
    assert!(shown.contains(detail), "{detail} in {shown}");
    // Nothing was charged or queued.
    assert_eq!(app.credits(&token).await, (0, 0));
    browser.assert_only_the_api().await;
    browser.close().await;
}

#[tokio::test]
async fn the_console_fits_a_phone_labels_every_control_and_calls_no_other_host() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::open(&app, "phone", (390, 844), true).await;
    let page = app
        .client
        .get(app.url("/console"))
        .send()
        .await
        .expect("the page");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("a policy")
        .to_owned();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
        "{policy}"
    );
    browser.console(&app).await;
    let unlabelled =
        "return [...document.querySelectorAll('input, select, textarea, button, progress')]
        .filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
        .map(e => e.id || e.outerHTML)";
    let overflow =
        "return window.innerWidth === 390 && document.documentElement.scrollWidth <= 390";
    assert_eq!(browser.js(unlabelled).await, json!([]));
    assert_eq!(browser.js(overflow).await, json!(true));
    browser.shot("sign-in").await;
    browser.sign_up("fay@example.com", "fay").await;
    for view in [
        "account", "upscale", "bestcut", "generate", "jobs", "webhooks",
    ] {
        browser.view(view).await;
        assert_eq!(browser.js(unlabelled).await, json!([]), "{view}");
        assert_eq!(
            browser.js(overflow).await,
            json!(true),
            "{view} fits 390 px"
        );
    }
    // A webhook endpoint added, its secret shown once, its deliveries opened.
    browser
        .fill("#webhook-url", "https://example.com/lambent")
        .await;
    browser.click("#webhook-form button[type=submit]").await;
    browser
        .until(
            "the endpoint is listed",
            "return document.querySelector('#endpoints tbody').textContent.includes('https://example.com/lambent')
                && document.querySelector('#webhook-secret').textContent.includes('whsec_')",
        )
        .await;
    browser.click("#endpoints tbody button").await;
    browser
        .until(
            "its deliveries show",
            "return !document.querySelector('#deliveries-box').hidden",
        )
        .await;
    browser.shot("webhooks").await;
    browser.assert_only_the_api().await;
    // The check fails when the page calls elsewhere: a request to another host is refused by
    // the page's policy and reported.
    browser
        .js("fetch('http://203.0.113.9/collect').catch(() => {})")
        .await;
    browser
        .until(
            "the refused request is reported",
            "return (document.body.dataset.blocked || '').includes('203.0.113.9')",
        )
        .await;
    let foreign = browser.foreign_requests().await;
    assert!(
        foreign.iter().any(|u| u.contains("203.0.113.9")),
        "{foreign:?}"
    );
    browser.close().await;
}

#[tokio::test]
async fn an_admin_grants_credits_and_resolves_a_report_in_the_console() {
    let app = TestApp::spawn().await;
    let (_, gus) = app.user("gus").await;
    let admin_token = app.admin("hana").await;
    let (reporter, _) = app.user("ivy").await;
    let report = app
        .client
        .post(app.url("/v1/reports"))
        .bearer_auth(&reporter)
        .json(&json!({"target_type": "user", "target_id": gus, "reason": "spam"}))
        .send()
        .await
        .expect("a report");
    assert_eq!(report.status(), 201, "a report");
    let mut browser = Browser::open(&app, "admin", (1100, 900), false).await;
    browser.console(&app).await;
    browser.sign_in("hana").await;
    browser.view("admin").await;
    browser
        .until(
            "the report and the users are listed",
            &format!(
                "return document.querySelector('#reports tbody').textContent.includes('{gus}')
                && document.querySelector('#users tbody').textContent.includes('{gus}')"
            ),
        )
        .await;
    browser.fill("#grant-user", &gus).await;
    browser.fill("#grant-amount", "25").await;
    browser.fill("#grant-note", "welcome back").await;
    browser.click("#grant-form button[type=submit]").await;
    browser
        .until(
            "the grant is confirmed",
            "return document.querySelector('#notice').textContent.startsWith('Granted 25 credits')",
        )
        .await;
    browser
        .click("#reports tbody button[aria-label^='dismiss']")
        .await;
    browser
        .until(
            "the report is resolved",
            "return !document.querySelector('#reports tbody button')",
        )
        .await;
    browser.shot("admin").await;
    let case = app
        .get_json(&format!("/v1/admin/reports/user.{gus}"), &admin_token)
        .await;
    assert_ne!(case["case"]["status"], "open", "{case}");
    browser.assert_only_the_api().await;
    browser.close().await;
}

#[tokio::test]
async fn google_sign_in_from_the_console_comes_back_signed_in() {
    let (app, _fakes) = crate::oidc::with_providers(false).await;
    let mut browser = Browser::open(&app, "google", (1100, 800), false).await;
    browser.console(&app).await;
    browser
        .until(
            "the provider buttons show",
            "return !document.querySelector('#oauth').hidden
                && [...document.querySelectorAll('#oauth-buttons button')].map(b => b.textContent).join() === 'Google,Kakao,Naver'",
        )
        .await;
    browser.shot("providers").await;
    // To the provider (the fake signs its user in at once), back through the callback to the
    // console with a code, which the page redeems with its PKCE verifier.
    browser.click("#oauth-buttons .oauth-google").await;
    browser
        .until(
            "signed in with Google",
            "return document.body.dataset.ready === 'true' && !document.querySelector('#view-account').hidden
                && document.querySelector('#who-name').textContent !== ''
                && document.querySelector('#profile').textContent.includes('(verified)')",
        )
        .await;
    let state = browser
        .js("return [location.search, sessionStorage.length]")
        .await;
    // The code is gone from the address bar, and so is the verifier from sessionStorage.
    assert_eq!(state, json!(["", 0]));
    browser.shot("signed-in").await;
    browser.assert_only_the_api().await;
    browser.close().await;
}

#[tokio::test]
async fn best_cut_and_a_generation_show_their_results() {
    let (app, _fakes) = crate::generation::start(&[], true).await;
    let mut browser = Browser::open(&app, "results", (1100, 900), false).await;
    browser.console(&app).await;
    browser.sign_up("gail@example.com", "gail").await;
    // The same scene, blurred: best-cut must pick the sharp one.
    let blurred =
        std::env::temp_dir().join(format!("lambent-blurred-{}.png", uuid::Uuid::new_v4()));
    image::open(fixture("scene.png"))
        .expect("the fixture")
        .blur(2.0)
        .save(&blurred)
        .expect("the blurred copy");
    browser.view("bestcut").await;
    browser
        .client
        .find(Locator::Css("#bestcut-files"))
        .await
        .expect("the files field")
        .send_keys(&format!("{}\n{}", fixture("scene.png"), blurred.display()))
        .await
        .expect("two files");
    browser.click("#bestcut-form button[type=submit]").await;
    browser
        .until(
            "the winner shows",
            "const img = document.querySelector('#bestcut-winner img');
             return Boolean(document.querySelector('#bestcut-result li.winner') && img && img.complete && img.naturalWidth > 0)",
        )
        .await;
    let scores = browser
        .js("return [...document.querySelectorAll('#bestcut-result li')].map(li => li.textContent).filter(t => t.includes('sharpness'))")
        .await;
    let scores = scores.as_array().expect("a list");
    assert_eq!(scores.len(), 2, "{scores:?}");
    let first = scores[0].as_str().expect("text");
    assert!(
        first.starts_with("scene.png") && first.contains("(the winner)"),
        "the sharp one first: {scores:?}"
    );
    let _ = std::fs::remove_file(&blurred);
    browser.shot("bestcut").await;

    browser.view("generate").await;
    browser
        .fill("#generate-prompt", "a lighthouse at dusk")
        .await;
    browser.click("#generate-form button[type=submit]").await;
    browser
        .until(
            "the generated image shows",
            "const img = document.querySelector('#generate-result img');
             return Boolean(img && img.complete && img.naturalWidth > 0)",
        )
        .await;
    browser.shot("generated").await;
    browser.assert_only_the_api().await;
    browser.close().await;
}
