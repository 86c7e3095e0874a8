//! A headless Chromium (Debian's `chromium` package; nothing is downloaded)
//! driven over the DevTools protocol, with every console error, uncaught
//! exception and failed load the page reports collected.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Log::LogEntryLevel;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::protocol::cdp::Runtime::ConsoleAPICalledEventTypeOption;
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// The system browser, or a loud failure: these tests cannot pass
/// without a real browser.
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("FAIRGRID_CHROMIUM") {
        return PathBuf::from(path);
    }
    for path in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if std::path::Path::new(path).exists() {
            return PathBuf::from(path);
        }
    }
    panic!(
        "the dashboard tests drive a real browser and found none: install Debian's \
         chromium (apt-get install -y chromium; .ci/run does) or set FAIRGRID_CHROMIUM \
         to a Chromium or Chrome binary"
    );
}

pub struct Page {
    // Kept alive for the tab; closing it ends the browser process.
    _browser: Browser,
    pub tab: Arc<Tab>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Page {
    pub fn open() -> Page {
        let options = LaunchOptions::default_builder()
            .path(Some(chromium()))
            .headless(true)
            // As root (CI), Chromium refuses to start with its sandbox.
            .sandbox(false)
            // Tall, so that screenshots hold most of a page.
            .window_size(Some((1280, 2200)))
            .idle_browser_timeout(Duration::from_secs(300))
            .build()
            .expect("browser options");
        let browser = Browser::new(options).expect("starting headless Chromium");
        let tab = browser.new_tab().expect("a browser tab");
        tab.set_default_timeout(Duration::from_secs(30));
        tab.enable_log().expect("Log domain");
        tab.enable_runtime().expect("Runtime domain");
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&errors);
        tab.add_event_listener(Arc::new(move |event: &Event| {
            let error = match event {
                Event::LogEntryAdded(e) if e.params.entry.level == LogEntryLevel::Error => {
                    Some(format!(
                        "{} ({})",
                        e.params.entry.text,
                        e.params.entry.url.clone().unwrap_or_default()
                    ))
                }
                Event::RuntimeExceptionThrown(e) => Some(format!(
                    "uncaught: {} {:?}",
                    e.params.exception_details.text,
                    e.params
                        .exception_details
                        .exception
                        .as_ref()
                        .and_then(|x| x.description.clone())
                )),
                Event::RuntimeConsoleAPICalled(e)
                    if e.params.Type == ConsoleAPICalledEventTypeOption::Error =>
                {
                    Some(format!(
                        "console.error: {:?}",
                        e.params
                            .args
                            .iter()
                            .map(|a| a.value.clone())
                            .collect::<Vec<_>>()
                    ))
                }
                _ => None,
            };
            if let Some(error) = error {
                sink.lock().unwrap().push(error);
            }
        }))
        .expect("event listener");
        Page {
            _browser: browser,
            tab,
            errors,
        }
    }

    /// Loads `url` as a fresh document (through about:blank, so that a URL
    /// differing only in its fragment is loaded too, as a new tab would).
    pub fn goto(&self, url: &str) {
        self.tab.navigate_to("about:blank").expect("navigate");
        self.wait_for(
            "about:blank",
            "location.href === 'about:blank'",
            Duration::from_secs(30),
        );
        self.tab.navigate_to(url).expect("navigate");
        self.wait_for(
            &format!("{url} to load"),
            "location.href !== 'about:blank' && document.readyState === 'complete'",
            Duration::from_secs(30),
        );
    }

    /// Follows an in-page link (the hash router), as a click would.
    pub fn route(&self, hash: &str) {
        self.eval(&format!("location.hash = {}; ''", json(hash)));
    }

    /// Evaluates `js` and returns its value as a string ("" for none).
    pub fn eval(&self, js: &str) -> String {
        self.try_eval(js)
            .unwrap_or_else(|e| panic!("evaluating {js}: {e}"))
    }

    fn try_eval(&self, js: &str) -> Result<String, String> {
        let result = self.tab.evaluate(js, true).map_err(|e| e.to_string())?;
        Ok(match result.value {
            Some(serde_json::Value::String(s)) => s,
            Some(v) => v.to_string(),
            None => String::new(),
        })
    }

    /// Waits until `js` evaluates to true, at most `limit`.
    pub fn wait_for(&self, what: &str, js: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            // A document being replaced cannot evaluate: that is "not yet".
            if self.try_eval(&format!("Boolean({js})")).as_deref() == Ok("true") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for {what}; page errors: {:?}",
                self.errors()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the page named `page` has drawn its data.
    pub fn wait_ready(&self, page: &str) {
        self.wait_for(
            &format!("page {page} to be ready"),
            &format!(
                "document.getElementById('main').dataset.ready === {}",
                json(page)
            ),
            Duration::from_secs(30),
        );
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *self.errors.lock().unwrap())
    }

    /// A full-page PNG, written to `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        let png = self
            .tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .expect("screenshot");
        std::fs::write(path, png).expect("writing the screenshot");
    }
}

pub fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}
