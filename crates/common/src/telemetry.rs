//! Logs, metrics and (behind the `otlp` feature) trace export.
//!
//! Logs go through `tracing` with an env-style filter, as readable text or as JSON lines.
//! Metrics live in one Prometheus registry per process that any service mounts at `/metrics`.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::{Metric, Registry};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How a service logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `tracing` filter directives, e.g. `info,k8shell_ssh_proxy=debug`. `RUST_LOG` wins.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// `pretty` for people, `json` for log collectors.
    #[serde(default)]
    pub format: LogFormat,
    /// OTLP/gRPC collector endpoint (`http://collector:4317`); needs the `otlp` feature.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            filter: default_filter(),
            format: LogFormat::default(),
            otlp_endpoint: None,
        }
    }
}

fn default_filter() -> String {
    "info".to_owned()
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Errors while setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {message}")]
    Filter { filter: String, message: String },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
    #[error(
        "OTLP export to {endpoint} is configured, but this binary was built without the `otlp` feature"
    )]
    OtlpNotBuilt { endpoint: String },
    #[cfg(feature = "otlp")]
    #[error("OTLP exporter: {0}")]
    Otlp(String),
}

/// Keeps exporters alive; flushes them when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("OTLP exporter did not shut down cleanly: {e}");
        }
    }
}

/// Parses `tracing` filter directives, with an error that shows the text.
pub fn parse_filter(text: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(text).map_err(|e| TelemetryError::Filter {
        filter: text.to_owned(),
        message: e.to_string(),
    })
}

/// Installs the global subscriber for `service`. `RUST_LOG`, when set, replaces the filter.
pub fn init(service: &str, config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter_text = std::env::var("RUST_LOG").unwrap_or_else(|_| config.filter.clone());
    let filter = parse_filter(&filter_text)?;
    let fmt_layer = match config.format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt_layer);
    let guard = TelemetryGuard::default();
    match &config.otlp_endpoint {
        None => registry
            .try_init()
            .map_err(|_| TelemetryError::AlreadyInstalled)?,
        #[cfg(not(feature = "otlp"))]
        Some(endpoint) => {
            return Err(TelemetryError::OtlpNotBuilt {
                endpoint: endpoint.clone(),
            });
        }
        #[cfg(feature = "otlp")]
        Some(endpoint) => {
            use opentelemetry::trace::TracerProvider as _;
            use opentelemetry_otlp::WithExportConfig as _;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(format!("k8shell-{service}"))
                .build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer(format!("k8shell-{service}"));
            registry
                .with(tracing_opentelemetry::layer().with_tracer(tracer))
                .try_init()
                .map_err(|_| TelemetryError::AlreadyInstalled)?;
            let mut guard = guard;
            guard.provider = Some(provider);
            tracing::info!(service, endpoint, "exporting traces over OTLP");
            return Ok(guard);
        }
    }
    tracing::debug!(service, filter = %filter_text, "telemetry initialised");
    Ok(guard)
}

use tracing_subscriber::Layer as _;

/// The process's Prometheus registry. Clones share it.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

/// The OpenMetrics text content type that Prometheus scrapes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Metrics {
    /// A registry whose metric names start with `k8shell_<service>_`.
    pub fn new(service: &str) -> Self {
        let prefix = format!("k8shell_{}", service.replace('-', "_"));
        Self {
            registry: Arc::new(Mutex::new(Registry::with_prefix(prefix))),
        }
    }

    /// Registers a metric; keep a clone of `metric` to update it.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// The current OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = encode(&mut out, &registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// A router serving `GET /metrics`, to merge into a service's HTTP router.
    pub fn router(&self) -> Router {
        let metrics = self.clone();
        Router::new().route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], metrics.encode()).into_response()
                }
            }),
        )
    }
}
