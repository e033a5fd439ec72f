//! The sinks `blinkchamber worker` delivers to (`events.sinks`): the structured log and
//! HTTP webhooks chosen by event type.
//!
//! A webhook gets the event as CloudEvents structured JSON (`POST`,
//! `Content-Type: application/cloudevents+json`); with a `signingKey` the request carries
//! `BlinkChamber-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`,
//! the format ZITADEL uses, so a receiver checks it the same way ([`super::verify`]). Any
//! `2xx` answer is a delivery; anything else (another status, a timeout, a refused
//! connection) fails the event, which is retried and finally dead-lettered with the
//! reason. An event matching several webhooks is delivered to all of them, and a retry
//! goes to all of them again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use reqwest::Url;

use super::envelope::Event;
use super::routing::Pattern;
use super::worker::{Handler, LogSink};
use crate::config::{SinksConfig, WatchedSecret};

/// How often a signing key file is checked for a new version.
const KEY_RECHECK: Duration = Duration::from_secs(1);

/// Header carrying a webhook request's signature.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "BlinkChamber-Signature";

/// Parses a webhook URL: absolute, `http` or `https`, with a host.
///
/// # Errors
/// What is wrong with it.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(format!(
            "`{url}`: expected an http:// or https:// URL with a host"
        ));
    }
    Ok(parsed)
}

/// One configured webhook.
struct Webhook {
    pattern: Pattern,
    url: Url,
    /// The URL without credentials or query, safe for logs and dead-letter reasons.
    shown: String,
    /// Read once, re-read when its file changes: never on the delivery path.
    key: Option<WatchedSecret>,
    timeout: Duration,
}

/// Every configured sink, as one [`Handler`].
pub struct Sinks {
    log: bool,
    webhooks: Vec<Webhook>,
    client: reqwest::Client,
}

impl Sinks {
    /// The sinks of `events.sinks` (validated at load).
    ///
    /// # Errors
    /// A pattern or URL that does not parse, or an HTTP client that cannot be built.
    pub fn from_config(cfg: &SinksConfig) -> Result<Self, String> {
        let webhooks = cfg
            .webhooks
            .iter()
            .map(|w| {
                let url = parse_url(&w.url)?;
                let mut shown = url.clone();
                let _ = shown.set_username("");
                let _ = shown.set_password(None);
                shown.set_query(None);
                Ok(Webhook {
                    pattern: Pattern::new(&w.pattern).map_err(|e| e.to_string())?,
                    url,
                    shown: shown.to_string(),
                    key: w
                        .signing_key
                        .clone()
                        .map(|k| WatchedSecret::new(k, KEY_RECHECK))
                        .transpose()
                        .map_err(|e| format!("{}: signing key: {e}", shown))?,
                    timeout: w.timeout,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let client = crate::http_client::builder()
            .user_agent(concat!("blinkchamber/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Self {
            log: cfg.log,
            webhooks,
            client,
        })
    }

    async fn deliver(&self, hook: &Webhook, body: &[u8]) -> Result<(), String> {
        let mut request = self
            .client
            .post(hook.url.clone())
            .timeout(hook.timeout)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/cloudevents+json",
            )
            .body(body.to_vec());
        if let Some(watched) = &hook.key {
            let key = watched.get();
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            request = request.header(
                WEBHOOK_SIGNATURE_HEADER,
                super::sign(key.expose().as_bytes(), t, body),
            );
        }
        let started = std::time::Instant::now();
        let outcome = request.send().await;
        metrics::histogram!("blinkchamber_events_webhook_seconds")
            .record(started.elapsed().as_secs_f64());
        let failure = match outcome {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => format!("answered {}", answer.status()),
            Err(e) if e.is_timeout() => format!("no answer within {:?}", hook.timeout),
            Err(e) if e.is_connect() => "connection failed".to_owned(),
            Err(e) => format!("request failed: {e}"),
        };
        metrics::counter!("blinkchamber_events_webhook_failures_total").increment(1);
        Err(format!("webhook {}: {failure}", hook.shown))
    }
}

impl Handler for Sinks {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.log {
                LogSink.handle(event).await?;
            }
            let hooks: Vec<&Webhook> = self
                .webhooks
                .iter()
                .filter(|w| w.pattern.matches(&event.ty))
                .collect();
            if hooks.is_empty() {
                return Ok(());
            }
            let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
            // Concurrently: one slow webhook costs its own timeout, not the sum.
            let outcomes =
                futures_util::future::join_all(hooks.into_iter().map(|h| self.deliver(h, &body)))
                    .await;
            let failures: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("; "))
            }
        })
    }
}
