//! OpenTelemetry (feature `otel`): spans exported over OTLP/gRPC, and W3C trace context
//! continued from events and HTTP requests.
//!
//! Export is configured the OpenTelemetry way, by the environment: it is on when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, e.g.
//! `http://otel-collector:4317`; the service is `OTEL_SERVICE_NAME`, else `blinkchamber`;
//! `OTEL_RESOURCE_ATTRIBUTES` and the exporter's other `OTEL_EXPORTER_OTLP_*` variables
//! apply as the SDK defines them. What is exported is what the log filter lets through:
//! the `request` span of each HTTP request (debug level, target `blinkchamber::request`)
//! and the `event` span of each traced event (see the events reference), with the spans
//! the handlers open inside them.
//!
//! Without the feature, [`continue_trace`] does nothing and nothing is exported.

/// Makes the trace of `traceparent` (a W3C `traceparent` value) the parent of `span`, so
/// an exporter shows the span inside the caller's trace.
#[cfg(feature = "otel")]
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
    let _ = span.set_parent(parent);
}

/// Does nothing: built without the `otel` feature.
#[cfg(not(feature = "otel"))]
pub fn continue_trace(_span: &tracing::Span, _traceparent: &str) {}

/// The OTLP export layer and its provider (flush it with `shutdown` before exit), when
/// the environment asks for export. Must be called inside a Tokio runtime (the gRPC
/// client runs on it).
///
/// # Errors
/// The exporter cannot be built from the environment's settings.
#[cfg(feature = "otel")]
pub fn otlp_layer<S>() -> Result<
    Option<(
        impl tracing_subscriber::Layer<S>,
        opentelemetry_sdk::trace::SdkTracerProvider,
    )>,
    opentelemetry_otlp::ExporterBuildError,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use opentelemetry::trace::TracerProvider as _;
    let wanted = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if !wanted {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("blinkchamber");
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("blinkchamber"));
    Ok(Some((layer, provider)))
}

#[cfg(all(test, feature = "otel"))]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::prelude::*;

    #[test]
    fn a_span_joins_the_trace_its_traceparent_names() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("event");
            super::continue_trace(
                &span,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
            let context = span.context();
            let own = context.span().span_context().clone();
            assert_eq!(
                own.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_ne!(
                own.span_id().to_string(),
                "00f067aa0ba902b7",
                "a child, not the parent"
            );

            // Without one, a span starts a trace of its own.
            let other = tracing::info_span!("event").context();
            assert_ne!(
                other.span().span_context().trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
        });
    }
}
